"""`kubectl guestha switch --wait` against a group the operator really moves: real agents
in the simulator's guests (injected by the operator), the plugin following the Switchover
it created, one progress line per phase, and the exit code telling success from failure.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubevirtkit import Namespace

import kits.plugin
from kits.sgstatus import online_on, vm

pytestmark = pytest.mark.controlplane

MEMBERS = ("cli-a", "cli-b")
TIMEOUT = 90.0


@pytest.fixture(scope="module")
def ns(kube: Any, simulator: Any, operator: Any) -> Iterator[Namespace]:
    name = f"cliswitch-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("label", "namespace", name, "guestha.io/injection=enabled")
    space = Namespace(kube, name, timeout=TIMEOUT, interval=0.2)
    space.apply({"apiVersion": "guestha.io/v1alpha1", "kind": "InGuestCluster",
                 "metadata": {"name": "web"},
                 "spec": {"members": [{"name": m} for m in MEMBERS],
                          "fencing": {"policy": "KubeVirt", "watchdog": False}}})
    for member in MEMBERS:
        space.apply(vm(member))
    space.apply({"apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup",
                 "metadata": {"name": "shop"},
                 "spec": {"cluster": "web",
                          "systems": [{"member": m, "priority": i}
                                      for i, m in enumerate(MEMBERS)],
                          "resources": [{"name": "app", "type": "Process",
                                         "monitor": {"intervalSeconds": 1},
                                         "attributes": {"command": ["/bin/sleep", "86400"]}}]}})
    try:
        yield space
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def plugin(ns: Namespace, *args: str) -> subprocess.CompletedProcess[str]:
    return kits.plugin.run(ns.kube.kubeconfig, "-n", ns.name, *args, timeout=TIMEOUT + 30)


def test_switch_wait_follows_the_move_and_exits_0(ns: Namespace) -> None:
    online_on(ns, ("cli-a",))
    out = plugin(ns, "switch", "shop", "--to", "cli-b", "--wait", "--timeout", str(TIMEOUT))
    assert out.returncode == 0, (out.stdout, out.stderr)
    lines = out.stdout.splitlines()
    assert lines[0].endswith(" created")
    phases = [line.split(": ")[1].split(":")[0] for line in lines[1:]]
    assert phases[-1] == "Succeeded" and "Running" in phases, lines
    assert "from cli-a to cli-b" in lines[-1]
    online_on(ns, ("cli-b",))
    doc = json.loads(plugin(ns, "status", "-o", "json").stdout)
    assert [(g["name"], g["state"], g["onlineOn"]) for g in doc["groups"]] == [
        ("shop", "Online", ["cli-b"])]
    assert doc["pendingSwitchovers"] == []
    events = plugin(ns, "events").stdout
    assert "SwitchoverSucceeded" in events and "GroupOnline" in events


def test_switch_wait_to_a_member_outside_the_systems_exits_3(ns: Namespace) -> None:
    online_on(ns, ("cli-b",))
    out = plugin(ns, "switch", "shop", "--to", "cli-z", "--wait", "--timeout", str(TIMEOUT))
    assert out.returncode == 3, (out.stdout, out.stderr)
    assert "Failed: " in out.stdout.splitlines()[-1]
    assert "TargetNotInSystems" in out.stdout
    online_on(ns, ("cli-b",))


def test_switch_wait_on_a_group_that_is_still_starting_times_out_with_code_4(
        ns: Namespace) -> None:
    """A group whose resource takes 40 s to start (ocf:heartbeat:Delay) is Starting, so a
    Switchover of it stays Pending (WaitingForGroup): --wait gives up at --timeout, and
    status lists the Switchover as pending."""
    ns.apply({"apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup",
              "metadata": {"name": "slow"},
              "spec": {"cluster": "web",
                       "systems": [{"member": m, "priority": i} for i, m in enumerate(MEMBERS)],
                       "resources": [{"name": "delay", "type": "OCF",
                                      "attributes": {"agent": "heartbeat:Delay", "parameters": {
                                          "startdelay": "40", "stopdelay": "1"}}}]}})
    ns.wait_for("slow Starting on cli-a", lambda: {
        m["name"]: m["state"] for m in (ns.get("sg", "slow") or {}).get("status", {}).get(
            "members", ())}.get("cli-a") == "Starting")
    out = plugin(ns, "switch", "slow", "--to", "cli-b", "--wait", "--timeout", "3")
    assert out.returncode == 4, (out.stdout, out.stderr)
    lines = out.stdout.splitlines()
    assert "Pending" in lines[1]
    assert lines[-1].endswith("timed out after 3s, still Pending")
    doc = json.loads(plugin(ns, "status", "-o", "json").stdout)
    assert [(s["group"], s["phase"], s["to"]) for s in doc["pendingSwitchovers"]] == [
        ("slow", "Pending", "cli-b")]
