{{/*
The objects' name: "<release>-operator", or just "guestha-operator" for a release named
guestha, so that `helm install guestha` makes the objects `kubectl apply -k
manifests/install` makes (tests/unit/test_chart_equivalence.py compares the two).
*/}}
{{- define "guestha.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "guestha.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "guestha.componentLabels" -}}
{{ include "guestha.labels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "guestha.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "guestha.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "guestha.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: the ServiceAccount to run as, when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
