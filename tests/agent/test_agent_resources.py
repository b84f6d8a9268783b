"""The agent's resource types against the real thing: processes, programs, OCF agents from
Debian's resource-agents, a loop-device file system in a private mount namespace, and
addresses in a network namespace made for the test.

Mount and IP scenarios run in a child python3 started under `unshare --mount` or
`ip netns exec`, so nothing they do is visible on the host; the test checks that too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guestha.agent.resources import (
    ActionError,
    ActionTimeout,
    Application,
    ExitWatcher,
    Mount,
    Process,
    Resource,
    ResourceContext,
    create,
    validate,
)
from guestha.agent.resources import ocf as ocf_module
from guestha.agent.resources.ip import IP
from guestha.agent.resources.ocf import OCF
from kits.resources import (
    guest_host,
    in_thread,
    kill_tagged,
    new_tag,
    pids_with,
    run_in_guest,
    running,
    sleeper,
    wait_for,
)

pytestmark = pytest.mark.agent

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# What a scenario run in a child python needs on its path: these tests, the kits, guestha.
SOURCE_PATHS = [str(HERE), str(REPO / "tests"), str(REPO / "operator")]
OCF_AGENTS = Path("/usr/lib/ocf/resource.d/heartbeat")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, "
                               "other users)")


def need_resource_agents() -> None:
    if not (OCF_AGENTS / "Dummy").exists():
        pytest.fail("Debian's resource-agents package is not installed (hack/setup installs "
                    "it: apt-get install resource-agents)")


class Contexts:
    """ResourceContexts for resources under one directory, with a shared exit watcher."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.watcher = ExitWatcher()
        self.notified: dict[str, threading.Event] = {}

    def __call__(self, name: str) -> ResourceContext:
        event = self.notified.setdefault(name, threading.Event())
        return ResourceContext("g", name, str(self.base / name), self.watcher, event.set)


@pytest.fixture
def contexts(tmp_path: Path) -> Iterator[Contexts]:
    made = Contexts(tmp_path / "state")
    yield made
    made.watcher.close()


@pytest.fixture
def tag() -> Iterator[str]:
    value = new_tag()
    yield value
    kill_tagged(value)


def make(cls: type[Resource], context: ResourceContext, attributes: dict[str, Any]) -> Any:
    assert validate(cls.type_name, attributes) == []
    return create(cls.type_name, context, attributes)


# --------------------------------------------------------------------------- Process


# A program and its forked child; each writes down the SIGTERM it gets, and exits on it.
FORKING = ("import os, signal, sys, time\n"
           "def stop(*_):\n"
           "    with open(sys.argv[1], 'a') as f:\n"
           "        f.write(f'SIGTERM {os.getpid()}\\n')\n"
           "    os._exit(0)\n"
           "signal.signal(signal.SIGTERM, stop)\n"
           "if os.fork() == 0:\n    time.sleep(1000)\nwhile True: time.sleep(60)")


def test_process_runs_in_its_own_session_and_stops_with_its_whole_group(
        contexts: Contexts, tag: str, tmp_path: Path) -> None:
    stopped = tmp_path / "stopped"
    proc: Process = make(Process, contexts("p"), {
        "command": ["python3", "-c", FORKING, str(stopped), tag]})
    assert proc.monitor(5).state == "Offline"
    proc.online(5)
    wait_for(lambda: len(pids_with(tag)) == 2, 5, "the program and its child")
    result = proc.monitor(5)
    assert result.state == "Online"
    pid = int(result.message.split()[1])
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid
    record = json.loads((contexts.base / "p" / "process.json").read_text())
    assert record["pid"] == pid and record["startTime"] > 0 and record["bootId"]
    child = next(p for p in pids_with(tag) if p != pid)
    proc.offline(10)
    assert pids_with(tag) == []  # the forked child went with it
    # The stop signal went to the whole group, and each ended on it: no SIGKILL needed.
    assert sorted(stopped.read_text().splitlines()) == sorted(
        [f"SIGTERM {pid}", f"SIGTERM {child}"])
    assert proc.monitor(5).state == "Offline"
    assert not (contexts.base / "p" / "process.json").exists()


def test_process_death_is_reported_without_a_monitor(contexts: Contexts, tag: str) -> None:
    """Nobody monitors it: the resource itself says something changed (its exit watcher),
    so the agent monitors at once instead of at the next interval. How soon: the figure
    `exitNotification` of hack/bench/resources.py."""
    proc: Process = make(Process, contexts("p"), {"command": sleeper(tag)})
    proc.online(5)
    pid = int(proc.monitor(5).message.split()[1])
    notified = contexts.notified["p"]
    notified.clear()
    os.kill(pid, signal.SIGKILL)
    assert notified.wait(10), "the exit was not reported"
    result = proc.monitor(5)
    assert (result.state, result.message) == ("Offline", "killed by SIGKILL")
    proc.clean(5)


def test_exit_watcher_without_pidfds_polls_proc(monkeypatch: pytest.MonkeyPatch,
                                                tag: str) -> None:
    """Kernels before 5.3 have no pidfd: the watcher falls back to reading /proc."""
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    watcher = ExitWatcher()
    try:
        child = subprocess.Popen(sleeper(tag), start_new_session=True)
        ended = threading.Event()
        watcher.watch(child.pid, None, ended.set)
        time.sleep(0.3)  # a few polls of /proc: a running process is not reported
        assert not ended.is_set()
        child.kill()
        assert ended.wait(10), "the exit was not reported"
        child.wait()
        gone = threading.Event()
        watcher.watch(child.pid, None, gone.set)  # already gone: reported all the same
        assert gone.wait(10)
    finally:
        watcher.close()


def test_process_stop_signal_then_sigkill_after_stop_timeout(contexts: Contexts, tag: str,
                                                             tmp_path: Path) -> None:
    marker = tmp_path / "stopped-by"
    graceful = ("import signal, sys, time\n"
                "def stop(*_):\n"
                f"    open({str(marker)!r}, 'w').write('SIGINT')\n"
                "    sys.exit(0)\n"
                "signal.signal(signal.SIGINT, stop)\n"
                "open(sys.argv[1] + '.ready', 'w').close()\n"
                "while True: time.sleep(60)")
    ready = tmp_path / "g"
    proc: Process = make(Process, contexts("int"), {
        "command": ["python3", "-c", graceful, str(ready), tag], "stopSignal": "SIGINT"})
    proc.online(5)
    wait_for((tmp_path / "g.ready").exists, 5, "the handler installed")
    proc.offline(10)
    assert marker.read_text() == "SIGINT"

    # It writes SIGTERM down and goes on, writing "alive" every 50 ms: only SIGKILL ends it.
    stubborn = ("import signal, sys, time\n"
                "journal = open(sys.argv[1], 'a', buffering=1)\n"
                "signal.signal(signal.SIGTERM, lambda *_: journal.write('SIGTERM\\n'))\n"
                "journal.write('ready\\n')\n"
                "while True:\n    time.sleep(0.05)\n    journal.write('alive\\n')")
    journal = tmp_path / "stubborn"
    proc2: Process = make(Process, contexts("term"), {
        "command": ["python3", "-c", stubborn, str(journal), tag], "stopTimeoutSeconds": 1})
    proc2.online(5)
    wait_for(lambda: journal.exists() and "ready" in journal.read_text(), 5, "ready")
    # SIGKILL comes after stopTimeoutSeconds (1 s), not after the action's timeout
    # (60 s): the wait below bounds a hang, it does not time the stop (hack/bench/
    # resources.py does: stopEscalation).
    in_thread(lambda: proc2.offline(60), 30, "offline of a program that ignores SIGTERM")
    assert pids_with(tag) == []
    said = journal.read_text().splitlines()
    assert said.count("SIGTERM") == 1, said
    # SIGTERM first; it lived on after it (SIGKILL was not sent with it), then it was killed.
    assert "alive" in said[said.index("SIGTERM"):], said


@root_only
def test_process_environment_directory_and_user(contexts: Contexts, tag: str) -> None:
    shared = Path(tempfile.mkdtemp(prefix="ghtest-"))
    try:
        shared.chmod(0o777)
        out = shared / "facts.json"
        script = ("import json, os, sys, time\n"
                  "json.dump({'cwd': os.getcwd(), 'uid': os.getuid(), 'gid': os.getgid(),\n"
                  "           'env': dict(os.environ)}, open(sys.argv[1], 'w'))\n"
                  "while True: time.sleep(60)")
        proc: Process = make(Process, contexts("u"), {
            "command": ["python3", "-c", script, str(out), tag], "env": {"GREETING": "hi"},
            "workingDirectory": str(shared), "user": "nobody"})
        proc.online(5)
        wait_for(lambda: out.exists() and out.stat().st_size > 0, 5, "facts written")
        facts = json.loads(out.read_text())
        assert facts["cwd"] == str(shared)
        assert facts["uid"] == 65534
        assert facts["env"]["GREETING"] == "hi"
        assert facts["env"]["USER"] == "nobody"
        assert "PATH" in facts["env"]
        proc.offline(10)
    finally:
        shutil.rmtree(shared)


def test_process_errors_name_the_attribute(contexts: Contexts, tmp_path: Path) -> None:
    proc: Process = make(Process, contexts("bad"), {"command": ["/nonexistent/program"]})
    with pytest.raises(ActionError, match=r"attributes\.command: /nonexistent/program: not found"):
        proc.online(5)
    proc = make(Process, contexts("cwd"), {"command": ["true"],
                                          "workingDirectory": str(tmp_path / "missing")})
    with pytest.raises(ActionError, match=r"attributes\.workingDirectory: .* is not a directory"):
        proc.online(5)
    proc = make(Process, contexts("user"), {"command": ["true"], "user": "no-such-user-x"})
    with pytest.raises(ActionError, match=r"attributes\.user: no such user 'no-such-user-x'"):
        proc.online(5)


def test_process_is_adopted_by_a_new_instance_and_never_started_twice(
        contexts: Contexts, tag: str) -> None:
    first: Process = make(Process, contexts("p"), {"command": sleeper(tag)})
    first.online(5)
    pid = int(first.monitor(5).message.split()[1])
    first.close()
    second: Process = make(Process, contexts("p"), {"command": sleeper(tag)})
    result = second.monitor(5)
    assert result.state == "Online" and result.message == f"pid {pid} (adopted)"
    second.online(5)  # already running: nothing new is started
    assert pids_with(tag) == [pid]
    notified = contexts.notified["p"]
    notified.clear()
    os.kill(pid, signal.SIGKILL)
    assert notified.wait(1.0), "the adopted process's exit was not seen"
    assert second.monitor(5).state == "Offline"
    second.clean(5)


def test_process_record_from_another_boot_or_a_reused_pid_is_not_adopted(
        contexts: Contexts, tag: str) -> None:
    bystander = subprocess.Popen(sleeper(tag), start_new_session=True)
    try:
        wait_for(lambda: running(bystander.pid), 5)
        directory = contexts.base / "p"
        directory.mkdir(parents=True)
        record = directory / "process.json"
        with open(f"/proc/{bystander.pid}/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19])
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        # The same pid but another start time: a reused pid, not ours.
        record.write_text(json.dumps({"pid": bystander.pid, "startTime": started + 1,
                                      "bootId": boot}))
        proc: Process = make(Process, contexts("p"), {"command": sleeper(tag)})
        assert proc.monitor(5).state == "Offline"
        proc.clean(5)
        proc.offline(5)
        assert running(bystander.pid), "clean killed a process that was not ours"
        # A record from an earlier boot is dropped when read.
        record.write_text(json.dumps({"pid": bystander.pid, "startTime": started,
                                      "bootId": "another-boot"}))
        proc = make(Process, contexts("p"), {"command": sleeper(tag)})
        assert proc.monitor(5).state == "Offline"
        assert not record.exists()
    finally:
        bystander.kill()
        bystander.wait()


# --------------------------------------------------------------------------- Application


def unique_sleep() -> str:
    """A `sleep` whose command line is unique on this machine."""
    return f"sleep {1000 + int.from_bytes(os.urandom(3), 'big') / 1000:.3f}"


def test_application_programs_with_vcs_and_ocf_monitor_codes(contexts: Contexts,
                                                             tmp_path: Path) -> None:
    flag = tmp_path / "on"
    code = tmp_path / "code"
    code.write_text("110 100")
    monitor = f'set -- $(cat {code}); if [ -e {flag} ]; then exit $1; else exit $2; fi'
    app: Application = make(Application, contexts("a"), {
        "startProgram": f"touch {flag}", "stopProgram": f"rm -f {flag}",
        "monitorProgram": monitor})
    assert app.monitor(5).state == "Offline"
    app.online(5)
    assert app.monitor(5).state == "Online"
    code.write_text("0 7")  # OCF style
    assert app.monitor(5).state == "Online"
    app.offline(5)
    assert app.monitor(5).state == "Offline"
    code.write_text("3 3")
    result = app.monitor(5)
    assert result.state == "Unknown"
    assert "monitorProgram exited with status 3" in result.message


def test_application_pid_files_monitor_processes_and_clean(contexts: Contexts,
                                                          tmp_path: Path) -> None:
    one, two = unique_sleep(), unique_sleep()
    pidfile = tmp_path / "one.pid"
    app: Application = make(Application, contexts("a"), {
        # The start program leaves daemons behind that inherit its output: it must not hang.
        "startProgram": f"{one} & echo $! > {pidfile}; {two} &",
        "stopProgram": "exit 3",
        "pidFiles": [str(pidfile)],
        "monitorProcesses": [two],
    })
    assert app.monitor(5).state == "Offline"
    # The daemons hold the start program's output open for 1000 s: online must not wait
    # for them (nor for its own 60 s timeout).
    in_thread(lambda: app.online(60), 30, "online of a start program that left daemons")
    wait_for(lambda: app.monitor(5).state == "Online", 5, "both processes")
    with pytest.raises(ActionError, match="stopProgram exited with status 3"):
        app.offline(5)
    pid_one = int(pidfile.read_text())
    os.kill(pid_one, signal.SIGKILL)
    wait_for(lambda: not running(pid_one), 5, "SIGKILL delivered")
    result = app.monitor(5)
    # Part of it still runs: failed, not stopped (never Offline while anything runs).
    assert result.state == "Unknown" and result.message.startswith("partly running")
    app.clean(5)
    result = app.monitor(5)
    assert result.state == "Offline" and f"no process '{two}'" in result.message


def test_entry_point_timeout_kills_the_program(contexts: Contexts) -> None:
    marker = unique_sleep()
    app: Application = make(Application, contexts("a"), {
        "startProgram": marker, "stopProgram": "true", "monitorProgram": "exit 100"})
    # The program would run for 1000 s: the call ends at its timeout, not the program's.
    with pytest.raises(ActionTimeout, match=r"attributes\.startProgram did not finish within"):
        in_thread(lambda: app.online(0.5), 30, "online past its timeout")
    assert not any(marker in line for line in _all_cmdlines())


def _all_cmdlines() -> list[str]:
    lines = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                lines.append(Path(f"/proc/{entry}/cmdline").read_bytes().replace(
                    b"\0", b" ").decode(errors="replace"))
    return lines


# --------------------------------------------------------------------------- OCF


def test_ocf_dummy_online_monitor_offline(contexts: Contexts, tmp_path: Path) -> None:
    need_resource_agents()
    state = tmp_path / "dummy.state"
    attributes = {"agent": "ocf:heartbeat:Dummy", "parameters": {"state": str(state)},
                  "depth": 10}
    dummy: OCF = make(OCF, contexts("d"), attributes)
    assert dummy.monitor(10).state == "Offline"
    dummy.online(20)
    assert state.exists()
    assert dummy.monitor(10).state == "Online"
    dummy.offline(20)
    assert not state.exists()
    assert dummy.monitor(10).state == "Offline"


def test_ocf_anything_runs_a_real_program(contexts: Contexts, tmp_path: Path) -> None:
    need_resource_agents()
    duration = unique_sleep().split()[1]
    pidfile = tmp_path / "anything.pid"
    anything: OCF = make(OCF, contexts("a"), {"agent": "heartbeat:anything", "parameters": {
        "binfile": "/bin/sleep", "cmdline_options": duration, "pidfile": str(pidfile)}})
    assert anything.monitor(10).state == "Offline"
    anything.online(20)
    pid = int(pidfile.read_text())
    assert running(pid) and f"sleep {duration}" in Path(f"/proc/{pid}/cmdline").read_bytes(
        ).replace(b"\0", b" ").decode()
    assert anything.monitor(10).state == "Online"
    anything.offline(20)
    wait_for(lambda: not running(pid), 5, "the program stopped")
    assert anything.monitor(10).state == "Offline"


def test_ocf_parameters_are_checked_against_the_agents_meta_data() -> None:
    need_resource_agents()
    assert validate("OCF", {"agent": "heartbeat:anything",
                            "parameters": {"binfile": "/bin/sleep", "stop_timeout": 5}}) == []
    found = validate("OCF", {"agent": "heartbeat:anything",
                             "parameters": {"binfle": "/bin/sleep", "bad-name": "x"}})
    assert found[0] == ("attributes.parameters.bad-name: not a valid parameter name (letters, "
                        "digits and _)")
    assert found[1].startswith("attributes.parameters.binfle: not a parameter of "
                               "heartbeat:anything (it has: binfile, cmdline_options")
    assert found[2] == "attributes.parameters.binfile: required by heartbeat:anything"
    assert validate("OCF", {"agent": "heartbeat:NoSuchAgent"}) == [
        "attributes.agent: heartbeat:NoSuchAgent is not installed in this guest (no "
        "executable /usr/lib/ocf/resource.d/heartbeat/NoSuchAgent)"]


def test_ocf_environment_follows_the_specification(contexts: Contexts, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent of our own under a private OCF_ROOT records what it was given."""
    root = tmp_path / "ocf"
    agent = root / "resource.d" / "test" / "recorder"
    agent.parent.mkdir(parents=True)
    record = tmp_path / "env.json"
    agent.write_text(f"""#!/usr/bin/env python3
import json, os, sys
if sys.argv[1] == "meta-data":
    print('<?xml version="1.0"?><resource-agent name="recorder"><parameters>'
          '<parameter name="color" required="1"/><parameter name="size"/>'
          '</parameters><actions/></resource-agent>')
    sys.exit(0)
with open({str(record)!r}, "a") as f:
    env = {{k: v for k, v in os.environ.items() if k.startswith("OCF_")}}
    f.write(json.dumps({{"action": sys.argv[1], "env": env}}) + "\\n")
sys.exit({{"start": 0, "stop": 0, "monitor": 7}}[sys.argv[1]])
""")
    agent.chmod(0o755)
    monkeypatch.setattr(ocf_module, "OCF_ROOT", str(root))
    assert validate("OCF", {"agent": "test:recorder", "parameters": {"size": 3}}) == [
        "attributes.parameters.color: required by test:recorder"]
    attributes = {"agent": "ocf:test:recorder", "parameters": {"color": "blue", "size": 3},
                  "depth": 20}
    recorder: OCF = make(OCF, contexts("rec"), attributes)
    recorder.online(4.5)
    assert recorder.monitor(2).state == "Offline"
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [c["action"] for c in calls] == ["start", "monitor"]
    env = calls[0]["env"]
    assert env["OCF_ROOT"] == str(root)
    assert env["OCF_RESOURCE_INSTANCE"] == "g_rec"
    assert env["OCF_RESOURCE_TYPE"] == "recorder"
    assert env["OCF_RESOURCE_PROVIDER"] == "test"
    assert env["OCF_RESKEY_color"] == "blue" and env["OCF_RESKEY_size"] == "3"
    assert env["OCF_RESKEY_CRM_meta_timeout"] == "4500"
    assert env["OCF_RA_VERSION_MAJOR"] == "1"
    assert calls[1]["env"]["OCF_CHECK_LEVEL"] == "20"
    assert calls[1]["env"]["OCF_RESKEY_CRM_meta_timeout"] == "2000"


# --------------------------------------------------------------------------- Mount


def _run_inside(wrapper: list[str], function: str, *args: str, timeout: float = 120) -> str:
    """Run function(*args) of this module in a child python3 under `wrapper`."""
    code = (f"import sys; sys.path[:0] = {SOURCE_PATHS!r}\n"
            f"import test_agent_resources as t\nt.{function}(*sys.argv[1:])")
    result = subprocess.run([*wrapper, sys.executable, "-c", code, *args], capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, f"{function} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _host_mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "ghtest", str(image)], check=True)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


@root_only
def test_mount_and_ocf_filesystem_in_a_private_mount_namespace(loop_device: str,
                                                               tmp_path: Path) -> None:
    need_resource_agents()
    top = tmp_path / "mnt"
    output = _run_inside(["unshare", "--mount", "--propagation", "private"], "mount_scenario",
                         loop_device, str(top))
    assert "mount scenario done" in output
    assert str(top) not in _host_mounts(), "a mount leaked out of the private namespace"


def mount_scenario(device: str, top_dir: str) -> None:
    """Runs in a private mount namespace (see the test above)."""
    top = Path(top_dir)
    contexts = Contexts(top.parent / "state-inside")
    point = top / "data"
    try:
        mount: Mount = make(Mount, contexts("m"), {
            "device": device, "mountPoint": str(point), "fsType": "ext4",
            "options": "noatime"})
        with pytest.raises(ActionError, match=r"attributes\.mountPoint: .* does not exist"):
            mount.online(10)
        mount = make(Mount, contexts("m"), {
            "device": device, "mountPoint": str(point), "fsType": "ext4",
            "options": "noatime", "createMountPoint": True})
        assert mount.monitor(5).state == "Offline"
        mount.online(20)
        result = mount.monitor(5)
        assert result.state == "Online", result
        assert "noatime" in next(e for e in Path("/proc/self/mountinfo").read_text(
            ).splitlines() if str(point) in e)
        (point / "hello").write_text("hi")
        # Something keeps the file system busy: offline fails, clean kills it and unmounts.
        busy = subprocess.Popen(["sleep", "1000"], cwd=str(point))
        with pytest.raises(ActionError, match=r"umount .* failed"):
            mount.offline(10)
        mount.clean(10)
        assert busy.wait(5) == -signal.SIGKILL
        assert mount.monitor(5).state == "Offline"
        mount.offline(10)  # already offline: nothing to do
        # By label, as a guest's fstab would say it.
        labelled: Mount = make(Mount, contexts("l"), {"device": "LABEL=ghtest",
                                                      "mountPoint": str(point)})
        if Path("/dev/disk/by-label/ghtest").exists():
            labelled.online(20)
            assert labelled.monitor(5).state == "Online"
            labelled.offline(20)
        # Someone else's file system on the mount point is not ours.
        subprocess.run(["mount", "-t", "tmpfs", "other", str(point)], check=True)
        result = mount.monitor(5)
        assert result.state == "Offline" and "has other mounted" in result.message, result
        with pytest.raises(ActionError, match="already has other mounted"):
            mount.online(10)
        subprocess.run(["umount", str(point)], check=True)
        # The same device through Debian's ocf:heartbeat:Filesystem.
        fs: OCF = make(OCF, contexts("fs"), {"agent": "heartbeat:Filesystem", "parameters": {
            "device": device, "directory": str(point), "fstype": "ext4"}})
        assert fs.monitor(20).state == "Offline"
        fs.online(60)
        assert fs.monitor(20).state == "Online"
        assert mount.monitor(5).state == "Online"  # both see the same mount
        assert (point / "hello").read_text() == "hi"
        fs.offline(60)
        assert fs.monitor(20).state == "Offline"
        assert mount.monitor(5).state == "Offline"
    finally:
        contexts.watcher.close()
    print("mount scenario done")


# --------------------------------------------------------------------------- IP


@pytest.fixture
def netns() -> Iterator[str]:
    name = new_tag()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for argv in (["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                     ["link", "set", "v0", "up"], ["link", "set", "v1", "up"],
                     ["link", "set", "lo", "up"],
                     ["addr", "add", "10.77.0.1/24", "dev", "v0"],
                     ["route", "add", "default", "via", "10.77.0.254", "dev", "v0",
                      "onlink"]):
            subprocess.run(["ip", "-n", name, *argv], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@root_only
def test_ip_and_ocf_ipaddr2_in_a_network_namespace(netns: str) -> None:
    need_resource_agents()
    output = _run_inside(["ip", "netns", "exec", netns], "ip_scenario")
    assert "ip scenario done" in output
    host = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True).stdout
    assert "10.77.0." not in host and "fd77::" not in host


def ip_scenario() -> None:
    """Runs inside a network namespace (see the test above)."""
    contexts = Contexts(Path(tempfile.mkdtemp(prefix="ghtest-ip-")))
    try:
        def addresses() -> str:
            return subprocess.run(["ip", "-o", "addr", "show"], capture_output=True,
                                  text=True).stdout

        vip: IP = make(IP, contexts("v4"), {"address": "10.77.0.50", "prefixLength": 24,
                                           "interface": "v0"})
        assert vip.monitor(5).state == "Offline"
        vip.online(10)
        assert "inet 10.77.0.50/24" in addresses()
        assert vip.monitor(5).state == "Online"
        vip.online(10)  # idempotent
        vip.offline(10)
        assert "10.77.0.50" not in addresses()
        assert vip.monitor(5).state == "Offline"
        # Without an interface: the default route's (v0); without a prefix: /32.
        default: IP = make(IP, contexts("dflt"), {"address": "10.77.0.51"})
        default.online(10)
        assert "v0    inet 10.77.0.51/32" in addresses()
        default.clean(10)
        assert "10.77.0.51" not in addresses()
        # IPv6, usable at once (no duplicate address detection wait).
        six: IP = make(IP, contexts("v6"), {"address": "fd77::50", "prefixLength": 64,
                                           "interface": "v1"})
        six.online(10)
        assert six.monitor(5).state == "Online"
        assert "fd77::50/64" in addresses() and "tentative" not in next(
            line for line in addresses().splitlines() if "fd77::50" in line)
        six.offline(10)
        # On another interface than configured: not ours.
        subprocess.run(["ip", "addr", "add", "10.77.0.52/24", "dev", "v1"], check=True)
        moved: IP = make(IP, contexts("moved"), {"address": "10.77.0.52", "interface": "v0"})
        result = moved.monitor(5)
        assert result.state == "Offline" and "is on v1, not v0" in result.message, result
        # Debian's ocf:heartbeat:IPaddr2 on the same namespace.
        ipaddr2: OCF = make(OCF, contexts("ipaddr2"), {"agent": "heartbeat:IPaddr2",
                                                       "parameters": {"ip": "10.77.0.60",
                                                                      "cidr_netmask": 24,
                                                                      "nic": "v0"}})
        assert ipaddr2.monitor(20).state == "Offline"
        ipaddr2.online(30)
        assert "10.77.0.60/24" in addresses()
        assert ipaddr2.monitor(20).state == "Online"
        ipaddr2.offline(30)
        assert "10.77.0.60" not in addresses()
    finally:
        contexts.watcher.close()
        shutil.rmtree(contexts.base, ignore_errors=True)
    print("ip scenario done")




# --------------------------------------------------------------------------- Systemd


@root_only
def test_systemd_unit_in_a_guest_host(tmp_path: Path) -> None:
    """The Systemd type against the guest host's init (it answers systemctl like systemd)."""
    with guest_host(str(tmp_path / "guests"), "sd") as guest:
        output = run_in_guest(guest, "import test_agent_resources as t\nt.systemd_scenario()")
    assert "systemd scenario done" in output


UNIT = """\
[Service]
ExecStart=/bin/sh -c 'exec sleep 1000'
"""


def systemd_scenario() -> None:
    """Runs inside the guest host (see the test above)."""
    unit = Path("/etc/systemd/system/ghtest-web.service")
    unit.write_text(UNIT)
    subprocess.run(["systemctl", "daemon-reload"], check=True)
    contexts = Contexts(Path(tempfile.mkdtemp(prefix="ghtest-sd-")))
    try:
        web: Any = create("Systemd", contexts("w"), {"unit": "ghtest-web.service"})
        assert validate("Systemd", {"unit": "ghtest-web.service"}) == []
        result = web.monitor(10)
        assert (result.state, result.message) == ("Offline", "inactive (dead)"), result
        web.online(20)
        result = web.monitor(10)
        assert result.state == "Online" and result.message.startswith("active (running), "
                                                                      "main pid "), result
        main = int(result.message.rsplit(" ", 1)[1])
        os.kill(main, signal.SIGKILL)
        wait_for(lambda: web.monitor(10).state == "Offline", 5, "the unit failed")
        assert web.monitor(10).message == "failed: signal"
        web.clean(20)  # kill + stop + reset-failed: ready to start again
        assert web.monitor(10).message == "inactive (dead)"
        web.online(20)
        assert web.monitor(10).state == "Online"
        web.offline(20)
        assert web.monitor(10).message == "inactive (dead)"
        missing: Any = create("Systemd", contexts("m"), {"unit": "ghtest-none.service"})
        assert missing.monitor(10).message == "unit not found"
        with pytest.raises(ActionError, match=r"systemctl start ghtest-none\.service exited"):
            missing.online(20)
    finally:
        contexts.watcher.close()
        unit.unlink()
    print("systemd scenario done")
