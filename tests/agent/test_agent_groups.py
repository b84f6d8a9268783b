"""Service groups run by the agent's GroupRunner, with real processes and programs.

What a user would notice: resources start in dependency order (independent branches at the
same time) and stop in reverse; a killed process is restarted in place within restartLimit
and then faults the group (critical) or leaves it Partial (non-critical), the fault
announced before anything else happens; an agent restart adopts running processes; VCS's
ToleranceLimit, OnlineWaitLimit, FaultOnMonitorTimeouts and ConfInterval behave as
documented (their rules, edge by edge, are tables in tests/unit/test_agent_verdicts.py).

No test here times anything: orders, counts and states only, and waits with generous
bounds. How fast is in hack/bench/resources.py.
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

from guestha.agent.groups import GroupError, GroupRunner
from guestha.protocol.fields import FieldError
from kits.resources import (
    PUSHED,
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
    wait_for,
    wait_group,
)

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


def journaled_app(name: str, work: Path, tag: str, start_delay: float = 0.0) -> dict[str, Any]:
    """An Application that runs a tagged sleeper and writes "NAME starting" when its start
    program begins, "NAME started" when it ends (`start_delay` s later) and "NAME stopping"
    into one journal shared by the group, in the order things happen."""
    pidfile, journal = work / f"{name}.pid", work / "journal"
    start = (f"echo '{name} starting' >> {journal}; sleep {start_delay}; "
             f"python3 -c 'import time; time.sleep(1000)' {tag} >/dev/null 2>&1 & "
             f"echo $! > {pidfile}; echo '{name} started' >> {journal}")
    stop = f"echo '{name} stopping' >> {journal}; kill $(cat {pidfile}); rm -f {pidfile}"
    return {"startProgram": start, "stopProgram": stop, "pidFiles": [str(pidfile)]}


def journal(work: Path) -> list[str]:
    return (work / "journal").read_text().splitlines()


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
        resource("web", "Application", journaled_app("web", work, tag),
                 dependsOn=["app1", "app2"]),
        resource("app1", "Application", journaled_app("app1", work, tag, 0.6),
                 dependsOn=["data"]),
        resource("app2", "Application", journaled_app("app2", work, tag, 0.6),
                 dependsOn=["data"]),
        resource("data", "Application", journaled_app("data", work, tag)),
    ])])
    wait_group(runner, "shop", "Offline", 5)
    began = time.monotonic()
    runner.online("shop")
    wait_group(runner, "shop", "Online", 15)
    said = journal(work)
    at = {line: said.index(line) for line in said}
    assert len(at) == len(said) == 8, said  # each started once
    assert at["data started"] < min(at["app1 starting"], at["app2 starting"])
    # Side by side: each of app1 and app2 began before the other had finished starting
    # (one after the other, one would finish before the other began).
    assert at["app1 starting"] < at["app2 started"], said
    assert at["app2 starting"] < at["app1 started"], said
    assert at["web starting"] > max(at["app1 started"], at["app2 started"])
    wait_for(lambda: len(pids_with(tag)) == 4, 5, "four programs running")
    states = [(k, r, s) for k, r, s in events.kinds(since=began) if k == "GroupState"]
    assert states == [("GroupState", "", "Starting"), ("GroupState", "", "Online")]

    runner.offline("shop")
    wait_group(runner, "shop", "Offline", 15)
    said = journal(work)[8:]
    at = {line: said.index(line) for line in said}
    assert len(at) == len(said) == 4, said
    assert at["web stopping"] < min(at["app1 stopping"], at["app2 stopping"])
    assert at["data stopping"] > max(at["app1 stopping"], at["app2 stopping"])
    wait_for(lambda: pids_with(tag) == [], 5, "every program stopped")


def test_killed_process_is_restarted_then_faults_the_group(
        agent: tuple[GroupRunner, Events], tag: str) -> None:
    runner, events = agent
    runner.configure([group("g", [
        resource("app", "Process", {"command": sleeper(tag, "app")}, restartLimit=1,
                 monitor=PUSHED),
        resource("side", "Process", {"command": sleeper(tag, "side")}, dependsOn=["app"]),
    ])])
    wait_group(runner, "g", "Offline", 5)
    runner.online("g")
    wait_group(runner, "g", "Online", 10)
    first = pid_of(runner, "g", "app")

    killed = time.monotonic()
    os.kill(first, signal.SIGKILL)
    # Seen through its exit, not a monitor (PUSHED): announced as a restart, then done.
    _, payload = events.wait("ResourceRestarted", 10, since=killed, resource="app")
    assert payload["restarts"] == 1
    wait_group(runner, "g", "Online", 10)
    assert [e for e in events.kinds(since=killed) if e[1] == "app"] == [
        ("ResourceState", "app", "Starting"), ("ResourceRestarted", "app", ""),
        ("ResourceState", "app", "Online")]
    second = pid_of(runner, "g", "app")
    assert second != first and running(second) and not running(first)
    assert res(runner, "g", "app")["restarts"] == 1

    killed = time.monotonic()
    os.kill(second, signal.SIGKILL)
    _, payload = events.wait("ResourceFaulted", 10, since=killed, resource="app")
    assert payload["reason"] == "MonitorOffline" and payload["message"] == "killed by SIGKILL"
    wait_group(runner, "g", "Faulted", 10)
    # The fault is announced first, before clean runs; Faulted only once clean stopped it.
    after = events.kinds(since=killed)
    assert after[0] == ("ResourceFaulted", "app", "MonitorOffline"), after
    assert [e for e in after if e[1] == "app"] == [
        ("ResourceFaulted", "app", "MonitorOffline"), ("ResourceState", "app", "Stopping"),
        ("ResourceState", "app", "Faulted")], after
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


def test_restarts_in_place_up_to_the_limit_then_a_fault(
        agent: tuple[GroupRunner, Events], tag: str) -> None:
    """RestartLimit 20 (ConfInterval 0: the count never resets by itself): twenty kills,
    each seen through the exit and restarted in place, counted; the 21st faults it."""
    runner, events = agent
    trials = 20
    runner.configure([group("g", [resource("app", "Process", {"command": sleeper(tag)},
                                           restartLimit=trials, confIntervalSeconds=0,
                                           monitor=PUSHED)])])
    wait_group(runner, "g", "Offline", 5)
    runner.online("g")
    wait_group(runner, "g", "Online", 10)
    began = time.monotonic()
    pids = []
    for count in range(1, trials + 1):
        pid = pid_of(runner, "g", "app")
        pids.append(pid)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        _, payload = events.wait("ResourceRestarted", 10, since=killed, resource="app")
        assert payload["restarts"] == count
        wait_group(runner, "g", "Online", 10)
        assert res(runner, "g", "app")["restarts"] == count
    assert len(set(pids)) == trials and not any(running(p) for p in pids)
    killed = time.monotonic()
    os.kill(pid_of(runner, "g", "app"), signal.SIGKILL)
    _, payload = events.wait("ResourceFaulted", 10, since=killed, resource="app")
    assert payload["reason"] == "MonitorOffline"
    wait_group(runner, "g", "Faulted", 10)
    assert len(events.find("ResourceRestarted", began)) == trials
    assert len(events.find("ResourceFaulted", began)) == 1
    assert pids_with(tag) == []


def test_restarted_agent_adopts_the_running_process(tmp_path: Path, tag: str) -> None:
    """A first agent process starts the group and exits; a second one adopts it."""
    state = tmp_path / "state"
    driver = tmp_path / "driver.py"
    driver.write_text(f"""
import json, sys
sys.path[:0] = [{str(HERE)!r}, {str(REPO / 'tests')!r}, {str(REPO / 'operator')!r}]
from kits.resources import Events, group, resource, sleeper, wait_group, pid_of
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
        runner.configure([group("g", [resource("p", "Process", {"command": sleeper(tag)},
                                               monitor=PUSHED)])])
        wait_group(runner, "g", "Online", 5)
        assert res(runner, "g", "p")["message"] == f"pid {pid} (adopted)"
        runner.online("g")  # the operator asks again: nothing new is started
        time.sleep(0.3)
        assert pids_with(tag) == [pid]
        # Its death is seen through its exit (PUSHED: no monitor would find it in time)
        # although this agent is not its parent (pidfd).
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        events.wait("ResourceFaulted", 10, since=killed, resource="p")
        wait_group(runner, "g", "Faulted", 5)


def test_tolerance_limit(agent: tuple[GroupRunner, Events], tmp_path: Path) -> None:
    """ToleranceLimit 1: the first offline answer is tolerated, the second faults it."""
    runner, events = agent
    flag, said = tmp_path / "up", tmp_path / "said"
    app = {"startProgram": f"touch {flag}", "stopProgram": f"rm -f {flag}",
           "cleanProgram": f"rm -f {flag}; echo clean >> {said}",
           # every answer written down, in order
           "monitorProgram": f"if test -e {flag}; then echo online >> {said}; exit 110; fi; "
                             f"echo offline >> {said}; exit 100"}
    runner.configure([group("g", [resource("a", "Application", app, toleranceLimit=1)])])
    wait_group(runner, "g", "Offline", 5)
    runner.online("g")
    wait_group(runner, "g", "Online", 5)
    gone = time.monotonic()
    flag.unlink()
    wait_for(lambda: "1 of 1 tolerated" in res(runner, "g", "a")["message"], 10,
             "the first offline result tolerated")
    assert res(runner, "g", "a")["state"] == "Online"
    _, fault = events.wait("ResourceFaulted", 10, since=gone, resource="a")
    assert fault["reason"] == "MonitorOffline"
    wait_group(runner, "g", "Faulted", 5)
    # Between the last online answer and the clean: exactly ToleranceLimit + 1 offline ones.
    answers = said.read_text().split()
    before_clean = answers[:answers.index("clean")]
    last_online = len(before_clean) - before_clean[::-1].index("online")
    assert before_clean[last_online:] == ["offline", "offline"], answers


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


def test_a_restart_starts_the_monitor_timeout_count_afresh(
        agent: tuple[GroupRunner, Events], tmp_path: Path) -> None:
    """FaultOnMonitorTimeouts 2 recovers it (a restart); after the restart, one timeout is
    one of two again, not the third in a row."""
    runner, events = agent
    up, hang = tmp_path / "up", tmp_path / "hang"
    app = {"startProgram": f"touch {up}", "stopProgram": f"rm -f {up}",
           "cleanProgram": f"rm -f {up} {hang}",
           "monitorProgram": f"test -e {hang} && sleep 30; test -e {up} && exit 110; exit 100"}
    spec = resource("a", "Application", app, faultOnMonitorTimeouts=2, restartLimit=1)
    spec["monitor"]["timeoutSeconds"] = 1
    runner.configure([group("g", [spec])])
    wait_group(runner, "g", "Offline", 5)
    runner.online("g")
    wait_group(runner, "g", "Online", 5)
    mark = time.monotonic()
    hang.touch()
    _, restarted = events.wait("ResourceRestarted", 15, since=mark, resource="a")
    assert restarted["restarts"] == 1
    events.wait("ResourceState", 15, since=mark, resource="a", state="Online")
    assert res(runner, "g", "a")["monitorTimeouts"] == 0
    mark = time.monotonic()
    hang.touch()
    wait_for(lambda: res(runner, "g", "a")["monitorTimeouts"] >= 1, 10, "a timeout")
    first = res(runner, "g", "a")
    assert (first["state"], first["monitorTimeouts"]) == ("Online", 1), first
    _, fault = events.wait("ResourceFaulted", 15, since=mark, resource="a")
    assert fault["reason"] == "MonitorTimeout"
    assert "monitor timed out (2 in a row)" in fault["message"], fault
    wait_group(runner, "g", "Faulted", 10)


def test_a_tolerated_offline_starts_the_conf_interval_again(
        agent: tuple[GroupRunner, Events], tmp_path: Path) -> None:
    """ConfInterval counts time online with every monitor saying so: offline results that
    ToleranceLimit let pass, one each few monitors, keep the restart count; once they
    stop, ConfInterval online resets it."""
    runner, events = agent
    up, blip, said = tmp_path / "up", tmp_path / "blip", tmp_path / "said"
    app = {"startProgram": f"touch {up}", "stopProgram": f"rm -f {up}",
           "cleanProgram": f"rm -f {up}",
           # one "offline" answer per blip file, which that answer removes; every answer
           # is written down
           "monitorProgram": f"if [ -e {blip} ]; then rm -f {blip}; echo blip >> {said}; "
                             f"exit 100; fi; test -e {up} && echo online >> {said} "
                             f"&& exit 110; exit 100"}
    runner.configure([group("g", [resource("a", "Application", app, toleranceLimit=1,
                                           restartLimit=1, confIntervalSeconds=4)])])
    wait_group(runner, "g", "Offline", 5)
    runner.online("g")
    wait_group(runner, "g", "Online", 5)
    mark = time.monotonic()
    up.unlink()  # two offline results in a row: past ToleranceLimit, so a restart
    events.wait("ResourceRestarted", 10, since=mark, resource="a")
    events.wait("ResourceState", 10, since=mark, resource="a", state="Online")
    # One offline answer, tolerated, then as soon as an online answer followed it the
    # next: a few monitors (1 s each) apart, never 4 s of online answers in a row, for
    # three times ConfInterval.
    def answered_since(count: int) -> bool:
        """An offline answer to a blip, then an online one, after the first `count`."""
        new = said.read_text().split()[count:]
        return "blip" in new and "online" in new[new.index("blip"):]

    for _ in range(8):
        before = len(said.read_text().split())
        blip.touch()
        wait_for(lambda: answered_since(before), 10,  # noqa: B023
                 "an offline answer, then an online one")
        snapshot = res(runner, "g", "a")
        assert (snapshot["state"], snapshot["restarts"]) == ("Online", 1), snapshot
    # Steady now: after ConfInterval the count starts afresh.
    wait_for(lambda: res(runner, "g", "a")["restarts"] == 0, 15, "the restart count reset")
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
    # True: every Failover group down by the deadline (the runner's own verdict); how long
    # it takes is the figure `selfFence` of hack/bench/resources.py.
    assert runner.take_failover_groups_offline("no quorum for 10 s", timeout=10.0)
    assert runner.snapshot()["groups"]["fo"]["state"] == "Offline"
    assert runner.snapshot()["groups"]["slow"]["state"] in ("Offline", "Faulted")
    assert [p for p in pids_with(tag) if p != par_pid] == []
    assert running(par_pid) and runner.snapshot()["groups"]["par"]["state"] == "Online"
    stuck_state = res(runner, "fo", "stuck")
    assert stuck_state["state"] == "Offline" and "(cleaned)" in stuck_state["message"]
    _, payload = events.wait("ResourceState", 1, since=began, resource="p", group="fo",
                             state="Stopping")
    assert payload["reason"] == "SelfFence" and payload["message"] == "no quorum for 10 s"


def test_self_fencing_while_a_group_is_about_to_start_a_resource(
        agent: tuple[GroupRunner, Events], tag: str) -> None:
    """Self-fencing right as a group's worker goes to start a resource (the group is
    Starting, its resource not yet): the resource must not start after the abort. It
    did, when the worker's start came just after the abort: its online command re-armed
    the resource, the start program hung, and the group's offline waited behind it past
    the self-fencing deadline. Ten times, to meet that moment."""
    runner, _ = agent
    runner.configure([group("slow", [resource("s", "Application", {
        "startProgram": f"python3 -c 'import time; time.sleep(1000)' {tag} slow",
        "stopProgram": "true", "monitorProgram": "exit 100"})])])
    wait_group(runner, "slow", "Offline", 5)
    for attempt in range(10):
        runner.online("slow")
        wait_group(runner, "slow", "Starting", 5)
        fenced = runner.take_failover_groups_offline("no quorum", timeout=5.0)
        state = runner.snapshot()["groups"]["slow"]["state"]
        assert fenced and state in ("Offline", "Faulted"), (attempt, state)
        assert pids_with(tag) == [], attempt
        runner.clear("slow")
        wait_group(runner, "slow", "Offline", 5)


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
def test_kills_in_a_guest_host_are_each_restarted(tmp_path: Path) -> None:
    """Inside a guest (whose PID 1 reaps orphans at once, as systemd does), 20 SIGKILLs
    each: a Process, seen through its exit (its monitor interval is an hour), and an OCF
    heartbeat:anything, found by its 1 s monitor; each restarted in place and counted.
    (hack/bench/resources.py times the same scenario: faultDetectionInAGuestHost.)"""
    trials = 20
    with guest_host(str(tmp_path / "guests"), "kills") as guest:
        code = ("import json, kits.resources as h\n"
                "print(json.dumps(h.kill_scenario(sys.argv[1], int(sys.argv[2]), False)))")
        found = {kind: json.loads(run_in_guest(guest, code, kind, str(trials),
                                               timeout=300).strip().splitlines()[-1])
                 for kind in ("Process", "OCF")}
    for kind, outcome in found.items():
        assert outcome["restarts"] == list(range(1, trials + 1)), (kind, outcome)
        assert outcome["faults"] == 0 and len(outcome["seconds"]) == trials, (kind, outcome)
