"""The OLM bundle as data: bundle/ is what `hack/bundle` makes of the project's sources
(so it cannot drift from crds/, manifests/ and the samples), and the CSV says what the
console needs: every guestha kind owned, its conditions, phase and members described,
cluster-wide install only, the same rules as the plain manifests.

The operator framework's own validator runs on it in tests/controlplane/test_olm_bundle.py
(a Go program built from its module), with the alm-examples dry-run on a real apiserver.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from olmbundle import generate

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CSV_FILE = REPO / "bundle" / "manifests" / "guestha.clusterserviceversion.yaml"


@pytest.fixture(scope="module")
def csv() -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load(CSV_FILE.read_text())
    return found


def owned(csv: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(o for o in csv["spec"]["customresourcedefinitions"]["owned"]
                if o["kind"] == kind)


def paths(entry: dict[str, Any], which: str) -> dict[str, list[str]]:
    return {d["path"]: d.get("x-descriptors", []) for d in entry[which]}


def test_the_bundle_is_what_hack_bundle_makes_of_the_sources() -> None:
    assert generate.stale() == [], "run hack/bundle"


def test_a_changed_source_makes_the_bundle_stale(tmp_path: Path) -> None:
    generate.write(tmp_path)
    assert generate.stale(tmp_path) == []
    crd = tmp_path / "manifests" / "switchovers.guestha.io.yaml"
    crd.write_text(crd.read_text() + "# edited\n")
    (tmp_path / "manifests" / "extra.yaml").write_text("{}\n")
    assert generate.stale(tmp_path) == ["manifests/extra.yaml",
                                        "manifests/switchovers.guestha.io.yaml"]


def test_the_bundle_carries_the_crds_byte_for_byte() -> None:
    for crd in sorted((REPO / "crds").glob("*.yaml")):
        assert (REPO / "bundle" / "manifests" / crd.name).read_bytes() == crd.read_bytes()


def test_name_version_and_install_mode(csv: dict[str, Any]) -> None:
    version = generate.version()
    assert csv["metadata"]["name"] == f"guestha.v{version}"
    assert csv["spec"]["version"] == version
    assert csv["spec"]["maturity"] == "alpha"
    # cluster-wide: the operator watches every namespace and registers its own webhook
    assert [m["type"] for m in csv["spec"]["installModes"] if m["supported"]] == [
        "AllNamespaces"]
    assert csv["spec"]["minKubeVersion"] == "1.30.0"  # the Helm chart's kubeVersion
    assert "webhookdefinitions" not in csv["spec"]  # see olmbundle's docstring


def test_the_deployment_is_the_manifests_one(csv: dict[str, Any]) -> None:
    plain = next(o for o in generate.install_objects() if o["kind"] == "Deployment")
    [deployment] = csv["spec"]["install"]["spec"]["deployments"]
    assert deployment["name"] == plain["metadata"]["name"]
    spec = copy.deepcopy(deployment["spec"])
    [container] = spec["template"]["spec"]["containers"]
    # the one difference: OLM installs into a namespace the user picks
    assert "--webhook-service=$(POD_NAMESPACE)/guestha-operator-webhook:443" in \
        container["command"]
    container["command"] = [c.replace("$(POD_NAMESPACE)", "guestha-system")
                            for c in container["command"]]
    assert spec == plain["spec"]
    env = {e["name"] for e in container["env"]}
    assert "POD_NAMESPACE" in env  # what $(POD_NAMESPACE) expands to
    assert csv["spec"]["relatedImages"] == [{"name": "guestha-operator",
                                             "image": container["image"]}]
    assert csv["metadata"]["annotations"]["containerImage"] == container["image"]


def _rule_set(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    return {(g, r, v, n) for rule in rules for g in rule.get("apiGroups", [""])
            for r in rule["resources"] for v in rule["verbs"]
            for n in rule.get("resourceNames", ["*"])}


def test_the_rbac_is_the_manifests_one(csv: dict[str, Any]) -> None:
    objects = generate.install_objects()
    roles = [o for o in objects if o["kind"] in ("Role", "ClusterRole")]
    plain = _rule_set([r for role in roles for r in role["rules"]])
    install = csv["spec"]["install"]["spec"]
    [cluster] = install["clusterPermissions"]
    [namespaced] = install["permissions"]
    assert cluster["serviceAccountName"] == namespaced["serviceAccountName"] == \
        "guestha-operator"
    assert _rule_set(cluster["rules"]) | _rule_set(namespaced["rules"]) == plain
    # the leader Lease lives in the operator's own namespace: namespaced there
    assert ("coordination.k8s.io", "leases", "create", "*") in _rule_set(namespaced["rules"])
    assert ("coordination.k8s.io", "leases", "create", "*") not in _rule_set(cluster["rules"])
    # the operator registers its own webhook configuration
    assert ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "update",
            "guestha.io") in _rule_set(cluster["rules"])


def test_every_guestha_kind_is_owned_with_the_console_descriptors(
        csv: dict[str, Any]) -> None:
    kinds = {o["kind"] for o in csv["spec"]["customresourcedefinitions"]["owned"]}
    assert kinds == set(generate.crds())
    conditions = "urn:alm:descriptor:io.kubernetes.conditions"
    phase = "urn:alm:descriptor:io.kubernetes.phase"
    switch = "urn:alm:descriptor:com.tectonic.ui:booleanSwitch"
    vm = "urn:alm:descriptor:io.kubernetes:kubevirt.io:v1:VirtualMachine"
    cluster = owned(csv, "InGuestCluster")
    assert paths(cluster, "statusDescriptors")["conditions"] == [conditions]
    assert "members" in paths(cluster, "statusDescriptors")
    assert "members" in paths(cluster, "specDescriptors")
    assert paths(cluster, "specDescriptors")["fencing.watchdog"] == [switch]
    group = owned(csv, "ServiceGroup")
    assert paths(group, "statusDescriptors")["conditions"] == [conditions]
    assert paths(group, "statusDescriptors")["state"] == [phase]
    assert "onlineOn" in paths(group, "statusDescriptors")  # where it is online
    assert "members" in paths(group, "statusDescriptors")
    assert paths(group, "specDescriptors")["frozen"] == [switch]
    switchover = owned(csv, "Switchover")
    assert paths(switchover, "statusDescriptors")["phase"] == [phase]
    assert paths(switchover, "specDescriptors")["to"] == [vm]
    for entry in csv["spec"]["customresourcedefinitions"]["owned"]:
        for d in entry["specDescriptors"] + entry["statusDescriptors"]:
            assert d.get("description"), f"{entry['kind']} {d['path']}: from the CRD"


def test_a_descriptor_path_the_crd_lacks_stops_the_generator() -> None:
    crd = generate.crds()["ServiceGroup"]
    assert generate.schema_at(crd, "spec", "frozen")["type"] == "boolean"
    with pytest.raises(generate.BundleError,
                       match=r"status\.lastFailover\.form of ServiceGroup: "
                             r"status\.lastFailover has no field 'form'"):
        generate.schema_at(crd, "status", "lastFailover.form")


def test_the_examples_are_the_samples(csv: dict[str, Any]) -> None:
    examples = json.loads(csv["metadata"]["annotations"]["alm-examples"])
    assert [e["kind"] for e in examples] == ["InGuestCluster", "ServiceGroup", "Switchover"]
    samples = {d["kind"]: d for p in sorted((REPO / "manifests" / "samples").glob("*.yaml"))
               for d in yaml.safe_load_all(p.read_text()) if d}
    for example in examples:
        sample = copy.deepcopy(samples[example["kind"]])
        del sample["metadata"]["namespace"]
        assert example == sample


def test_the_metadata_names_the_package_and_channel() -> None:
    annotations = yaml.safe_load(
        (REPO / "bundle" / "metadata" / "annotations.yaml").read_text())["annotations"]
    assert annotations["operators.operatorframework.io.bundle.package.v1"] == "guestha"
    assert annotations["operators.operatorframework.io.bundle.mediatype.v1"] == "registry+v1"
    assert annotations["operators.operatorframework.io.bundle.manifests.v1"] == "manifests/"
