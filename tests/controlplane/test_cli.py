"""kubectl-guestha against the real apiserver: each verb makes its one change, clearly, and
ends with the exit code scripts branch on (guestha.cli.exitcodes). Nothing here depends on
whether an operator runs in the session (an operator fails a Switchover of a group without
a cluster at once); following Switchovers, pending and final, is
tests/controlplane/test_cli_switch.py, on a cluster the operator runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

import kits.plugin

pytestmark = pytest.mark.controlplane

GROUP = {
    "apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup",
    "metadata": {"name": "shop"},
    "spec": {"cluster": "web", "systems": [{"member": "web-a", "priority": 0},
                                           {"member": "web-b", "priority": 1}],
             "resources": [{"name": "app", "type": "Process",
                            "attributes": {"command": ["sleep", "1000"]}}]},
}


def plugin(kube: Any, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    return kits.plugin.run(kube.kubeconfig, *args, env=env)


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


def test_status_as_json_and_yaml_has_the_documented_fields(kube: Any, namespace: str) -> None:
    out = plugin(kube, "status", "-n", namespace, "-o", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"clusters", "groups", "faultedResources", "pendingSwitchovers"}
    assert [(g["namespace"], g["name"], g["cluster"], g["frozen"]) for g in doc["groups"]] \
        == [(namespace, "shop", "web", False)]
    out = plugin(kube, "status", "-n", namespace, "-o", "yaml")
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout) == doc
    assert "\x1b[" not in out.stdout


def test_usage_errors_exit_2_and_a_missing_context_exits_1(kube: Any, namespace: str) -> None:
    assert plugin(kube, "switch").returncode == 2
    assert plugin(kube, "status", "-o", "xml").returncode == 2
    out = plugin(kube, "--context", "nosuch", "status")
    assert out.returncode == 1
    assert "nosuch" in out.stderr


def test_colour_never_reaches_a_pipe(kube: Any, namespace: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    out = plugin(kube, "-n", namespace, "status", env=env)
    assert out.returncode == 0 and "\x1b[" not in out.stdout


def test_events_shows_guesthas_events_about_the_name_given(kube: Any, namespace: str) -> None:
    group = sg(kube, namespace)
    for i, (kind, name, reason) in enumerate([
            ("ServiceGroup", "shop", "GroupOnline"), ("ServiceGroup", "other", "GroupOffline"),
            ("Pod", "shop", "Pulled")]):
        kube.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"e{i}"},
            "involvedObject": {"apiVersion": "guestha.io/v1alpha1" if kind != "Pod" else "v1",
                               "kind": kind, "name": name, "namespace": namespace,
                               "uid": group["metadata"]["uid"]},
            "reason": reason, "message": f"message {i}", "type": "Normal",
            "lastTimestamp": f"2026-11-30T10:00:0{i}Z"}))
    out = plugin(kube, "-n", namespace, "events")
    assert out.returncode == 0, out.stderr
    assert [line.split()[3] for line in out.stdout.splitlines()[1:]] == [
        "GroupOnline", "GroupOffline"]
    out = plugin(kube, "-n", namespace, "events", "shop")
    assert [line.split()[3] for line in out.stdout.splitlines()[1:]] == ["GroupOnline"]
    out = plugin(kube, "-n", namespace, "events", "nosuch")
    assert out.returncode == 1
    assert f"{namespace}/nosuch" in out.stderr
