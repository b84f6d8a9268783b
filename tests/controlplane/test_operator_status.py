"""The operator reports an InGuestCluster's members as KubeVirt shows them."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.controlplane


def vm(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {
            "devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}}},
    }


def wait_for(fetch: Any, predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if predicate(value):
            return value
        time.sleep(0.3)
    raise AssertionError(f"not reached within {timeout}s; last: {json.dumps(value)[:2000]}")


@pytest.fixture
def namespace(kube) -> str:  # type: ignore[no-untyped-def]
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    return name


def test_stopped_members_are_reported_and_cluster_not_available(
        kube, operator, namespace: str) -> None:  # type: ignore[no-untyped-def]
    objects = [vm("web-a", {"ha": "web"}), vm("web-b", {"ha": "web"}), vm("other")]
    kube.kubectl("apply", "-n", namespace, "-f", "-",
                 input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "guestha.io/v1alpha1", "kind": "InGuestCluster",
        "metadata": {"name": "web"},
        "spec": {"memberSelector": {"matchLabels": {"ha": "web"}}}}))

    def status() -> dict[str, Any]:
        out = kube.kubectl("get", "igc", "web", "-n", namespace, "-o", "json").stdout
        return dict(json.loads(out).get("status") or {})

    got = wait_for(status, lambda s: len(s.get("members", [])) == 2)
    assert [(m["name"], m["phase"]) for m in got["members"]] == [
        ("web-a", "Stopped"), ("web-b", "Stopped")]
    cond = {c["type"]: c for c in got["conditions"]}
    assert cond["Available"]["status"] == "False"
    assert cond["Degraded"]["status"] == "True"
    # A VM that gains the label joins the cluster.
    kube.kubectl("label", "vm", "other", "ha=web", "-n", namespace)
    wait_for(status, lambda s: len(s.get("members", [])) == 3)
