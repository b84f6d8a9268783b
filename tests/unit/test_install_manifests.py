"""The kustomize install (manifests/install, manifests/base) and the Helm chart, as rendered
by the real kubectl and helm: what the operator's pods get (security, probes, resources,
spread), the objects around them (Services, PodDisruptionBudget, NetworkPolicy), the CRDs
taken from crds/ itself, and the chart making the same objects as the kustomize install.

The apiserver's verdict on the same objects is tests/controlplane/test_packaging.py's.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from guestha.protocol.constants import AGENT_PORT
from kits import rendering
from kits.rendering import REPO, Obj, only

pytestmark = pytest.mark.unit

OPERATOR_LABELS = {"app.kubernetes.io/name": "guestha",
                   "app.kubernetes.io/component": "operator"}


def crd_files() -> dict[str, Obj]:
    return {d["metadata"]["name"]: d for f in sorted((REPO / "crds").glob("*.yaml"))
            for d in rendering.objects(f.read_text())}


@pytest.fixture(scope="module")
def install() -> list[Obj]:
    return rendering.kustomize("install")


@pytest.fixture(scope="module")
def pod(install: list[Obj]) -> Obj:
    deployment = only(install, "Deployment")
    spec: Obj = deployment["spec"]["template"]["spec"]
    return spec


def test_the_install_carries_the_crds_files_unchanged(install: list[Obj]) -> None:
    """crds/ is the one copy: kustomize reads it through crds/Kustomization, so a CRD file
    that the list misses (or a copy edited by hand anywhere) fails here."""
    rendered = {o["metadata"]["name"]: o for o in install
                if o["kind"] == "CustomResourceDefinition"}
    assert rendered == crd_files()
    listed = yaml.safe_load((REPO / "crds" / "Kustomization").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in (REPO / "crds").glob("*.yaml"))


def test_the_install_has_each_part_once(install: list[Obj]) -> None:
    kinds = sorted(o["kind"] for o in install)
    assert kinds == sorted([
        "Namespace", *["CustomResourceDefinition"] * len(crd_files()), "ServiceAccount",
        "ClusterRole", "ClusterRoleBinding", "Role", "Role", "RoleBinding", "RoleBinding",
        "Deployment", "Service", "Service", "PodDisruptionBudget", "NetworkPolicy"])
    namespaced = [o for o in install if o["kind"] not in
                  ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"guestha-system",
                                                                "kube-node-lease"}
    assert [o["metadata"]["name"] for o in namespaced
            if o["metadata"]["namespace"] == "kube-node-lease"] == [
        "guestha-operator-node-leases", "guestha-operator-node-leases"]


def test_the_operator_runs_two_replicas_on_different_nodes(install: list[Obj], pod: Obj) -> None:
    deployment = only(install, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["selector"]["matchLabels"] == OPERATOR_LABELS
    [spread] = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == OPERATOR_LABELS
    [term] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == OPERATOR_LABELS
    pdb = only(install, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": OPERATOR_LABELS}}


def test_the_operator_pod_is_locked_down(pod: Obj) -> None:
    assert pod["securityContext"] == {"runAsNonRoot": True,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    [container] = pod["containers"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    # The one writable place: /tmp, in memory (the webhook's serving certificate).
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp",
                               "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]


def test_the_operator_is_probed_and_bounded(pod: Obj) -> None:
    [container] = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    health = f"--liveness=http://0.0.0.0:{ports['health']}/healthz"
    assert health in container["command"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert f"--metrics-listen=0.0.0.0:{ports['metrics']}" in container["command"]
    assert f"--webhook-listen=0.0.0.0:{ports['webhook']}" in container["command"]
    # 1,500 members: 333 MB at rest, a 491 MB peak measured (docs/architecture.md).
    resources = container["resources"]
    assert _mebibytes(resources["requests"]["memory"]) >= 333 * 10**6 / 2**20
    assert _mebibytes(resources["limits"]["memory"]) >= 491 * 10**6 / 2**20 * 1.25
    assert "cpu" not in resources["limits"]  # throttling would delay failovers


def _mebibytes(quantity: str) -> float:
    assert quantity.endswith("Mi"), quantity
    return float(quantity[:-2])


def test_the_services_reach_the_pods_named_ports(install: list[Obj], pod: Obj) -> None:
    [container] = pod["containers"]
    named = {p["name"] for p in container["ports"]}
    labels = only(install, "Deployment")["spec"]["template"]["metadata"]["labels"]
    webhook = only(install, "Service", "guestha-operator-webhook")
    metrics = only(install, "Service", "guestha-operator-metrics")
    for service in (webhook, metrics):
        assert service["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= named
    assert "--webhook-service=guestha-system/guestha-operator-webhook:443" in container["command"]
    assert webhook["spec"]["ports"] == [{"name": "webhook", "port": 443, "targetPort": "webhook"}]
    monitor = only(rendering.kustomize("monitoring"), "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        metrics["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_the_network_policy_lets_in_only_the_webhook_and_metrics(install: list[Obj]) -> None:
    policy = only(install, "NetworkPolicy")["spec"]
    assert policy["podSelector"] == {"matchLabels": OPERATOR_LABELS}
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = policy["ingress"]
    assert ingress == {"ports": [{"protocol": "TCP", "port": "webhook"},
                                 {"protocol": "TCP", "port": "metrics"}]}
    egress = [p for rule in policy["egress"] for p in rule["ports"]]
    assert all("to" not in rule for rule in policy["egress"])
    # the API (Service port, apiserver port) and the agents' channel: nothing else
    assert sorted(p["port"] for p in egress) == sorted([443, 6443, AGENT_PORT])
    values = yaml.safe_load((rendering.CHART / "values.yaml").read_text())
    assert values["networkPolicy"]["agentPorts"] == [AGENT_PORT]


def _normalized(found: list[Obj]) -> dict[tuple[str, str, str], Any]:
    return rendering.by_key(rendering.without_helm_labels(found))


@pytest.mark.parametrize("monitoring", [False, True], ids=["install", "with-monitoring"])
def test_the_chart_makes_the_kustomize_install(monitoring: bool) -> None:
    """`helm template guestha -n guestha-system --include-crds` with default values equals
    `kubectl kustomize manifests/install` (and manifests/monitoring when the chart's
    monitoring is on), object for object, field for field, except: the Namespace (Helm's
    `--create-namespace` makes it) and Helm's labels (HELM_LABELS: release, chart and
    version labels, and the release label in selectors)."""
    args = ["--include-crds"]
    kustomized = [o for o in rendering.kustomize("install") if o["kind"] != "Namespace"]
    if monitoring:
        args += ["--set", "monitoring.serviceMonitor.enabled=true",
                 "--set", "monitoring.prometheusRule.enabled=true"]
        kustomized += rendering.kustomize("monitoring")
    charted = rendering.chart(*args)
    for obj in charted:  # Helm's labels really are there, and only taken out here
        if obj["kind"] != "CustomResourceDefinition":
            assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    want, got = _normalized(kustomized), _normalized(charted)
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k] == want[k], k


def test_the_chart_leaves_monitoring_out_by_default() -> None:
    kinds = {o["kind"] for o in rendering.chart()}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}


def test_the_chart_lints_strictly() -> None:
    result = rendering.helm("lint", "--strict", str(rendering.CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_the_chart_and_the_manifests_grant_the_same_rules() -> None:
    """The chart keeps the ClusterRole's rules in files/clusterrole-rules.yaml (with their
    reasons); they must stay what manifests/base/rbac.yaml grants, with no wildcard."""
    charted, kustomized = rendering.chart(), rendering.kustomize("install")
    assert only(charted, "ClusterRole")["rules"] == only(kustomized, "ClusterRole")["rules"]
    for obj in kustomized:
        for rule in obj.get("rules") or ():
            assert "*" not in [*rule.get("verbs", ()), *rule.get("resources", ()),
                               *rule.get("apiGroups", ())], rule


def _schema_properties(schema: Obj, path: str = "") -> dict[str, Obj]:
    found = {}
    for name, sub in (schema.get("properties") or {}).items():
        found[f"{path}{name}"] = sub
        found.update(_schema_properties(sub, f"{path}{name}."))
    return found


def _value_paths(values: Any, path: str = "") -> set[str]:
    if not isinstance(values, dict) or not values:
        return {path[:-1]} if path else set()
    paths = {path[:-1]} if path else set()
    for name, sub in values.items():
        paths |= _value_paths(sub, f"{path}{name}.")
    return paths


def test_every_value_is_in_the_schema_with_a_description() -> None:
    import json
    schema = json.loads((rendering.CHART / "values.schema.json").read_text())
    properties = _schema_properties(schema)
    values = yaml.safe_load((rendering.CHART / "values.yaml").read_text())
    # free-form maps (resources, labels, ...) are checked as a whole, not key by key
    free = {p for p, s in properties.items() if s.get("type") == "object"
            and "properties" not in s}
    paths = {p for p in _value_paths(values)
             if not any(p.startswith(f + ".") for f in free)}
    assert paths <= set(properties), paths - set(properties)
    undocumented = [p for p in properties if not properties[p].get("description")
                    and "properties" not in properties[p]]
    assert undocumented == []


@pytest.mark.parametrize(("value", "field"), [
    ("replicaCount=two", "/replicaCount"),
    ("replicaCont=2", "replicaCont"),                      # a misspelt key
    ("ports.metrics=70000", "/ports/metrics"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    # null takes a value out in helm: a NetworkPolicy rule with no ports would allow all
    ("networkPolicy.agentPorts=null", "missing property 'agentPorts'"),
    ("networkPolicy.agentPorts={}", "/networkPolicy/agentPorts"),
    ("monitoring.serviceMonitor.interval=soon", "/monitoring/serviceMonitor/interval"),
    ("podDisruptionBudget.minAvailable=-1", "/podDisruptionBudget/minAvailable"),
])
def test_a_bad_value_is_refused_naming_the_field(value: str, field: str) -> None:
    result = rendering.helm("template", "guestha", str(rendering.CHART), "--set", value)
    assert result.returncode != 0, f"{value} was accepted"
    assert "schema" in result.stderr, result.stderr
    assert field in result.stderr, result.stderr


def test_a_service_account_of_ones_own_must_be_named() -> None:
    result = rendering.helm("template", "guestha", str(rendering.CHART),
                            "--set", "serviceAccount.create=false")
    assert result.returncode != 0
    assert "serviceAccount.name" in result.stderr
    named = rendering.chart("--set", "serviceAccount.create=false",
                            "--set", "serviceAccount.name=mine")
    assert only(named, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
    assert not [o for o in named if o["kind"] == "ServiceAccount"]
