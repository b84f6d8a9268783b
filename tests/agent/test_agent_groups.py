"""Service groups run by the agent's GroupRunner, with real processes and programs.

What a user would notice: resources start in dependency order (independent branches at the
same time) and stop in reverse; a killed process is restarted in place within restartLimit
and then faults the group (critical) or leaves it Partial (non-critical), with the event
out within milliseconds; an agent restart adopts running processes; VCS's ToleranceLimit,
OnlineWaitLimit, FaultOnMonitorTimeouts and ConfInterval behave as documented.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from resource_helpers import (
    Events,
    cmdline,
    group,
    guest_host,
    kill_tagged,
    new_tag,
    pid_of,
    pids_with,
    res,
    resource,
    run_in_guest,
    running,
    running_runner,
    sleeper,
    summary,
    wait_for,
    wait_group,
)

from guestha.agent.groups import GroupError, GroupRunner
from guestha.protocol.fields import FieldError

pytestmark = pytest.mark.agent

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OCF_ANYTHING = Path("/usr/lib/ocf/resource.d/heartbeat/anything")


@pytest.fixture
def tag() -> Any:
    value = new_tag()
    yield value
    kill_tagged(value)


@pytest.fixture
def agent(tmp_path: Path, tag: str) -> Any:
    with running_runner(str(tmp_path / "state"), tag) as pair:
        yield pair


def stamp_app(name: str, work: Path, tag: str, start_delay: float = 0.0) -> dict[str, Any]:
    """An Application that records when it started and stopped, and runs a tagged sleeper."""
    pidfile = work / f"{name}.pid"
    start = (f"sleep {start_delay}; date +%s.%N > {work}/{name}.start; "
             f"python3 -c 'import time; time.sleep(1000)' {tag} >/dev/null 2>&1 & "
             f"echo $! > {pidfile}")
    stop = f"date +%s.%N > {work}/{name}.stop; kill $(cat {pidfile}); rm -f {pidfile}"
    return {"startProgram": start, "stopProgram": stop, "pidFiles": [str(pidfile)]}


def stamp(work: Path, name: str, what: str) -> float:
    return float((work / f"{name}.{what}").read_text())


def test_probe_at_start_up_never_starts_anything(agent: tuple[GroupRunner, Events],
                                                 tag: str) -> None:
    runner, events = agent
    runner.configure([group("g", [resource("p", "Process", {"command": sleeper(tag)})])])
    wait_group(runner, "g", "Offline", 5)
    time.sleep(1.2)  # an offline monitor ran as well
    assert pids_with(tag) == []
    assert res(runner, "g", "p")["state"] == "Offline"
    assert events.kinds() == [("ResourceState", "p", "Offline"), ("GroupState", "", "Offline")]


def test_online_in_dependency_order_with_parallel_branches_and_offline_in_reverse(
        agent: tuple[GroupRunner, Events], tag: str, tmp_path: Path) -> None:
    runner, events = agent
    work = tmp_path / "stamps"
    work.mkdir()
    # web needs app1 and app2; both need data. app1 and app2 take 0.6 s each to start.
    runner.configure([group("shop", [
        resource("web", "Application", stamp_app("web", work, tag), dependsOn=["app1", "app2"]),
        resource("app1", "Application", stamp_app("app1", work, tag, 0.6), dependsOn=["data"]),
        resource("app2", "Application", stamp_app("app2", work, tag, 0.6), dependsOn=["data"]),
        resource("data", "Application", stamp_app("data", work, tag)),
    ])])
    wait_group(runner, "shop", "Offline", 5)
    began = time.monotonic()
    runner.online("shop")
    wait_group(runner, "shop", "Online", 15)
    took = time.monotonic() - began
    data, app1, app2, web = (stamp(work, n, "start") for n in ("data", "app1", "app2", "web"))
    assert data < app1 and data < app2
    # Each takes 0.6 s to start: one after the other, their stamps would be >= 0.6 s apart.
    assert abs(app1 - app2) < 0.3, f"app1 and app2 did not start side by side ({took:.2f} s)"
    assert web > max(app1, app2)
    wait_for(lambda: len(pids_with(tag)) == 4, 5, "four programs running")
    states = [(k, r, s) for k, r, s in events.kinds(since=began) if k == "GroupState"]
    assert states == [("GroupState", "", "Starting"), ("GroupState", "", "Online")]

    runner.offline("shop")
    wait_group(runner, "shop", "Offline", 15)
    data, app1, app2, web = (stamp(work, n, "stop") for n in ("data", "app1", "app2", "web"))
    assert web < app1 and web < app2
    assert data > max(app1, app2)
    wait_for(lambda: pids_with(tag) == [], 5, "every program stopped")


def test_killed_process_is_restarted_then_faults_the_group(
        agent: tuple[GroupRunner, Events], tag: str) -> None:
    runner, events = agent
    runner.configure([group("g", [
        resource("app", "Process", {"command": sleeper(tag, "app")}, restartLimit=1),
        resource("side", "Process", {"command": sleeper(tag, "side")}, dependsOn=["app"]),
    ])])
    wait_group(runner, "g", "Offline", 5)
    runner.online("g")
    wait_group(runner, "g", "Online", 10)
    first = pid_of(runner, "g", "app")

    killed = time.monotonic()
    os.kill(first, signal.SIGKILL)
    seen, payload = events.wait("ResourceRestarted", 5, since=killed, resource="app")
    assert payload["restarts"] == 1
    assert seen - killed < 0.2
    wait_group(runner, "g", "Online", 10)
    second = pid_of(runner, "g", "app")
    assert second != first and running(second) and not running(first)
    assert res(runner, "g", "app")["restarts"] == 1

    killed = time.monotonic()
    os.kill(second, signal.SIGKILL)
    seen, payload = events.wait("ResourceFaulted", 5, since=killed, resource="app")
    assert payload["reason"] == "MonitorOffline" and payload["message"] == "killed by SIGKILL"
    assert seen - killed < 0.2
    wait_group(runner, "g", "Faulted", 10)
    assert res(runner, "g", "app")["state"] == "Faulted"
    assert res(runner, "g", "side")["state"] == "Offline"  # taken down with the group
    assert pids_with(tag) == []
    # The group went straight from Online through Stopping to Faulted.
    assert [s for k, _, s in events.kinds(since=killed) if k == "GroupState"] == [
        "Stopping", "Faulted"]
    # Faulted: online refused until cleared.
    with pytest.raises(GroupError, match="faulted critical resource"):
        runner.online("g")
    runner.clear("g")
    wait_group(runner, "g", "Offline", 5)
    assert res(runner, "g", "app")["restarts"] == 0
    runner.online("g")
    wait_group(runner, "g", "Online", 10)


def test_non_critical_fault_leaves_the_group_partial(agent: tuple[GroupRunner, Events],
                                                     tag: str) -> None:
    runner, events = agent
    runner.configure([group("g", [
        resource("app", "Process", {"command": sleeper(tag, "app")}),
        resource("extra", "Process", {"command": sleeper(tag, "extra")}, critical=False),
    ])])
    wait_group(runner, "g", "Offline", 5)
    runner.online("g")
    wait_group(runner, "g", "Online", 10)
    app = pid_of(runner, "g", "app")
    killed = time.monotonic()
    os.kill(pid_of(runner, "g", "extra"), signal.SIGKILL)
    events.wait("ResourceFaulted", 5, since=killed, resource="extra")
    wait_group(runner, "g", "Partial", 5)
    time.sleep(0.3)
    assert res(runner, "g", "extra")["state"] == "Faulted"
    assert res(runner, "g", "app")["state"] == "Online" and running(app)


def test_fault_detection_latency_process(agent: tuple[GroupRunner, Events], tag: str) -> None:
    """SIGKILL to the event, 20 times (restarts in place), then the fault itself."""
    runner, events = agent
    trials = 20
    runner.configure([group("g", [resource("app", "Process", {"command": sleeper(tag)},
                                           restartLimit=trials, confIntervalSeconds=0)])])
    wait_group(runner, "g", "Offline", 5)
    runner.online("g")
    wait_group(runner, "g", "Online", 10)
    restart: list[float] = []
    for _ in range(trials):
        pid = pid_of(runner, "g", "app")
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        seen, _ = events.wait("ResourceRestarted", 5, since=killed, resource="app")
        restart.append(seen - killed)
        wait_group(runner, "g", "Online", 10)
    faults: list[float] = []
    killed = time.monotonic()
    os.kill(pid_of(runner, "g", "app"), signal.SIGKILL)
    seen, _ = events.wait("ResourceFaulted", 5, since=killed, resource="app")
    faults.append(seen - killed)
    figures = summary(restart)
    print(f"\nProcess fault detection (SIGKILL -> event): {json.dumps(figures)}; "
          f"last kill -> ResourceFaulted {faults[0] * 1000:.2f} ms")
    assert figures["median_ms"] < 200
    assert max(restart + faults) < 1.0


def test_restarted_agent_adopts_the_running_process(tmp_path: Path, tag: str) -> None:
    """A first agent process starts the group and exits; a second one adopts it."""
    state = tmp_path / "state"
    driver = tmp_path / "driver.py"
    driver.write_text(f"""
import json, sys
sys.path[:0] = [{str(HERE)!r}, {str(REPO / 'operator')!r}]
from resource_helpers import Events, group, resource, sleeper, wait_group, pid_of
from guestha.agent.groups import GroupRunner
runner = GroupRunner({str(state)!r}, Events())
runner.configure([group("g", [resource("p", "Process", {{"command": sleeper({tag!r})}})])])
wait_group(runner, "g", "Offline", 5)
runner.online("g")
wait_group(runner, "g", "Online", 5)
print(json.dumps({{"pid": pid_of(runner, "g", "p")}}))
runner.close()
""")
    first = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True,
                           timeout=60)
    assert first.returncode == 0, first.stderr
    pid = json.loads(first.stdout.strip().splitlines()[-1])["pid"]
    assert running(pid), "closing the runner (agent exit) must leave the process running"

    with running_runner(str(state), tag) as (runner, events):
        runner.configure([group("g", [resource("p", "Process", {"command": sleeper(tag)})])])
        wait_group(runner, "g", "Online", 5)
        assert res(runner, "g", "p")["message"] == f"pid {pid} (adopted)"
        runner.online("g")  # the operator asks again: nothing new is started
        time.sleep(0.3)
        assert pids_with(tag) == [pid]
        # Its death is seen at once although this agent is not its parent (pidfd).
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        seen, _ = events.wait("ResourceFaulted", 5, since=killed, resource="p")
        assert seen - killed < 0.2
        wait_group(runner, "g", "Faulted", 5)


def test_tolerance_limit(agent: tuple[GroupRunner, Events], tmp_path: Path) -> None:
    runner, events = agent
    flag = tmp_path / "up"
    app = {"startProgram": f"touch {flag}", "stopProgram": f"rm -f {flag}",
           "monitorProgram": f"test -e {flag} && exit 110; exit 100"}
    runner.configure([group("g", [resource("a", "Application", app, toleranceLimit=1)])])
    wait_group(runner, "g", "Offline", 5)
    runner.online("g")
    wait_group(runner, "g", "Online", 5)
    gone = time.monotonic()
    flag.unlink()
    wait_for(lambda: "1 of 1 tolerated" in res(runner, "g", "a")["message"], 3,
             "the first offline result tolerated")
    assert res(runner, "g", "a")["state"] == "Online"
    seen, _ = events.wait("ResourceFaulted", 4, since=gone, resource="a")
    assert 1.0 < seen - gone < 3.5  # the second offline result, one interval later
    wait_group(runner, "g", "Faulted", 5)


@pytest.mark.parametrize(("wait_limit", "expected"), [(0, "Faulted"), (3, "Online")])
def test_online_wait_limit(agent: tuple[GroupRunner, Events], tmp_path: Path,
                           wait_limit: int, expected: str) -> None:
    """The application reports online 1.5 s after its start program returned."""
    runner, _ = agent
    flag = tmp_path / "up"
    app = {"startProgram": f"(sleep 1.5; touch {flag}) >/dev/null 2>&1 &",
           "stopProgram": f"rm -f {flag}", "cleanProgram": f"rm -f {flag}",
           "monitorProgram": f"test -e {flag} && exit 110; exit 100"}
    runner.configure([group("g", [resource("a", "Application", app,
                                           onlineWaitLimit=wait_limit)])])
    wait_group(runner, "g", "Offline", 5)
    runner.online("g")
    wait_group(runner, "g", expected, 10)
    if expected == "Faulted":
        assert "OnlineWaitLimit 0" in res(runner, "g", "a")["message"]


def test_fault_on_monitor_timeouts(agent: tuple[GroupRunner, Events], tmp_path: Path) -> None:
    runner, events = agent
    up, hang = tmp_path / "up", tmp_path / "hang"
    app = {"startProgram": f"touch {up}", "stopProgram": f"rm -f {up}",
           "cleanProgram": f"rm -f {up} {hang}",
           "monitorProgram": f"test -e {hang} && sleep 30; test -e {up} && exit 110; exit 100"}
    spec = resource("a", "Application", app, faultOnMonitorTimeouts=2)
    spec["monitor"]["timeoutSeconds"] = 1
    runner.configure([group("g", [spec])])
    wait_group(runner, "g", "Offline", 5)
    runner.online("g")
    wait_group(runner, "g", "Online", 5)
    hung = time.monotonic()
    hang.touch()
    wait_for(lambda: res(runner, "g", "a")["monitorTimeouts"] == 1, 5, "one monitor timeout")
    assert res(runner, "g", "a")["state"] == "Online"  # one timeout is not a fault
    _, payload = events.wait("ResourceFaulted", 8, since=hung, resource="a")
    assert payload["reason"] == "MonitorTimeout"
    assert "monitor timed out (2 in a row)" in payload["message"]
    wait_group(runner, "g", "Faulted", 5)


def test_conf_interval_resets_the_restart_count(agent: tuple[GroupRunner, Events],
                                                tag: str) -> None:
    runner, events = agent
    runner.configure([group("g", [resource("p", "Process", {"command": sleeper(tag)},
                                           restartLimit=1, confIntervalSeconds=2)])])
    wait_group(runner, "g", "Offline", 5)
    runner.online("g")
    wait_group(runner, "g", "Online", 5)
    os.kill(pid_of(runner, "g", "p"), signal.SIGKILL)
    wait_for(lambda: res(runner, "g", "p")["restarts"] == 1
             and res(runner, "g", "p")["state"] == "Online", 5, "the first restart")
    time.sleep(3.2)  # online for longer than ConfInterval (and monitored since)
    assert res(runner, "g", "p")["restarts"] == 0
    killed = time.monotonic()
    os.kill(pid_of(runner, "g", "p"), signal.SIGKILL)
    events.wait("ResourceRestarted", 5, since=killed, resource="p")  # restarted, not faulted
    wait_group(runner, "g", "Online", 5)
    assert not events.find("ResourceFaulted")


def test_bad_configuration_is_refused_and_changes_nothing(agent: tuple[GroupRunner, Events],
                                                          tag: str) -> None:
    runner, _ = agent
    good = group("g", [resource("p", "Process", {"command": sleeper(tag)})])
    runner.configure([good])
    wait_group(runner, "g", "Offline", 5)
    bad = group("g", [resource("p", "Process", {"command": sleeper(tag), "stopSignal": "NOPE"}),
                      resource("m", "Mount", {"device": "/dev/vdb"})])
    with pytest.raises(FieldError) as refused:
        runner.configure([bad, group("h", [])])
    message = str(refused.value)
    assert "groups[g].resources[p].attributes.stopSignal: not a signal name" in message
    assert "groups[g].resources[m].attributes.mountPoint: required for Mount" in message
    assert list(runner.snapshot()["groups"]) == ["g"]
    assert [r["name"] for r in runner.snapshot()["groups"]["g"]["resources"]] == ["p"]
    with pytest.raises(GroupError, match="no service group 'nope'"):
        runner.online("nope")


def test_changed_attributes_apply_at_the_next_online(agent: tuple[GroupRunner, Events],
                                                     tag: str) -> None:
    runner, _ = agent
    before = group("g", [resource("p", "Process", {"command": sleeper(tag, "v1")})])
    runner.configure([before])
    wait_group(runner, "g", "Offline", 5)
    runner.online("g")
    wait_group(runner, "g", "Online", 5)
    pid = pid_of(runner, "g", "p")
    after = group("g", [resource("p", "Process", {"command": sleeper(tag, "v2")},
                                 restartLimit=3)])
    runner.configure([after])
    snapshot = res(runner, "g", "p")
    assert snapshot["pendingChange"] is True and snapshot["state"] == "Online"
    assert pid_of(runner, "g", "p") == pid  # still the old program, not restarted
    runner.offline("g")
    wait_group(runner, "g", "Offline", 5)
    runner.online("g")
    wait_group(runner, "g", "Online", 5)
    assert res(runner, "g", "p")["pendingChange"] is False
    new = pid_of(runner, "g", "p")
    assert "v2" in Path(f"/proc/{new}/cmdline").read_bytes().decode(errors="replace")


def test_removed_group_is_taken_offline_first(agent: tuple[GroupRunner, Events],
                                              tag: str, tmp_path: Path) -> None:
    runner, _ = agent
    runner.configure([group("g", [resource("p", "Process", {"command": sleeper(tag)})]),
                      group("keep", [])])
    wait_group(runner, "g", "Offline", 5)
    runner.online("g")
    wait_group(runner, "g", "Online", 5)
    assert len(pids_with(tag)) == 1
    runner.configure([group("keep", [])])
    assert runner.wait_until(lambda s: "g" not in s["groups"], 10)
    assert pids_with(tag) == []
    assert not (tmp_path / "state" / "resources" / "g").exists()


def test_self_fencing_takes_failover_groups_offline_and_cleans(
        agent: tuple[GroupRunner, Events], tag: str, tmp_path: Path) -> None:
    runner, events = agent
    pidfile = tmp_path / "stuck.pid"
    stuck = {  # its stop program hangs: only clean gets it down
        "startProgram": f"python3 -c 'import time; time.sleep(1000)' {tag} stuck "
                        f">/dev/null 2>&1 & echo $! > {pidfile}",
        "stopProgram": "sleep 60", "pidFiles": [str(pidfile)]}
    runner.configure([
        group("fo", [resource("p", "Process", {"command": sleeper(tag, "fo")}),
                     resource("stuck", "Application", stuck)]),
        group("par", [resource("p", "Process", {"command": sleeper(tag, "par")})],
              kind="Parallel"),
        # Still starting when the agent fences itself: its start program never returns.
        group("slow", [resource("s", "Application", {
            "startProgram": f"python3 -c 'import time; time.sleep(1000)' {tag} slow",
            "stopProgram": "true", "monitorProgram": "exit 100"})]),
    ])
    for name in ("fo", "par"):
        wait_group(runner, name, "Offline", 5)
        runner.online(name)
        wait_group(runner, name, "Online", 10)
    wait_group(runner, "slow", "Offline", 5)
    runner.online("slow")
    wait_group(runner, "slow", "Starting", 5)
    wait_for(lambda: any("slow" in cmdline(p) for p in pids_with(tag)), 5, "slow start")
    par_pid = pid_of(runner, "par", "p")
    began = time.monotonic()
    assert runner.take_failover_groups_offline("no quorum for 10 s", timeout=10.0)
    took = time.monotonic() - began
    assert took < 10.0
    assert runner.snapshot()["groups"]["fo"]["state"] == "Offline"
    assert runner.snapshot()["groups"]["slow"]["state"] in ("Offline", "Faulted")
    assert [p for p in pids_with(tag) if p != par_pid] == []
    assert running(par_pid) and runner.snapshot()["groups"]["par"]["state"] == "Online"
    stuck_state = res(runner, "fo", "stuck")
    assert stuck_state["state"] == "Offline" and "(cleaned)" in stuck_state["message"]
    _, payload = events.wait("ResourceState", 1, since=began, resource="p", group="fo",
                             state="Stopping")
    assert payload["reason"] == "SelfFence" and payload["message"] == "no quorum for 10 s"


def in_thread(call: Any, timeout: float) -> dict[str, Any]:
    """Run `call` in a daemon thread; {"result": ...} if it returned within `timeout`,
    {} if it hangs (the thread is left behind, so a deadlock fails the test, not the run)."""
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", call()), daemon=True)
    thread.start()
    thread.join(timeout)
    return out


def test_self_fencing_while_group_events_are_slow_to_take(tmp_path: Path, tag: str) -> None:
    """Self-fencing asks each group whether it is down while groups report their states.
    Taking the runner's and a group's locks in opposite orders there was a deadlock (the
    member then heartbeats on but never fences); an event consumer that takes its time
    (half a second for a group's Stopping) makes the interleaving certain."""
    events = Events()

    def slow_emit(kind: str, payload: dict[str, Any]) -> None:
        events(kind, payload)
        if kind == "GroupState" and payload["state"] == "Stopping":
            time.sleep(0.5)

    runner = GroupRunner(str(tmp_path / "state"), slow_emit)
    try:
        runner.configure([group("fo", [resource("p", "Process",
                                                {"command": sleeper(tag, "fo")})])])
        wait_group(runner, "fo", "Offline", 5)
        runner.online("fo")
        wait_group(runner, "fo", "Online", 10)
        fenced = in_thread(lambda: runner.take_failover_groups_offline("test", 10.0), 20)
        assert fenced == {"result": True}, "self-fencing hung (deadlock)"
        assert pids_with(tag) == []
        status = in_thread(runner.snapshot, 5)
        assert status["result"]["groups"]["fo"]["state"] == "Offline"
    finally:
        in_thread(runner.close, 10)
        kill_tagged(tag)


@pytest.mark.skipif(not OCF_ANYTHING.exists(), reason="needs resource-agents (hack/setup)")
def test_ocf_anything_group_restart_and_fault(agent: tuple[GroupRunner, Events],
                                              tmp_path: Path) -> None:
    runner, events = agent
    pidfile = tmp_path / "anything.pid"
    duration = f"{1000 + int.from_bytes(os.urandom(3), 'big') / 1000:.3f}"
    runner.configure([group("o", [
        resource("dummy", "OCF", {"agent": "heartbeat:Dummy",
                                  "parameters": {"state": str(tmp_path / "dummy.state")}}),
        resource("any", "OCF", {"agent": "heartbeat:anything", "parameters": {
            "binfile": "/bin/sleep", "cmdline_options": duration, "pidfile": str(pidfile)}},
            dependsOn=["dummy"], restartLimit=1),
    ])])
    wait_group(runner, "o", "Offline", 10)
    runner.online("o")
    wait_group(runner, "o", "Online", 20)
    first = int(pidfile.read_text())
    killed = time.monotonic()
    os.kill(first, signal.SIGKILL)
    events.wait("ResourceRestarted", 10, since=killed, resource="any")
    wait_group(runner, "o", "Online", 20)
    second = int(pidfile.read_text())
    assert second != first and running(second)
    killed = time.monotonic()
    os.kill(second, signal.SIGKILL)
    events.wait("ResourceFaulted", 10, since=killed, resource="any")
    wait_group(runner, "o", "Faulted", 20)
    assert res(runner, "o", "dummy")["state"] == "Offline"


@pytest.mark.skipif(os.geteuid() != 0, reason="guest hosts need root")
@pytest.mark.skipif(not OCF_ANYTHING.exists(), reason="needs resource-agents (hack/setup)")
def test_fault_detection_latency_in_a_guest_host(tmp_path: Path) -> None:
    """SIGKILL -> event inside a guest (whose PID 1 reaps orphans at once, as systemd does):
    Process (seen through the child wait / pidfd) and OCF anything (seen by its 1 s monitor,
    killed at a random moment of the interval)."""
    trials = 20
    with guest_host(str(tmp_path / "guests"), "lat") as guest:
        code = "import test_agent_groups as t\nt.latency_scenario(sys.argv[1], int(sys.argv[2]))"
        figures = {kind: json.loads(run_in_guest(guest, code, kind, str(trials),
                                                 timeout=300).strip().splitlines()[-1])
                   for kind in ("Process", "OCF")}
    print(f"\nfault detection latency in a guest host (ms): {json.dumps(figures)}")
    assert figures["Process"]["n"] == figures["OCF"]["n"] == trials
    assert figures["Process"]["median_ms"] < 200 and figures["Process"]["max_ms"] < 1000
    # Polling: the monitor interval (1 s) bounds it, plus the agent's own monitor run.
    assert figures["OCF"]["max_ms"] < 2000


def latency_scenario(kind: str, trials: int) -> None:
    """Runs inside a guest host: kill the resource's process `trials` times; print figures."""
    import random
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="ghtest-lat-"))
    tag = new_tag()
    pidfile = work / "anything.pid"
    if kind == "Process":
        spec = resource("r", "Process", {"command": sleeper(tag)})
    else:
        spec = resource("r", "OCF", {"agent": "heartbeat:anything", "parameters": {
            "binfile": "/bin/sleep", "cmdline_options": "1000", "pidfile": str(pidfile)}})
    spec.update(restartLimit=trials + 1, confIntervalSeconds=0)
    latencies: list[float] = []
    with running_runner(str(work / "state"), tag) as (runner, events):
        runner.configure([group("g", [spec])])
        wait_group(runner, "g", "Offline", 10)
        runner.online("g")
        for _ in range(trials):
            wait_group(runner, "g", "Online", 20)
            time.sleep(random.uniform(0.05, 1.05))  # anywhere in the monitor interval
            pid = pid_of(runner, "g", "r") if kind == "Process" else int(pidfile.read_text())
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            seen, _ = events.wait("ResourceRestarted", 10, since=killed, resource="r")
            latencies.append(seen - killed)
    print(json.dumps(summary(latencies)))
