"""A file system whose server hangs must not hang the agent: a member that must fence
itself can, whatever its mounts do.

The hung file system is real: a FUSE server (tests/agent/hangfs.py) that is stopped with
SIGSTOP, as a dead hard NFS server, so every stat of its mount point blocks in the kernel
until the server comes back. Each scenario runs in a child python3 under
`unshare --mount`, so the mount is never visible outside it (checked too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from kits.resources import group, in_thread, kill_tagged, new_tag, resource, sleeper, wait_for

pytestmark = pytest.mark.agent

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# What a scenario run in a child python needs on its path: these tests, the kits, guestha.
SOURCE_PATHS = [str(HERE), str(REPO / "tests"), str(REPO / "operator")]
root_only = pytest.mark.skipif(os.geteuid() != 0 or not Path("/dev/fuse").exists(),
                               reason="needs root and /dev/fuse (a FUSE mount)")


def _run_inside(function: str, *args: str, timeout: float = 120) -> str:
    """Run function(*args) of this module in a private mount namespace."""
    code = (f"import sys; sys.path[:0] = {SOURCE_PATHS!r}\n"
            f"import test_agent_dead_mounts as t\nt.{function}(*sys.argv[1:])")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private",
                             sys.executable, "-c", code, *args], capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, f"{function} failed:\n{result.stdout}\n{result.stderr}"
    assert "ghtest-hang" not in Path("/proc/self/mountinfo").read_text(), "a mount leaked"
    return result.stdout


@root_only
def test_a_mount_on_a_hung_file_system_is_monitored_and_cleaned_in_bounded_time() -> None:
    assert "hung mount scenario done" in _run_inside("hung_mount_scenario")


@root_only
def test_self_fencing_gets_a_mount_on_a_hung_file_system_offline() -> None:
    assert "self-fence scenario done" in _run_inside("self_fence_scenario")


@root_only
def test_programs_whose_directory_or_pid_files_hang_never_hang_the_agent() -> None:
    assert "program scenario done" in _run_inside("program_scenario")


# --------------------------------------------------------------------------- inside


@contextmanager
def hung_file_system() -> Iterator[tuple[Path, Callable[[], None]]]:
    """A FUSE mount (answering) and a function that hangs its server."""
    point = Path(tempfile.mkdtemp(prefix="ghtest-hang-"))
    server = subprocess.Popen([sys.executable, str(HERE / "hangfs.py"), str(point)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        os.stat(point)  # answered

        def hang() -> None:
            server.send_signal(signal.SIGSTOP)
            probe = subprocess.Popen([sys.executable, "-c", "import os, sys; "
                                      "os.path.realpath(sys.argv[1])", str(point)])
            try:  # the hang is real: a realpath there does not come back
                probe.wait(1.5)
                raise AssertionError("realpath on the hung file system returned")
            except subprocess.TimeoutExpired:
                probe.kill()
                probe.wait(5)

        yield point, hang
    finally:
        server.kill()  # the connection is aborted: whatever waits on it fails now
        server.wait(5)
        subprocess.run(["umount", "--no-canonicalize", "--lazy", str(point)],
                       capture_output=True)


def mounted() -> str:
    return Path("/proc/self/mountinfo").read_text()


def hung_mount_scenario() -> None:
    from guestha.agent.resources import ExitWatcher, ResourceContext, create

    watcher = ExitWatcher()
    try:
        with hung_file_system() as (point, hang):
            context = ResourceContext("g", "m", tempfile.mkdtemp(prefix="ghtest-"), watcher,
                                      lambda: None)
            mount: Any = create("Mount", context, {"device": "ghtest-hang",
                                                   "mountPoint": str(point),
                                                   "fsType": "fuse.ghtest"})
            assert mount.monitor(5).state == "Online"
            hang()
            from guestha.agent.resources import ActionTimeout

            def monitor() -> str:
                try:
                    return str(mount.monitor(2).state)
                except ActionTimeout as e:  # what the monitor loop counts as a timeout
                    return f"timed out: {e}"

            result = in_thread(monitor, 20, "monitor of the hung mount")
            assert result.startswith("timed out"), result
            in_thread(lambda: mount.clean(9), 30, "clean of the hung mount")
            assert "ghtest-hang" not in mounted(), "clean detached it"
            assert in_thread(lambda: mount.monitor(5).state, 20, "monitor after") == "Offline"
    finally:
        watcher.close()
    print("hung mount scenario done")


def self_fence_scenario() -> None:
    from guestha.agent.groups import GroupRunner
    from kits.resources import Events

    state = Path(tempfile.mkdtemp(prefix="ghtest-"))
    tag = new_tag()
    events = Events()
    runner = GroupRunner(str(state), events)
    try:
        with hung_file_system() as (point, hang):
            spec = resource("m", "Mount", {"device": "ghtest-hang", "mountPoint": str(point),
                                           "fsType": "fuse.ghtest"})
            spec["monitor"]["timeoutSeconds"] = 2
            spec["timeouts"] = {"onlineSeconds": 10, "offlineSeconds": 4, "cleanSeconds": 6}
            app = resource("app", "Process", {"command": sleeper(tag)}, dependsOn=["m"])
            runner.configure([group("fo", [spec, app])])
            wait_for(lambda: runner.snapshot()["groups"]["fo"]["state"] in ("Partial",
                                                                           "Online"), 10)
            runner.online("fo")
            wait_for(lambda: runner.snapshot()["groups"]["fo"]["state"] == "Online", 15)
            hang()
            fenced = in_thread(lambda: runner.take_failover_groups_offline("test", 20.0), 40,
                               "self-fencing")
            groups = in_thread(runner.snapshot, 5, "status")["groups"]
            assert fenced is True, groups
            assert groups["fo"]["state"] == "Offline", groups
            assert "ghtest-hang" not in mounted()
    finally:
        in_thread(runner.close, 20, "closing the runner")
        kill_tagged(tag)
    print("self-fence scenario done")


def program_scenario() -> None:
    from guestha.agent.resources import ActionError, ExitWatcher, ResourceContext, create

    watcher = ExitWatcher()
    try:
        with hung_file_system() as (point, hang):
            base = tempfile.mkdtemp(prefix="ghtest-")

            def context(name: str) -> Any:
                return ResourceContext("g", name, f"{base}/{name}", watcher, lambda: None)

            app: Any = create("Application", context("a"), {
                "startProgram": "true", "stopProgram": "true", "monitorProgram": "exit 100",
                "workingDirectory": str(point)})
            pids: Any = create("Application", context("p"), {
                "startProgram": "true", "stopProgram": "true",
                "pidFiles": [f"{point}/app.pid"]})
            proc: Any = create("Process", context("c"), {
                "command": ["sleep", "1000"], "workingDirectory": str(point)})
            hang()

            def fails(call: Callable[[], Any]) -> str:
                try:
                    result = call()
                except ActionError as e:
                    return f"{type(e).__name__}: {e}"
                return f"returned {result}"

            for what, call in [
                    ("monitorProgram in a hung directory", lambda: app.monitor(2)),
                    ("a pid file on a hung mount", lambda: pids.monitor(2)),
                    ("clean with that pid file", lambda: pids.clean(2)),
                    ("a Process started in a hung directory", lambda: proc.online(2))]:
                outcome = in_thread(lambda call=call: fails(call), 20, what)
                assert outcome.startswith("ActionTimeout"), (what, outcome)
    finally:
        watcher.close()
    print("program scenario done")
