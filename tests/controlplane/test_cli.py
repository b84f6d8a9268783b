"""kubectl-guestha against the real apiserver: each verb makes its one change, clearly."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.controlplane

GROUP = {
    "apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup",
    "metadata": {"name": "shop"},
    "spec": {"cluster": "web", "systems": [{"member": "web-a", "priority": 0},
                                           {"member": "web-b", "priority": 1}],
             "resources": [{"name": "app", "type": "Process",
                            "attributes": {"command": ["sleep", "1000"]}}]},
}


def plugin(kube: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "guestha.cli.main", "--kubeconfig",
                           str(kube.kubeconfig), *args], capture_output=True, text=True)


@pytest.fixture
def namespace(kube: Any) -> Iterator[str]:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("apply", "-n", name, "-f", "-", input=json.dumps(GROUP))
    yield name
    kube.kubectl("delete", "namespace", name, "--timeout=120s")


def sg(kube: Any, namespace: str) -> dict[str, Any]:
    return dict(json.loads(kube.kubectl("get", "sg", "shop", "-n", namespace, "-o",
                                        "json").stdout))


def test_freeze_unfreeze_and_clear(kube: Any, namespace: str) -> None:
    assert plugin(kube, "-n", namespace, "freeze", "shop").returncode == 0
    assert sg(kube, namespace)["spec"]["frozen"] is True
    assert plugin(kube, "-n", namespace, "unfreeze", "shop").returncode == 0
    assert sg(kube, namespace)["spec"]["frozen"] is False
    out = plugin(kube, "-n", namespace, "clear", "shop")
    assert out.returncode == 0, out.stderr
    first = sg(kube, namespace)["metadata"]["annotations"]["guestha.io/clear"]
    plugin(kube, "-n", namespace, "clear", "shop")
    assert sg(kube, namespace)["metadata"]["annotations"]["guestha.io/clear"] != first


def test_switch_creates_a_switchover(kube: Any, namespace: str) -> None:
    out = plugin(kube, "-n", namespace, "switch", "shop", "--to", "web-b")
    assert out.returncode == 0, out.stderr
    items = json.loads(kube.kubectl("get", "switchover", "-n", namespace, "-o",
                                    "json").stdout)["items"]
    assert [i["spec"] for i in items] == [{"serviceGroup": "shop", "to": "web-b"}]


def test_unknown_group_is_a_clear_error_and_changes_nothing(kube: Any, namespace: str) -> None:
    out = plugin(kube, "-n", namespace, "freeze", "nosuch")
    assert out.returncode == 1
    assert "404" in out.stderr and "nosuch" in out.stderr
    out = plugin(kube, "-n", namespace, "switch", "nosuch")
    assert out.returncode == 1
    assert kube.kubectl("get", "switchover", "-n", namespace, "-o", "name").stdout == ""


def test_status_lists_the_group(kube: Any, namespace: str) -> None:
    out = plugin(kube, "-n", namespace, "status")
    assert out.returncode == 0, out.stderr
    assert any(line.split()[:3] == [namespace, "shop", "web"] for line in out.stdout.splitlines()
               if line.strip())
