"""Pid files are written by the application, often as an unprivileged user; the agent runs
as root. Whatever pid that user writes there, clean must not SIGKILL a process that is
not the application's: not the agent itself, not init, not another user's process, not
a process that got the pid after the file was written. A real unprivileged user
(`nobody`) writes the pid files here.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guestha.agent.resources import ActionError, ExitWatcher, ResourceContext, create
from kits.agentproc import AgentProc
from kits.pki import Pki
from kits.resources import kill_tagged, new_tag, pids_with, running
from kits.waiting import wait_for

pytestmark = pytest.mark.agent

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root and the user nobody")
SLEEPER = "import time\nwhile True: time.sleep(60)"


@pytest.fixture
def tag() -> Iterator[str]:
    value = new_tag()
    yield value
    kill_tagged(value)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder the user nobody owns (outside pytest's root-only tmp_path)."""
    folder = Path(tempfile.mkdtemp(prefix="ghtest-pids-"))
    folder.chmod(0o755)
    os.chown(folder, pwd.getpwnam("nobody").pw_uid, -1)
    yield folder
    shutil.rmtree(folder)


def as_nobody(script: str) -> None:
    """Run a shell command line as the user nobody."""
    nobody = pwd.getpwnam("nobody")
    subprocess.run(["/bin/sh", "-c", script], check=True, user=nobody.pw_uid,
                   group=nobody.pw_gid, extra_groups=[], cwd="/")


def bystander(tag: str) -> subprocess.Popen[bytes]:
    """A root process that has nothing to do with the application."""
    return subprocess.Popen(["python3", "-c", SLEEPER, tag, "bystander"])


def app_attributes(pidfile: Path, tag: str) -> dict[str, Any]:
    return {"startProgram": f"python3 -c '{SLEEPER}' {tag} app >/dev/null 2>&1 & "
                            f"echo $! > {pidfile}",
            "stopProgram": "exit 1", "pidFiles": [str(pidfile)], "user": "nobody"}


@pytest.fixture
def contexts(tmp_path: Path) -> Iterator[Any]:
    watcher = ExitWatcher()
    yield lambda name: ResourceContext("g", name, str(tmp_path / name), watcher,
                                       lambda: None)
    watcher.close()


@root_only
def test_clean_never_kills_a_root_process_the_users_pid_file_names(
        shared: Path, tag: str, contexts: Any) -> None:
    pidfile = shared / "app.pid"
    app: Any = create("Application", contexts("a"), app_attributes(pidfile, tag))
    app.online(10)
    wait_for(lambda: app.monitor(5).state == "Online", 5, "the application runs")
    own = int(pidfile.read_text())
    victim = bystander(tag)
    try:
        wait_for(lambda: running(victim.pid), 5, "the bystander runs")
        time.sleep(0.05)
        as_nobody(f"echo {victim.pid} > {pidfile}")
        try:
            app.clean(5)
            refused = ""
        except ActionError as e:
            refused = str(e)
        time.sleep(0.2)
        assert victim.poll() is None, "clean killed a root process the pid file named"
        assert "not signalled" in refused, refused
        result = app.monitor(5)
        assert result.state == "Unknown", result  # the pid file lies: in doubt
        assert "not the application's" in result.message and "uid 0" in result.message
        assert running(own)  # the user's own process is the user's affair
    finally:
        victim.kill()
        victim.wait(5)


@root_only
def test_a_pid_that_started_after_its_pid_file_was_written_is_not_the_application(
        shared: Path, tag: str, contexts: Any) -> None:
    """The application died and its pid went to a newer process of the same user."""
    pidfile = shared / "app.pid"
    app: Any = create("Application", contexts("a"), app_attributes(pidfile, tag))
    later = subprocess.Popen(["python3", "-c", SLEEPER, tag, "later"],
                             user=pwd.getpwnam("nobody").pw_uid)
    try:
        wait_for(lambda: running(later.pid), 5, "the later process runs")
        as_nobody(f"echo {later.pid} > {pidfile}")
        written = time.time() - 60  # as if written a minute before that process started
        os.utime(pidfile, (written, written))
        result = app.monitor(5)
        assert result.state == "Offline", result
        assert "started after the pid file was written" in result.message
        app.clean(5)
        time.sleep(0.2)
        assert later.poll() is None, "clean killed a process that only reused the pid"
    finally:
        later.kill()
        later.wait(5)


@root_only
def test_monitor_processes_of_other_users_are_neither_counted_nor_killed(
        tag: str, contexts: Any) -> None:
    line = f"python3 -c {SLEEPER} {tag} same"
    app: Any = create("Application", contexts("m"), {
        "startProgram": "true", "stopProgram": "true", "user": "nobody",
        "monitorProcesses": [line]})
    other = subprocess.Popen(["python3", "-c", SLEEPER, tag, "same"])  # root's, same line
    try:
        wait_for(lambda: running(other.pid), 5, "root's process runs")
        result = app.monitor(5)
        assert result.state == "Offline", result
        app.clean(5)
        time.sleep(0.2)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait(5)


@root_only
def test_the_agent_survives_a_pid_file_that_names_it(shared: Path, tag: str,
                                                       tmp_path: Path) -> None:
    """Through a real agent: the user writes the agent's own pid into the pid file; the
    operator's offline fails (stopProgram) and clean runs; the agent must live on."""
    pidfile = shared / "app.pid"
    agent = AgentProc("web-a", "127.0.1.70", tmp_path / "a", Pki(tmp_path / "pki"),
                      port=17740, heartbeat_port=17741).start()
    client = agent.client()
    client.timeout = 10.0
    try:
        code, body = client.command("PUT", "/v1/config", 1, {
            "groups": [{"name": "app", "type": "Parallel", "resources": [
                {"name": "a", "type": "Application", "attributes": app_attributes(
                    pidfile, tag), "monitor": {"intervalSeconds": 1, "timeoutSeconds": 5},
                 "timeouts": {"offlineSeconds": 5, "cleanSeconds": 5}}]}],
            "fencing": {"selfFenceTimeoutSeconds": 0}})
        assert code == 200, body
        wait_for(lambda: client.status()["groups"]["app"]["state"] == "Offline", 10)
        assert client.command("POST", "/v1/groups/app/online", 1)[0] == 200
        wait_for(lambda: client.status()["groups"]["app"]["state"] == "Online", 10)
        assert agent.proc is not None
        as_nobody(f"echo {agent.proc.pid} > {pidfile}")
        assert client.command("POST", "/v1/groups/app/offline", 1)[0] == 200
        wait_for(lambda: client.status()["groups"]["app"]["resources"][0]["message"]
                 .count("the agent itself") > 0, 15, what="clean refused")
        assert agent.proc.poll() is None, "the agent was killed"
        resource = client.status()["groups"]["app"]["resources"][0]
        assert resource["state"] == "Unknown", resource
        assert len(pids_with(f"{tag} app")) == 1  # the user's process: theirs to mind
    finally:
        client.close()
        agent.stop()
