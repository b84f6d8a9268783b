"""Kit for the agent's resource and group tests and hack/bench/resources.py: event capture,
tagged test programs, guest hosts that run code with the agent's sources.

Every program a test starts carries a unique tag in its command line, so the test can see
whether it really runs (and kill whatever is left when the test ends).
"""

from __future__ import annotations

import base64
import io
import os
import signal
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from guestha.agent.groups import GroupRunner
from guestha.protocol.config import GroupConfig

KITS = Path(__file__).resolve().parent
TESTS = KITS.parent
REPO = TESTS.parent
SLEEP = "import time\nwhile True: time.sleep(60)"


def new_tag() -> str:
    return f"ghtest-{uuid.uuid4().hex[:10]}"


def sleeper(tag: str, *extra: str) -> list[str]:
    """A command that runs until killed, recognisable by `tag` in its command line."""
    return ["python3", "-c", SLEEP, tag, *extra]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def pids_with(tag: str) -> list[int]:
    """Running processes whose command line contains `tag` (not this test process)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and tag in cmdline(int(entry)) \
                and running(int(entry)):
            found.append(int(entry))
    return sorted(found)


def kill_tagged(tag: str) -> None:
    for pid in pids_with(tag):
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(0.01)


def in_thread(call: Callable[[], Any], timeout: float, what: str) -> Any:
    """call() in a thread: its result (or its exception), or an AssertionError naming
    `what` if it has not returned after `timeout` seconds. A bound on a wait, for calls
    that would hang if broken: not a measure of speed (hack/bench/ has those)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = call()
        except BaseException as e:  # reported below
            out["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"{what} hung (still running after {timeout:g} s)")
    if "error" in out:
        raise out["error"]
    return out["result"]


class Events:
    """An emit() for GroupRunner that records (monotonic time, kind, payload)."""

    def __init__(self) -> None:
        self.items: list[tuple[float, str, dict[str, Any]]] = []
        self._cond = threading.Condition()

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        with self._cond:
            self.items.append((time.monotonic(), kind, dict(payload)))
            self._cond.notify_all()

    def find(self, kind: str, since: float = 0.0,
             **match: Any) -> list[tuple[float, dict[str, Any]]]:
        with self._cond:
            return [(t, p) for t, k, p in self.items if k == kind and t >= since
                    and all(p.get(key) == value for key, value in match.items())]

    def wait(self, kind: str, timeout: float = 10.0, since: float = 0.0,
             **match: Any) -> tuple[float, dict[str, Any]]:
        """The first event of `kind` at or after `since` whose payload has `match`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, k, p in self.items:
                    if k == kind and t >= since and all(p.get(a) == b for a, b in match.items()):
                        return t, p
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(round(t - since, 3), k, p) for t, k, p in self.items if t >= since]
                    raise AssertionError(f"no {kind} {match} within {timeout} s; saw {seen}")
                self._cond.wait(left)

    def kinds(self, since: float = 0.0, group: str | None = None) -> list[tuple[str, str, str]]:
        """(kind, resource or "", state or reason) of events since `since`, for order checks."""
        with self._cond:
            return [(k, p.get("resource", ""), p.get("state", p.get("reason", "")))
                    for t, k, p in self.items
                    if t >= since and (group is None or p.get("group") == group)]


def group(name: str, resources: list[dict[str, Any]], kind: str = "Failover") -> GroupConfig:
    return GroupConfig.from_dict({"name": name, "type": kind, "resources": resources})


def resource(name: str, rtype: str, attributes: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """A resource with test-friendly timing (1 s monitor) unless overridden."""
    raw: dict[str, Any] = {"name": name, "type": rtype, "attributes": dict(attributes),
                           "monitor": {"intervalSeconds": 1, "offlineIntervalSeconds": 1,
                                       "timeoutSeconds": 10},
                           "timeouts": {"onlineSeconds": 20, "offlineSeconds": 20,
                                        "cleanSeconds": 20}}
    raw.update(extra)
    return raw


# A monitor interval that no wait in the tests comes near: a change seen within one of
# them was reported by the resource itself (a Process's exit), not found by a monitor.
PUSHED = {"intervalSeconds": 3600, "offlineIntervalSeconds": 1, "timeoutSeconds": 10}


def group_state(runner: GroupRunner, name: str) -> str:
    return str(runner.snapshot()["groups"].get(name, {}).get("state", ""))


def res(runner: GroupRunner, group_name: str, name: str) -> dict[str, Any]:
    for entry in runner.snapshot()["groups"][group_name]["resources"]:
        if entry["name"] == name:
            return dict(entry)
    raise KeyError(name)


def wait_group(runner: GroupRunner, name: str, state: str, timeout: float = 15.0) -> None:
    if not runner.wait_until(lambda s: s["groups"].get(name, {}).get("state") == state,
                             timeout):
        raise AssertionError(f"group {name} not {state} within {timeout} s: "
                             f"{runner.snapshot()['groups'].get(name)}")


def pid_of(runner: GroupRunner, group_name: str, name: str) -> int:
    message = res(runner, group_name, name)["message"]
    assert message.startswith("pid "), message
    return int(message.split()[1])


@contextmanager
def running_runner(state_dir: str, tag: str) -> Iterator[tuple[GroupRunner, Events]]:
    """A GroupRunner whose groups are taken offline (and tagged leftovers killed) at the end."""
    events = Events()
    runner = GroupRunner(state_dir, events)
    try:
        yield runner, events
    finally:
        try:
            for name in runner.snapshot()["groups"]:
                try:
                    runner.clear(name)
                    runner.offline(name)
                except ValueError:
                    pass
            runner.wait_until(lambda s: all(g["state"] in ("Offline", "Faulted")
                                            for g in s["groups"].values()), 30)
        finally:
            runner.close()
            kill_tagged(tag)


@contextmanager
def guest_host(state_dir: str, name: str) -> Iterator[Any]:
    """A simulated guest (kubevirtsim's guest host: its own PID 1 that reaps orphans and
    serves systemctl, its own network, mount and PID namespaces), killed at the end."""
    from kubevirtsim.guesthost import GuestHost, GuestSpec, cleanup_stale

    spec = GuestSpec(key=f"ghtest/{name}", uid=f"uid-{name}-{new_tag()}", hostname=name,
                     datasource="NoCloud", user_data=b"#cloud-config\n{}\n",
                     network_data=None, node="node-1")
    guest = GuestHost(spec, Path(state_dir))
    try:
        guest.boot()
        wait_for(lambda: guest.cloud_init_status() != "running", 30, "the guest's cloud-init")
        yield guest
    finally:
        guest.kill()
        cleanup_stale(Path(state_dir))


GUEST_SOURCES = "/opt/guestha-tests"  # where a guest finds the sources it runs


def _ship_sources(guest: Any) -> None:
    """Copy the agent package and these test modules into the guest, as a real guest has to
    be given its files: the guest's /tmp is its own, so a checkout under the host's /tmp
    (where CI may clone) is not visible inside it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(str(REPO / "operator" / "guestha"), "guestha",
                filter=lambda t: None if "__pycache__" in t.name else t)
        tar.add(str(KITS), "kits", filter=lambda t: None if "__pycache__" in t.name else t)
        for module in sorted((TESTS / "agent").glob("*.py")):
            tar.add(str(module), module.name)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    staging = f"{GUEST_SOURCES}.b64"
    guest.exec(["sh", "-c", f"rm -rf {GUEST_SOURCES} {staging}; mkdir -p {GUEST_SOURCES}"])
    for start in range(0, len(encoded), 60_000):  # one argument stays under the 128 KiB limit
        chunk = encoded[start:start + 60_000]
        appended = guest.exec(["sh", "-c", f'printf %s "$1" >> {staging}', "sh", chunk])
        assert appended.returncode == 0, appended.stderr
    unpacked = guest.exec(["sh", "-c", f"base64 -d {staging} | tar -xz -C {GUEST_SOURCES}"])
    assert unpacked.returncode == 0, unpacked.stderr


def run_in_guest(guest: Any, code: str, *args: str, timeout: float = 120) -> str:
    """Run python code inside the guest with the agent package and these helpers importable
    (the test's own interpreter: the code imports test modules, which need pytest);
    its stdout."""
    _ship_sources(guest)
    prelude = f"import sys; sys.path[:0] = [{GUEST_SOURCES!r}]\n"
    result = guest.exec([sys.executable, "-c", prelude + code, *args], timeout=timeout)
    output = str(result.stdout.decode(errors="replace"))
    assert result.returncode == 0, (
        f"in the guest:\n{output}\n{result.stderr.decode(errors='replace')}")
    return output


def kill_scenario(kind: str, trials: int, spread: bool) -> dict[str, Any]:
    """Run where an agent runs (a guest host): a group of one resource, a Process (seen
    through its exit: its monitor interval is PUSHED) or an OCF heartbeat:anything (found
    by its 1 s monitor), online, then its process SIGKILLed `trials` times, waiting for
    each restart in place. `spread`: each kill at a random moment of the monitor interval.

    Returns {"restarts": the count each ResourceRestarted carried, "faults": how many
    ResourceFaulted, "seconds": from each kill to its ResourceRestarted}: the test asserts
    on the counts, hack/bench/resources.py reports the seconds.
    """
    import random
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="ghtest-kills-"))
    tag = new_tag()
    pidfile = work / "anything.pid"
    if kind == "Process":
        spec = resource("r", "Process", {"command": sleeper(tag)}, monitor=dict(PUSHED))
    else:
        spec = resource("r", "OCF", {"agent": "heartbeat:anything", "parameters": {
            "binfile": "/bin/sleep", "cmdline_options": "1000", "pidfile": str(pidfile)}})
    spec.update(restartLimit=trials + 1, confIntervalSeconds=0)
    restarts: list[int] = []
    seconds: list[float] = []
    with running_runner(str(work / "state"), tag) as (runner, events):
        runner.configure([group("g", [spec])])
        wait_group(runner, "g", "Offline", 10)
        runner.online("g")
        for _ in range(trials):
            wait_group(runner, "g", "Online", 20)
            if spread:
                time.sleep(random.uniform(0.05, 1.05))  # anywhere in the monitor interval
            pid = pid_of(runner, "g", "r") if kind == "Process" else int(pidfile.read_text())
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            seen, payload = events.wait("ResourceRestarted", 10, since=killed, resource="r")
            restarts.append(int(payload["restarts"]))
            seconds.append(seen - killed)
        faults = len(events.find("ResourceFaulted"))
    return {"restarts": restarts, "faults": faults, "seconds": seconds}
