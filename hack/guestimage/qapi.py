"""Clients of the two JSON protocols qemu speaks on unix sockets: QMP (the machine
monitor) and qemu-guest-agent's (through the virtio-serial port's host socket).

Both are one JSON object per line. Every wait is bounded: a method given `timeout`
raises TimeoutError when no answer came in time. QMP interleaves asynchronous events
with answers: they are kept in `events` in arrival order.

The guest agent's host socket accepts a connection before the agent in the guest runs
(and after it restarted, e.g. after a reset): stale answers may be queued, so `sync`
sends guest-sync with a fresh id and reads until that id comes back, as qemu's
documentation asks, before any command is trusted.
"""

from __future__ import annotations

import base64
import itertools
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class QapiError(Exception):
    """The other side answered with an error object."""


class _JsonLines:
    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError:
            self.sock.close()
            raise
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self, deadline: float) -> dict[str, Any] | None:
        """The next object, or None for a line that is not one (guest-agent noise)."""
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.path}: no answer in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"{self.path}: closed by qemu")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            value = json.loads(line.strip(b"\xff").decode("utf-8", "replace") or "null")
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


class Qmp:
    """A QMP session: capabilities negotiated on connect."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.lines = _JsonLines(path, timeout)
        self.events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        greeting = self.lines.receive(deadline)
        if not greeting or "QMP" not in greeting:
            raise QapiError(f"{path}: not a QMP greeting: {greeting!r}")
        self.execute("qmp_capabilities", timeout=timeout)

    def close(self) -> None:
        self.lines.close()

    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                timeout: float = 10.0) -> Any:
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.lines.send(message)
        deadline = time.monotonic() + timeout
        while True:
            answer = self.lines.receive(deadline)
            if answer is None:
                continue
            if "event" in answer:
                self.events.append(answer)
            elif "error" in answer:
                raise QapiError(f"QMP {command}: {answer['error']}")
            elif "return" in answer:
                return answer["return"]

    def poll_events(self, timeout: float) -> list[dict[str, Any]]:
        """Reads events for up to `timeout` seconds (returns early once one came): all
        events so far."""
        deadline = time.monotonic() + timeout
        count = len(self.events)
        while len(self.events) == count:
            try:
                answer = self.lines.receive(deadline)
            except TimeoutError:
                break
            if answer is not None and "event" in answer:
                self.events.append(answer)
        return self.events


@dataclass(frozen=True)
class ExecResult:
    """A finished guest-exec: exit code (None if killed by a signal), output."""

    exitcode: int | None
    signal: int | None
    stdout: str
    stderr: str


_ids = itertools.count(int(time.time() * 1000) % 1_000_000_000)


class GuestAgent:
    """qemu-guest-agent through its host socket; synchronised on connect."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.lines = _JsonLines(path, timeout)
        try:
            self.sync(timeout)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.lines.close()

    def sync(self, timeout: float) -> None:
        token = next(_ids)
        self.lines.send({"execute": "guest-sync", "arguments": {"id": token}})
        deadline = time.monotonic() + timeout
        while True:
            answer = self.lines.receive(deadline)
            if answer is not None and answer.get("return") == token:
                return

    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                timeout: float = 10.0) -> Any:
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.lines.send(message)
        deadline = time.monotonic() + timeout
        while True:
            answer = self.lines.receive(deadline)
            if answer is None:
                continue
            if "error" in answer:
                raise QapiError(f"guest agent {command}: {answer['error']}")
            if "return" in answer:
                return answer["return"]

    def exec(self, argv: list[str], timeout: float = 60.0) -> ExecResult:
        """Runs `argv` in the guest (guest-exec) and waits for it to end."""
        deadline = time.monotonic() + timeout
        started = self.execute("guest-exec", {"path": argv[0], "arg": argv[1:],
                                              "capture-output": True}, timeout)
        pid = started["pid"]
        while True:
            status = self.execute("guest-exec-status", {"pid": pid},
                                  max(1.0, deadline - time.monotonic()))
            if status.get("exited"):
                return ExecResult(
                    status.get("exitcode"), status.get("signal"),
                    base64.b64decode(status.get("out-data", "")).decode("utf-8", "replace"),
                    base64.b64decode(status.get("err-data", "")).decode("utf-8", "replace"))
            if time.monotonic() >= deadline:
                raise TimeoutError(f"guest-exec {argv}: still running after {timeout:g} s")
            time.sleep(0.2)
