"""The ways an administrator installs guestha: the Helm chart and the plain manifests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed import build

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "guestha"


def helm(*args: str) -> str:
    if args[0] == "template":
        args = (*args, "--kube-version", build.KUBERNETES_VERSION)
    result = subprocess.run([str(build.binary("helm")), *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind)


def test_chart_lints() -> None:
    out = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out


def test_chart_renders_objects_the_apiserver_accepts(kube) -> None:  # type: ignore[no-untyped-def]
    rendered = helm("template", "guestha", str(CHART), "--namespace", "guestha-system",
                    "--set", "verbose=true")
    objects = docs(rendered)
    assert {o["kind"] for o in objects} == {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"}
    kube.kubectl("create", "namespace", "guestha-system", check=False)
    kube.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    deployment = by_kind(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "guestha/operator:0.1.0"
    assert "--verbose" in container["command"]
    # One replica until the operator elects a leader (kopf runs standalone): the chart and
    # the manifests agree, and neither runs a new pod beside the old during an update.
    plain = by_kind(docs((REPO / "manifests/operator/deployment.yaml").read_text()),
                    "Deployment")
    for spec in (deployment["spec"], plain["spec"]):
        assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    # The injection webhook: served by the operator behind the Service the apiserver calls.
    service = by_kind(objects, "Service")
    plain_service = by_kind(docs((REPO / "manifests/operator/webhook-service.yaml").read_text()),
                            "Service")
    for found, pod in ((service, deployment), (plain_service, plain)):
        [container] = pod["spec"]["template"]["spec"]["containers"]
        name = found["metadata"]["name"]
        assert f"--webhook-service=guestha-system/{name}:443" in container["command"]
        assert found["spec"]["ports"] == [{"name": "webhook", "port": 443,
                                           "targetPort": "webhook"}]
        assert found["spec"]["selector"].items() <= \
            pod["spec"]["template"]["metadata"]["labels"].items()


def test_chart_and_manifests_grant_the_same_rules() -> None:
    chart = by_kind(docs(helm("template", "guestha", str(CHART))), "ClusterRole")
    manifests = by_kind(docs((REPO / "manifests/operator/rbac.yaml").read_text()), "ClusterRole")
    assert chart["rules"] == manifests["rules"]


def test_chart_carries_the_crds() -> None:
    rendered = docs(helm("template", "guestha", str(CHART), "--include-crds"))
    crds = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "CustomResourceDefinition"}
    shipped = {d["metadata"]["name"]: d for f in sorted((REPO / "crds").glob("*.yaml"))
               for d in docs(f.read_text())}
    assert crds == shipped


def test_plain_manifests_apply(kube) -> None:  # type: ignore[no-untyped-def]
    folder = REPO / "manifests" / "operator"
    kube.kubectl("apply", "-f", str(folder / "namespace.yaml"))
    kube.kubectl("apply", "--dry-run=server", "-f", str(folder))
