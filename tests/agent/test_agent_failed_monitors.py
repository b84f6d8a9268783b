"""A resource whose monitor fails is never Offline: it may still run.

Pacemaker reads an OCF monitor's 7 as "not running" and every other failure (1 generic
error, 2 arguments, 3 unimplemented, 4 permissions, 5 not installed, 6 not configured,
9 failed promoted, a timeout) as "failed, may still run": such a resource must be stopped,
and the stop confirmed, before it may run anywhere else. A systemd unit that is activating
or deactivating is not stopped either. What the operator must never read in those cases
is Offline (or Faulted) for the resource or its group, since that is its licence to start
the group on another member.

Real agents: Debian's heartbeat:anything (a real process; its monitor_hook makes a
running process fail its monitor with 1) and heartbeat:Dummy, an OCF agent of the test's
own that answers any code, and a unit under the guest host's init for systemd.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guestha.agent.groups import GroupRunner
from guestha.agent.resources import ExitWatcher, ResourceContext, create
from guestha.agent.resources import ocf as ocf_module
from kits.resources import (
    Events,
    group,
    guest_host,
    kill_tagged,
    new_tag,
    res,
    resource,
    run_in_guest,
    running,
    running_runner,
    wait_for,
    wait_group,
)

pytestmark = pytest.mark.agent

OCF_AGENTS = Path("/usr/lib/ocf/resource.d/heartbeat")
FAILURE_CODES = (1, 2, 3, 4, 5, 6, 9)
NOT_STOPPED = ("Online", "Starting", "Stopping", "Unknown", "Partial")


def need_resource_agents() -> None:
    if not (OCF_AGENTS / "anything").exists():
        pytest.fail("Debian's resource-agents package is not installed (hack/setup installs "
                    "it: apt-get install resource-agents)")


@pytest.fixture
def tag() -> Iterator[str]:
    value = new_tag()
    yield value
    kill_tagged(value)
    if value in tag_durations:
        kill_tagged(f"sleep {tag_durations.pop(value)}")


@pytest.fixture
def agent(tmp_path: Path, tag: str) -> Iterator[tuple[GroupRunner, Events]]:
    with running_runner(str(tmp_path / "state"), tag) as pair:
        yield pair


CODED = """#!/bin/sh
# An OCF agent of the test's own: it "runs" while its state file exists; its monitor
# answers the code written in OCF_RESKEY_codes/monitor (or sleeps while .../hang exists);
# its stop fails with the code in .../stop, else it removes the state and the codes.
codes="$OCF_RESKEY_codes"
case "$1" in
meta-data)
    cat <<'XML'
<?xml version="1.0"?>
<resource-agent name="coded" version="1.0"><version>1.1</version>
<parameters>
<parameter name="state" required="1"><content type="string"/></parameter>
<parameter name="codes" required="1"><content type="string"/></parameter>
</parameters>
<actions><action name="start" timeout="20s"/><action name="stop" timeout="20s"/>
<action name="monitor" timeout="20s" interval="10s"/><action name="meta-data" timeout="5s"/>
</actions></resource-agent>
XML
    exit 0;;
start) touch "$OCF_RESKEY_state"; exit 0;;
stop)
    if [ -e "$codes/stop" ]; then exit "$(cat "$codes/stop")"; fi
    rm -f "$OCF_RESKEY_state" "$codes/monitor"; exit 0;;
monitor)
    while [ -e "$codes/hang" ]; do sleep 0.1; done
    if [ -e "$codes/monitor" ]; then exit "$(cat "$codes/monitor")"; fi
    if [ -e "$OCF_RESKEY_state" ]; then exit 0; fi
    exit 7;;
*) exit 3;;
esac
"""


@pytest.fixture
def coded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder of the `test:coded` agent's codes; OCF_ROOT points at a private tree
    that has it and Debian's heartbeat agents."""
    need_resource_agents()
    root = tmp_path / "ocf"
    script = root / "resource.d" / "test" / "coded"
    script.parent.mkdir(parents=True)
    script.write_text(CODED)
    script.chmod(0o755)
    (root / "resource.d" / "heartbeat").symlink_to(OCF_AGENTS)
    (root / "lib").symlink_to(Path(ocf_module.OCF_ROOT) / "lib")
    monkeypatch.setattr(ocf_module, "OCF_ROOT", str(root))
    codes = tmp_path / "codes"
    codes.mkdir()
    return codes


def coded_resource(codes: Path, **extra: Any) -> dict[str, Any]:
    return resource("c", "OCF", {"agent": "test:coded", "parameters": {
        "state": str(codes.parent / "coded.state"), "codes": str(codes)}}, **extra)


def dummy_resource(tmp_path: Path) -> dict[str, Any]:
    return resource("d", "OCF", {"agent": "heartbeat:Dummy",
                                 "parameters": {"state": str(tmp_path / "dummy.state")}})


def group_states(events: Events, since: float, name: str = "g") -> list[str]:
    return [p["state"] for _, p in events.find("GroupState", since, group=name)]


@pytest.mark.parametrize("code", FAILURE_CODES)
def test_a_probe_that_fails_is_not_offline(agent: tuple[GroupRunner, Events], coded: Path,
                                           tmp_path: Path, code: int) -> None:
    """Found at start-up: a resource that runs (its state file) but whose monitor fails."""
    runner, events = agent
    (coded.parent / "coded.state").touch()
    (coded / "monitor").write_text(str(code))
    runner.configure([group("g", [dummy_resource(tmp_path), coded_resource(coded)])])
    wait_for(lambda: res(runner, "g", "d")["state"] == "Offline", 10, "Dummy probed")
    wait_for(lambda: res(runner, "g", "c")["monitorTimeouts"] == 0
             and "failed" in res(runner, "g", "c")["message"], 10, "the coded agent probed")
    time.sleep(1.5)  # and monitored again
    assert res(runner, "g", "c")["state"] == "Unknown", res(runner, "g", "c")
    assert runner.snapshot()["groups"]["g"]["state"] == "Unknown"
    assert "Offline" not in group_states(events, 0)
    # Only a successful stop takes it out of doubt.
    runner.offline("g")
    wait_group(runner, "g", "Offline", 15)
    assert not (coded.parent / "coded.state").exists()


@pytest.mark.parametrize("code", [1, 5, 9])
def test_an_offline_resource_whose_monitor_starts_failing_is_no_longer_offline(
        agent: tuple[GroupRunner, Events], coded: Path, tmp_path: Path, code: int) -> None:
    runner, events = agent
    runner.configure([group("g", [dummy_resource(tmp_path), coded_resource(coded)])])
    wait_group(runner, "g", "Offline", 10)
    since = time.monotonic()
    (coded / "monitor").write_text(str(code))  # the next offline monitor (1 s) sees it
    wait_for(lambda: res(runner, "g", "c")["state"] == "Unknown", 5, "Unknown")
    assert runner.snapshot()["groups"]["g"]["state"] == "Unknown"
    assert group_states(events, since) == ["Unknown"]


def test_an_offline_resource_whose_monitor_times_out_is_no_longer_offline(
        agent: tuple[GroupRunner, Events], coded: Path, tmp_path: Path) -> None:
    runner, _ = agent
    spec = coded_resource(coded)
    spec["monitor"]["timeoutSeconds"] = 1
    runner.configure([group("g", [spec])])
    wait_group(runner, "g", "Offline", 10)
    (coded / "hang").touch()
    wait_for(lambda: res(runner, "g", "c")["state"] == "Unknown", 6, "Unknown")
    assert "monitor timed out" in res(runner, "g", "c")["message"]
    assert runner.snapshot()["groups"]["g"]["state"] == "Unknown"
    (coded / "hang").unlink()
    wait_group(runner, "g", "Offline", 6)  # a monitor that answers 7 again


def test_a_failed_resource_whose_stop_fails_stays_in_doubt(
        agent: tuple[GroupRunner, Events], coded: Path, tmp_path: Path) -> None:
    runner, events = agent
    runner.configure([group("g", [dummy_resource(tmp_path), coded_resource(coded)])])
    wait_group(runner, "g", "Offline", 10)
    runner.online("g")
    wait_group(runner, "g", "Online", 10)
    since = time.monotonic()
    (coded / "stop").write_text("1")
    (coded / "monitor").write_text("1")
    events.wait("ResourceFaulted", 10, since=since, resource="c", reason="MonitorFailed")
    wait_for(lambda: res(runner, "g", "c")["state"] == "Unknown", 10, "Unknown")
    assert "clean failed" in res(runner, "g", "c")["message"]
    runner.offline("g")  # tries again: stop fails again
    time.sleep(3)
    assert res(runner, "g", "c")["state"] == "Unknown"
    assert not {"Offline", "Faulted"} & set(group_states(events, since))
    (coded / "stop").unlink()
    runner.offline("g")
    wait_group(runner, "g", "Offline", 15)


def test_a_failing_but_running_process_is_stopped_and_restarted_never_offline(
        agent: tuple[GroupRunner, Events], tmp_path: Path, tag: str) -> None:
    """heartbeat:anything runs a real process; its monitor_hook fails (code 1) while the
    process runs, as a database that answers errors. Recovery stops it (the stop is
    confirmed) and starts it again; the group never reads Offline or Faulted meanwhile."""
    need_resource_agents()
    runner, events = agent
    pidfile = tmp_path / "anything.pid"
    spec = resource("a", "OCF", {"agent": "heartbeat:anything", "parameters": {
        "binfile": "/bin/sleep", "cmdline_options": unique_duration(tag), "pidfile": str(pidfile),
        "monitor_hook": f"test ! -e {tmp_path}/broken.$(cat {pidfile})"}}, restartLimit=1)
    runner.configure([group("g", [spec])])
    wait_group(runner, "g", "Offline", 10)
    runner.online("g")
    wait_group(runner, "g", "Online", 15)
    first = int(pidfile.read_text())
    since = time.monotonic()
    (tmp_path / f"broken.{first}").touch()
    events.wait("ResourceRestarted", 10, since=since, resource="a")
    wait_group(runner, "g", "Online", 20)
    second = int(pidfile.read_text())
    assert second != first and running(second) and not running(first)
    states = group_states(events, since)
    assert states and set(states) <= set(NOT_STOPPED), states


@pytest.mark.parametrize("code", [1, 9])
def test_an_adopted_failing_process_is_in_doubt_until_stopped(
        agent: tuple[GroupRunner, Events], tmp_path: Path, tag: str, code: int) -> None:
    """An agent (re)starting finds heartbeat:anything's process running but failing its
    monitor: never Offline; the operator's offline stops it."""
    need_resource_agents()
    runner, _ = agent
    pidfile = tmp_path / "anything.pid"
    attributes = {"agent": "heartbeat:anything", "parameters": {
        "binfile": "/bin/sleep", "cmdline_options": unique_duration(tag),
        "pidfile": str(pidfile), "monitor_hook": f"test ! -e {tmp_path}/broken || exit {code}"}}
    watcher = ExitWatcher()
    try:
        before: Any = create("OCF", ResourceContext("g", "before", str(tmp_path / "before"),
                                                    watcher, lambda: None), attributes)
        before.online(20)  # left running by an earlier agent run
    finally:
        watcher.close()
    pid = int(pidfile.read_text())
    (tmp_path / "broken").touch()  # it runs, and fails its monitor
    runner.configure([group("g", [resource("a", "OCF", attributes)])])
    wait_for(lambda: "failed" in res(runner, "g", "a")["message"], 10, "probed")
    assert res(runner, "g", "a")["state"] == "Unknown"
    assert runner.snapshot()["groups"]["g"]["state"] == "Unknown" and running(pid)
    runner.offline("g")
    wait_group(runner, "g", "Offline", 20)
    assert not running(pid)


def unique_duration(tag: str) -> str:
    """A `sleep` duration of this test only: the tag fixture kills what has it at the end
    (sleep takes one number, so the tag cannot be an argument of its own)."""
    return tag_durations.setdefault(tag, f"1000.{int.from_bytes(os.urandom(3), 'big')}")


tag_durations: dict[str, str] = {}


# --------------------------------------------------------------------------- systemd


@pytest.mark.skipif(os.geteuid() != 0, reason="guest hosts need root")
def test_a_unit_starting_or_stopping_is_not_offline(tmp_path: Path) -> None:
    """A unit under the guest host's init (it answers systemctl as systemd does), whose
    ExecStartPre and ExecStop take 3 s: activating and deactivating are not Offline."""
    with guest_host(str(tmp_path / "guests"), "sd") as guest:
        output = run_in_guest(guest, "import test_agent_failed_monitors as t\n"
                                     "t.unit_in_transition_scenario()")
    assert "transition scenario done" in output


SLOW_UNIT = """\
[Service]
ExecStartPre=/bin/sleep 3
ExecStart=/bin/sh -c 'exec sleep 1000'
ExecStop=/bin/sleep 3
"""


def unit_in_transition_scenario() -> None:
    """Runs inside the guest host (see the test above)."""
    import subprocess
    import tempfile

    unit = Path("/etc/systemd/system/ghtest-slow.service")
    unit.write_text(SLOW_UNIT)
    subprocess.run(["systemctl", "daemon-reload"], check=True)
    watcher = ExitWatcher()
    context = ResourceContext("g", "slow", tempfile.mkdtemp(prefix="ghtest-sd-"), watcher,
                              lambda: None)
    slow: Any = create("Systemd", context, {"unit": "ghtest-slow.service"})
    try:
        assert slow.monitor(10).state == "Offline"
        starting = threading.Thread(target=slow.online, args=(20,))
        starting.start()
        wait_for(lambda: "activating" in slow.monitor(10).message, 5, "activating")
        result = slow.monitor(10)
        assert result.state == "Unknown", result
        starting.join(20)
        assert slow.monitor(10).state == "Online"
        stopping = threading.Thread(target=slow.offline, args=(20,))
        stopping.start()
        wait_for(lambda: "deactivating" in slow.monitor(10).message, 5, "deactivating")
        result = slow.monitor(10)
        assert result.state == "Unknown", result
        stopping.join(20)
        assert slow.monitor(10).state == "Offline"
    finally:
        watcher.close()
        unit.unlink()
    print("transition scenario done")
