"""The simulator's guest-agent poller: a VMI's reconcile never waits on its guest's agent.

A frozen guest's agent does not answer; KubeVirt keeps polling it beside the VMI's
reconcile (virt-launcher's agent poller), so the VMI's deletion - a fence - is acted on at
once. These tests hold the simulator to that, with a stand-in host whose agent answers,
fails or hangs as each case needs (the real GuestHost's agent is tested in tests/agent).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from kubevirtsim.agentpoller import AgentPoller, AgentView, os_info
from kubevirtsim.guesthost import GuestSpec
from kubevirtsim.guests import Guest
from kubevirtsim.vmi import VMIController

pytestmark = pytest.mark.unit

OSINFO = {"id": "debian", "kernel-release": "6.1.0-28-amd64", "pretty-name": "Debian 12",
          "version-id": "12", "machine": "x86_64", "name": "Debian GNU/Linux", "version": ""}


class StandInHost:
    """An agent that answers, fails, or hangs until released (bounded: 30 s)."""

    address = "10.213.0.9"
    mac = "52:54:00:d5:00:09"

    def __init__(self) -> None:
        self.answers = True
        self.info_fails = False
        self.hang = False
        self.release = threading.Event()
        self.pings = 0

    def agent_connected(self) -> bool:
        self.pings += 1
        if self.hang:
            self.release.wait(30)
            return False
        return self.answers

    def guest_info(self) -> dict[str, Any]:
        if self.info_fails:
            raise OSError("guest-get-osinfo timed out")
        return {"hostname": "g", "os": dict(OSINFO), "timezone": {}, "interfaces": []}


def guest(host: StandInHost) -> Guest:
    spec = GuestSpec("ns/g", "0a1b2c3d-uid", "g", "NoCloud", None, None, "node-1")
    return Guest(spec, host)  # type: ignore[arg-type]


def running_vmi() -> dict[str, Any]:
    return {"metadata": {"name": "g", "namespace": "ns", "uid": "0a1b2c3d-uid"},
            "spec": {"domain": {"devices": {"interfaces": [{"name": "default"}]}}},
            "status": {"phase": "Running", "conditions": []}}


def test_a_running_vmi_is_reconciled_without_waiting_on_a_hung_agent() -> None:
    host = StandInHost()
    host.hang = True
    g = guest(host)
    controller = VMIController(*[None] * 8)  # type: ignore[arg-type]
    vmi = running_vmi()
    done = threading.Event()

    def reconcile() -> None:
        controller._mutate_running(vmi, g)
        done.set()

    threading.Thread(target=reconcile, daemon=True).start()
    try:
        # a reconcile that pings the agent hangs here until release (30 s)
        assert done.wait(5), "the VMI's reconcile waited on its guest's hung agent"
    finally:
        host.release.set()
    assert host.pings == 0
    assert not any(c["type"] == "AgentConnected" for c in vmi["status"]["conditions"])


def test_the_reconcile_writes_what_the_poller_saw() -> None:
    host = StandInHost()
    g = guest(host)
    g.agent = AgentPoller("g", host, g.exited, lambda: None)
    g.agent.poll()
    vmi = running_vmi()
    VMIController(*[None] * 8)._mutate_running(vmi, g)  # type: ignore[arg-type]
    assert any(c["type"] == "AgentConnected" and c["status"] == "True"
               for c in vmi["status"]["conditions"])
    assert vmi["status"]["guestOSInfo"]["prettyName"] == "Debian 12"
    host.answers = False
    g.agent.poll()
    VMIController(*[None] * 8)._mutate_running(vmi, g)  # type: ignore[arg-type]
    assert not any(c["type"] == "AgentConnected" for c in vmi["status"]["conditions"])


def test_the_poller_wakes_the_vmi_only_on_a_change() -> None:
    host = StandInHost()
    wakes: list[AgentView] = []
    poller = AgentPoller("g", host, threading.Event(), lambda: wakes.append(poller.view()))
    assert poller.view() == AgentView()
    assert poller.poll() and wakes[-1].connected
    assert wakes[-1].os_info["kernelRelease"] == "6.1.0-28-amd64"
    assert not poller.poll()  # the same answer: nothing to write
    host.info_fails = True
    assert not poller.poll()  # os info kept from the last answer
    host.answers = False
    assert poller.poll() and wakes[-1] == AgentView(False, {})
    assert len(wakes) == 2


def test_the_poller_stops_with_its_guest() -> None:
    host = StandInHost()
    gone = threading.Event()
    poller = AgentPoller("g", host, gone, lambda: None)
    poller.start()
    gone.set()
    assert poller._thread is not None
    poller._thread.join(10)
    assert not poller._thread.is_alive()


@pytest.mark.parametrize(("answer", "expected"), [
    ({"os": {"id": "debian", "pretty-name": "Debian 12"}},
     {"id": "debian", "prettyName": "Debian 12"}),
    ({"id": "rhel", "version-id": "9.4", "kernel-version": "#1 SMP"},  # flat
     {"id": "rhel", "versionId": "9.4", "kernelVersion": "#1 SMP"}),
    ({"os": {"id": "", "name": None, "machine": "x86_64", "unknown-field": "x"}},
     {"machine": "x86_64"}),
])
def test_os_info_takes_kubevirts_fields(answer: dict[str, Any], expected: dict[str, str]) -> None:
    assert os_info(answer) == expected
