"""guestha's OLM bundle (bundle/), generated, never edited by hand.

OperatorHub installs operators from a bundle: a ClusterServiceVersion (CSV) that carries
the operator's Deployment, RBAC and the console's view of its APIs, beside the CRDs. Every
part of it that another file of the project already says is taken from there (the CRDs,
the Deployment and RBAC of manifests/base/, the samples, the version), so the bundle
cannot drift from the other install methods: `hack/bundle` writes it and
tests/unit/test_olm_bundle.py fails when bundle/ differs from what it would write.
What is OLM's own (descriptors, description, links) is in csv-base.yaml beside this file.

Two things OLM expresses differently from the plain manifests, and why:
- The webhook is not declared in the CSV's webhookdefinitions. OLM's webhook description
  has no namespaceSelector (OLM sets it from the OperatorGroup: every namespace for an
  AllNamespaces install), while guestha's webhook must see only the namespaces it labels
  and fail closed there: through OLM, either every VMI creation in the cluster would wait
  on the operator (failurePolicy Fail) or a member could start without its agent (Ignore).
  So the operator registers its own configuration, as with Helm and kustomize, and the
  CSV grants it the same RBAC for that; the webhook's Service ships in the bundle.
- A CSV grants namespaced permissions only in the namespace it is installed in, so the
  read access to node Leases (a Role in kube-node-lease elsewhere) becomes a cluster-wide
  read of Leases in clusterPermissions; and the Service's namespace in the operator's
  --webhook-service is the pod's own ($(POD_NAMESPACE)), not guestha-system.
"""
