"""Stopping and restarting a real agent must not defeat fencing (DESIGN.md rule 1c).

A guest whose agent stops while Failover groups run is a guest nobody fences: the agent
takes them offline before it disarms the watchdog, or leaves the watchdog armed so the
guest is reset. A restart (systemd restarts the agent; KillMode=process leaves its
resources running) continues the no-quorum timer where the last run left it, and keeps a
watchdog that was let go let go. The watchdog device is a stand-in file here: a clean
stop writes the magic close character "V" to it.
"""

from __future__ import annotations

import datetime
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from kits.agentproc import AgentProc, kill_command, unique_sleep
from kits.pki import Pki
from kits.waiting import wait_for

pytestmark = pytest.mark.agent

SLEEP = unique_sleep()


def shop(monitor: int = 1) -> dict[str, Any]:
    return {"name": "shop", "type": "Failover", "resources": [
        {"name": "app", "type": "Process", "attributes": {"command": SLEEP},
         "monitor": {"intervalSeconds": monitor}}]}


def watchdog_agent(tmp_path: Path, address: str, port: int) -> AgentProc:
    device = tmp_path / "watchdog"
    device.write_bytes(b"")
    return AgentProc("web-s", address, tmp_path / "s", Pki(tmp_path / "pki"), port=port,
                     heartbeat_port=port + 1, watchdog=device)


def running(argv: list[str]) -> bool:
    wanted = "\0".join(argv).encode() + b"\0"
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and Path(f"/proc/{entry}/cmdline").read_bytes() == wanted:
                return True
        except OSError:
            pass
    return False


def online(a: AgentProc, body: dict[str, Any]) -> None:
    c = a.client(epoch=1)
    try:
        code, answer = c.command("PUT", "/v1/config", 1, body)
        assert code == 200, answer
        wait_for(lambda: c.status()["quorum"]["hasQuorum"], 3, what="the operator's vote")
        for group in body["groups"]:
            code, answer = c.command("POST", f"/v1/groups/{group['name']}/online", 1)
            assert code == 200, answer
            wait_for(lambda g=group: c.status()["groups"][g["name"]]["state"] == "Online", 15,
                     what=f"{group['name']} online")
    finally:
        c.close()


def test_a_stopped_agent_takes_its_failover_groups_offline_before_disarming(
        tmp_path: Path) -> None:
    a = watchdog_agent(tmp_path, "127.0.0.42", 17643).start()
    assert a.watchdog is not None
    try:
        online(a, {"groups": [shop()], "fencing": {"selfFenceTimeoutSeconds": 5}})
        assert running(SLEEP)
        assert a.stop() == 0, a.log.read_text()[-3000:]
        disarmed = a.watchdog.read_bytes().endswith(b"V")
        # A stop must not leave the guest with its Failover group running and nothing to
        # reset it: either the group is down (and the watchdog may be disarmed) or the
        # watchdog stays armed.
        assert not (disarmed and running(SLEEP)), "disarmed with the Failover group running"
        assert not running(SLEEP) and disarmed
    finally:
        a.stop()
        kill_command(SLEEP)


def test_a_stop_that_cannot_take_the_groups_offline_leaves_the_watchdog_armed(
        tmp_path: Path) -> None:
    a = watchdog_agent(tmp_path, "127.0.0.43", 17645).start()
    assert a.watchdog is not None
    marker = tmp_path / "running"
    stuck = {"name": "stuck", "type": "Failover", "resources": [
        {"name": "app", "type": "Application", "monitor": {"intervalSeconds": 1},
         "timeouts": {"offlineSeconds": 30, "cleanSeconds": 30},
         "attributes": {"startProgram": f"touch {marker}",
                        "monitorProgram": f"test -f {marker} && exit 110 || exit 100",
                        "stopProgram": "sleep 60", "cleanProgram": "sleep 60"}}]}
    try:
        online(a, {"groups": [stuck], "fencing": {"selfFenceTimeoutSeconds": 5,
                                                  "offlineTimeoutSeconds": 2}})
        assert a.stop() == 0, a.log.read_text()[-3000:]
        assert marker.exists()  # the application never stopped
        assert not a.watchdog.read_bytes().endswith(b"V"), "disarmed with the group running"
    finally:
        a.stop()
        marker.unlink(missing_ok=True)
        kill_command(["sleep", "60"])


def test_a_restart_continues_the_no_quorum_timer(tmp_path: Path) -> None:
    """Four members, three of them absent: the operator alone cannot give this agent a
    majority (2 of 5), so reading its status changes nothing. Crashed 4 s into a 10 s
    self-fence timeout and started again, it has at most 6 s left, not 10 again."""
    timeout = 10
    a = AgentProc("web-r", "127.0.0.44", tmp_path / "r", Pki(tmp_path / "pki"), port=17647,
                  heartbeat_port=17648).start()
    peers = [{"member": f"gone-{i}", "address": f"127.0.0.{250 + i}"} for i in range(3)]
    c = a.client()
    try:
        code, body = c.command("PUT", "/v1/config", 1, {
            "groups": [shop()], "peers": peers,
            "fencing": {"selfFenceTimeoutSeconds": timeout, "operatorLeaseSeconds": 1}})
        assert code == 200, body

        def left() -> float | None:
            value = c.status()["selfFence"]["secondsLeft"]
            return None if value is None else float(value)

        wait_for(lambda: (left() or timeout) <= timeout - 4, timeout, what="4 s of Pending")
        before = left()
        assert before is not None
        held = c.status()["quorum"]["lastHeld"]
        a.signal(signal.SIGKILL)  # a crash; systemd starts it again
        assert a.proc is not None
        a.proc.wait(5)
        c.close()
        a.start()
        after = wait_for(left, 5, what="the restarted agent's timer")
        assert after <= before + 0.5, (before, after)
        # The same moment: the stamps are monotonic times turned into wall-clock time at
        # each read, so they may differ by the clocks' drift in between (milliseconds).
        assert abs(_stamp(c.status()["quorum"]["lastHeld"]) - _stamp(held)) < 0.1
    finally:
        c.close()
        a.stop()


def _stamp(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def _grows(path: Path, seconds: float) -> int:
    before = path.stat().st_size
    time.sleep(seconds)
    return path.stat().st_size - before


def test_a_watchdog_let_go_stays_let_go_after_a_restart(tmp_path: Path) -> None:
    """Self-fencing could not finish, so the watchdog was let go and the guest is due to be
    reset. An agent restarted in the same boot (systemd) must not open the device again:
    opening it restarts the hardware's countdown, and petting it cancels the reset while
    the Failover group may still run."""
    a = watchdog_agent(tmp_path, "127.0.0.45", 17649).start()
    assert a.watchdog is not None
    marker = tmp_path / "running"
    stuck = {"name": "stuck", "type": "Failover", "resources": [
        {"name": "app", "type": "Application", "monitor": {"intervalSeconds": 1},
         "timeouts": {"offlineSeconds": 30, "cleanSeconds": 30},
         "attributes": {"startProgram": f"touch {marker}",
                        "monitorProgram": f"test -f {marker} && exit 110 || exit 100",
                        "stopProgram": "sleep 60", "cleanProgram": "sleep 60"}}]}
    try:
        online(a, {"groups": [stuck], "fencing": {"selfFenceTimeoutSeconds": 1,
                                                  "operatorLeaseSeconds": 1,
                                                  "offlineTimeoutSeconds": 2}})
        c = a.client()  # reads without the operator's epoch: no vote
        wait_for(lambda: c.status()["selfFence"]["state"] == "Failed", 15,
                 what="self-fencing fails")
        assert not c.status()["watchdog"]["petting"]
        c.close()
        a.signal(signal.SIGKILL)
        assert a.proc is not None
        a.proc.wait(5)
        a.watchdog.write_bytes(b"")  # (each run writes from the start of the stand-in)
        a.start()
        assert _grows(a.watchdog, 2.5) == 0, "the restarted agent pets the watchdog again"
        status = c.status()
        assert status["selfFence"]["state"] == "Failed", status["selfFence"]
        assert not status["watchdog"]["petting"], status["watchdog"]
    finally:
        a.stop()
        marker.unlink(missing_ok=True)
        kill_command(["sleep", "60"])
