"""A guestha cluster as the control-plane tests drive and read it through the API: member
VMs, the ServiceGroup's status (state, where it is online, each member's state), the
Events about an object, and the application's process inside a member's guest.

Shared by the failover scenarios (tests/controlplane/test_failover*.py); every wait goes
through the namespace's own bounded `wait_for` (tests/controlplane/kubevirtkit.Namespace,
passed in as `ns`), and fails naming what it waited for and what it saw last.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kits import simguests


def vm(name: str) -> dict[str, Any]:
    """A runStrategy Always member VM whose guest stops at once when asked."""
    return {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"runStrategy": "Always", "template": {"spec": {
            "terminationGracePeriodSeconds": 0,
            "domain": {"devices": {}, "memory": {"guest": "128Mi"}, "resources": {}}}}},
    }


def fast_cluster(name: str, members: Sequence[str], **spec: Any) -> dict[str, Any]:
    """An InGuestCluster of `members` tuned for tests: heartbeats every 200 ms, a peer lost
    after 1 s, fenced through KubeVirt with a 3 s self-fence and no watchdog (the
    simulator's guests have none). `spec`: more fields of its spec."""
    return {"apiVersion": "guestha.io/v1alpha1", "kind": "InGuestCluster",
            "metadata": {"name": name},
            "spec": {"members": [{"name": m} for m in members],
                     "heartbeat": {"intervalMilliseconds": 200,
                                   "peerTimeoutMilliseconds": 1000},
                     "fencing": {"policy": "KubeVirt", "selfFenceTimeoutSeconds": 3,
                                 "watchdog": False},
                     **spec}}


def process_group(name: str, cluster: str, members: Sequence[str],
                  command: Sequence[str]) -> dict[str, Any]:
    """A Failover ServiceGroup of one Process resource `app` running `command`, monitored
    every second, its members in priority order."""
    return {"apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup",
            "metadata": {"name": name},
            "spec": {"cluster": cluster, "type": "Failover",
                     "systems": [{"member": m, "priority": i}
                                 for i, m in enumerate(members)],
                     "resources": [{"name": "app", "type": "Process",
                                    "monitor": {"intervalSeconds": 1},
                                    "attributes": {"command": list(command)}}]}}


def group(ns: Any, name: str = "shop") -> dict[str, Any]:
    """The ServiceGroup's status ({} while it has none)."""
    return dict((ns.get("sg", name) or {}).get("status") or {})


def online_on(ns: Any, members: tuple[str, ...], name: str = "shop",
              timeout: float | None = None) -> Any:
    """The group's status once it is Online on exactly `members`."""
    def check() -> Any:
        status = group(ns, name)
        if status.get("state") == "Online" and tuple(sorted(status.get("onlineOn") or ())) \
                == tuple(sorted(members)):
            return status
        return None
    try:
        return ns.wait_for(f"{name} online on {members}", check, timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}; status: {group(ns, name)}") from None


def states(ns: Any, name: str = "shop") -> dict[str, str]:
    """The group's state on each member, as its status shows it."""
    return {m["name"]: m["state"] for m in group(ns, name).get("members", ())}


def state_on(ns: Any, member: str, wanted: tuple[str, ...],
             name: str = "shop") -> dict[str, str]:
    seen: dict[str, str] = {}

    def check() -> dict[str, str] | None:
        seen.clear()
        seen.update(states(ns, name))
        return dict(seen) if seen.get(member) in wanted else None

    try:
        found: dict[str, str] = ns.wait_for(f"{name} {' or '.join(wanted)} on {member}", check)
    except AssertionError as e:
        raise AssertionError(f"{e}; states: {seen}; status: {group(ns, name)}") from None
    return found


def reasons(ns: Any, name: str = "shop") -> list[str]:
    """The reasons of the Events about the object `name`."""
    return [e["reason"] for e in ns.events(name)]


def pids_in_guest(state_dir: Path, uid: str, marker: bytes) -> list[int]:
    """Host pids of the live processes whose command line holds `marker`, in the guest
    host of the VMI `uid`."""
    in_guest = set(simguests.guest_processes(state_dir, uid))
    return [p for p in simguests.copies(marker) if p in in_guest]
