"""The agent's saved state. A full disk under the agent's state folder, for real: a small
tmpfs mounted there and filled up. What the operator must see: a command the agent cannot
save is refused with a clear 5xx naming the cause, nothing of it is kept in memory (the
epoch stays), its operation id is released (retries are answered at once, not queued for
ever), and once there is room again the same command goes through and survives a restart.

Also here: a retry of an operation that is still being applied waits a bounded time for
its answer; and a Process's output log, the likeliest thing to fill that folder, is
rotated by size and never grows without bound.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guestha.agent.resources import ExitWatcher, ResourceContext, create
from guestha.agent.resources import process as process_module
from kits.agentproc import AgentProc
from kits.client import Client
from kits.interpreters import agent_python
from kits.pki import Pki
from kits.resources import kill_tagged, new_tag
from kits.waiting import wait_for

pytestmark = pytest.mark.agent

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")
ADDRESS, PORT = "127.0.1.50", 17700


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, mounted where the agent keeps its state."""
    folder = tmp_path / "agent" / "state"
    folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "ghtest-full",
                    str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` up to the last byte; the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    return filler


def command(client: Client, epoch: int, op: str) -> tuple[int, Any]:
    return client.command("POST", "/v1/groups/side/probe", epoch, operation_id=op)


@root_only
def test_a_command_that_cannot_be_saved_is_refused_and_released(
        small_disk: Path, tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    agent = AgentProc("web-a", ADDRESS, small_disk.parent, pki, port=PORT,
                      heartbeat_port=PORT + 1).start()
    client = agent.client()
    client.timeout = 10.0  # a request that hangs fails the test instead of hanging it
    try:
        code, body = client.command("PUT", "/v1/config", 1, {
            "groups": [{"name": "side", "type": "Parallel", "resources": []}],
            "fencing": {"selfFenceTimeoutSeconds": 0}})
        assert code == 200, body
        filler = fill(small_disk)
        op = f"op-{uuid.uuid4().hex}"
        code, body = command(client, 2, op)
        assert (code, body["reason"]) == (503, "StateNotSaved"), body
        assert "No space left on device" in body["message"]
        assert "channel-state.json" in body["message"]
        assert client.status()["epoch"] == 1  # not taken: it was not saved
        # The id is released: retries are answered at once, many at a time too, and the
        # connections they used are free again.
        assert command(client, 2, op)[0] == 503
        answers: list[str] = []
        clients = [agent.client() for _ in range(40)]

        def retry(c: Client) -> None:
            c.timeout = 10.0
            try:
                code, answer = command(c, 2, op)
                answers.append(f"{code} {answer['reason']}")
            except OSError as e:
                answers.append(f"not answered: {e}")
            finally:
                c.close()

        threads = [threading.Thread(target=retry, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        # (more than 32 at once: some are turned away at the door, which is answered too)
        assert len(answers) == 40 and set(answers) <= {
            "503 StateNotSaved", "503 TooManyConnections"}, answers
        # Every slot is free again (a server thread closes its connection just after its
        # answer has gone out, so the count follows shortly).
        wait_for(lambda: client.status()["channel"]["open"] <= 1, 10,
                 what="the refused commands' connections to be closed")
        assert client.status()["epoch"] == 1
        # A configuration that cannot be saved is not applied either.
        code, body = client.command("PUT", "/v1/config", 1, {
            "groups": [{"name": "more", "type": "Parallel", "resources": []}],
            "fencing": {"selfFenceTimeoutSeconds": 0}})
        assert (code, body["reason"]) == (503, "StateNotSaved"), body
        assert "nothing was applied" in body["message"]
        assert list(client.status()["groups"]) == ["side"]
        assert [g["name"] for g in client.get("/v1/config")[1]["config"]["groups"]] == ["side"]
        # No temporary file left behind, of the channel state or of the boot record.
        assert sorted(p.name for p in small_disk.iterdir()) == [
            "boot-record.json", "channel-state.json", "filler"]
        # Room again: the same command goes through, and its epoch survives a restart.
        filler.unlink()
        code, body = command(client, 2, op)
        assert code == 200, body
        assert client.status()["epoch"] == 2
        client.close()
        assert agent.stop() == 0
        agent.start()
        client = agent.client()
        assert client.status()["epoch"] == 2
        again = command(client, 2, op)
        assert again[0] == 200 and client.last_headers.get("Guestha-Replayed") == "true"
    finally:
        client.close()
        agent.stop()


SLOW_META = """#!/bin/sh
case "$1" in
meta-data) sleep 7; echo '<?xml version="1.0"?><resource-agent name="slow"><parameters/>'
           echo '<actions/></resource-agent>'; exit 0;;
monitor) exit 7;;
*) exit 0;;
esac
"""


@root_only
def test_a_retry_of_an_operation_still_running_waits_a_bounded_time(tmp_path: Path) -> None:
    """A PUT /v1/config that takes 14 s (two OCF agents whose meta-data take 7 s each to
    read: real programs, in a resource.d of the test's own bind-mounted over the system's
    in the agent's private mount namespace). A retry with the same operation id on another
    connection is answered after 10 s with 503 OperationInProgress, not held until the
    first is done; once it is, the retry gets the recorded answer."""
    resource_d = tmp_path / "resource.d"
    for name in ("slow1", "slow2"):
        script = resource_d / "ghtest" / name
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(SLOW_META)
        script.chmod(0o755)
    python = agent_python()
    wrapper = tmp_path / "python-with-slow-agents"
    wrapper.write_text(
        "#!/bin/sh\n"
        "exec unshare --mount --propagation private /bin/sh -c "
        "'dir=$1; shift; mount --bind \"$dir\" /usr/lib/ocf/resource.d && exec \"$@\"' "
        f"sh {resource_d} {python} \"$@\"\n")
    wrapper.chmod(0o755)
    agent = AgentProc("web-a", "127.0.1.51", tmp_path / "agent", Pki(tmp_path / "pki"),
                      port=PORT + 2, heartbeat_port=PORT + 3, python=str(wrapper)).start()
    first, second = agent.client(), agent.client()
    first.timeout = second.timeout = 30.0
    body = {"groups": [{"name": "g", "type": "Parallel", "resources": [
        {"name": "a", "type": "OCF", "attributes": {"agent": "ghtest:slow1"}},
        {"name": "b", "type": "OCF", "attributes": {"agent": "ghtest:slow2"}}]}],
        "fencing": {"selfFenceTimeoutSeconds": 0}}
    op = f"op-{uuid.uuid4().hex}"
    answers: dict[str, Any] = {}
    try:
        putting = threading.Thread(target=lambda: answers.setdefault(
            "first", first.command("PUT", "/v1/config", 1, body, operation_id=op)))
        putting.start()
        time.sleep(1.0)
        began = time.monotonic()
        code, retried = second.command("PUT", "/v1/config", 1, body, operation_id=op)
        waited = time.monotonic() - began
        assert (code, retried.get("reason")) == (503, "OperationInProgress"), (waited, retried)
        assert "still being applied" in retried["message"]
        assert putting.is_alive(), f"the first PUT finished after {waited:.1f} s already"
        putting.join(30)
        assert answers["first"][0] == 200, answers
        again = second.command("PUT", "/v1/config", 1, body, operation_id=op)
        assert again == answers["first"]
        assert second.last_headers.get("Guestha-Replayed") == "true"
    finally:
        first.close()
        second.close()
        agent.retire()
        agent.stop()


def test_a_process_output_log_is_rotated_by_size(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A program that writes fast: its log stays bounded (LOG_KEEP + 1 files of about
    LOG_MAX_BYTES) while it keeps writing, lines intact, no holes."""
    limit = 64 << 10
    monkeypatch.setattr(process_module, "LOG_MAX_BYTES", limit, raising=False)
    tag = new_tag()
    writer = ("import sys, time\n"
              "n = 0\n"
              "while True:\n"
              "    for _ in range(16):\n"
              "        n += 1\n"
              "        sys.stdout.write(f'line {n:09d} ' + 'x' * 1000 + '\\n')\n"
              "    sys.stdout.flush()\n"
              "    time.sleep(0.01)\n")
    watcher = ExitWatcher()
    context = ResourceContext("g", "w", str(tmp_path / "w"), watcher, lambda: None)
    proc: Any = create("Process", context, {"command": ["python3", "-c", writer, tag]})
    log = tmp_path / "w" / "output.log"
    try:
        proc.online(10)
        written = 0
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            assert proc.monitor(5).state == "Online"
            numbers = re.findall(rb"line (\d{9}) ", log.read_bytes())
            written = max([written, *map(int, numbers)])
            time.sleep(0.05)
        assert written * 1015 > 10 * limit, "the program wrote much more than is kept"
        kept = sum(p.stat().st_size for p in log.parent.glob("output.log*"))
        assert kept <= 6 * limit, f"{kept} bytes of output kept"
        names = sorted(p.name for p in log.parent.glob("output.log*"))
        assert names == ["output.log", "output.log.1", "output.log.2", "output.log.3"]
        for path in log.parent.glob("output.log.*"):
            data = path.read_bytes()
            assert len(data) <= limit and b"\0" not in data, path
        proc.offline(10)
        proc.online(10)  # a new run: the last run's log moves to .1
        wait_for(lambda: log.exists() and log.stat().st_size > 0, 5, what="new output")
        assert len(list(log.parent.glob("output.log*"))) == 4
    finally:
        proc.clean(10)
        watcher.close()
        kill_tagged(tag)
