"""The operator's event long-poll on one agent, kept in a thread of its own.

Tests wait for what an agent reports (a fault, a state change) the way the operator
learns it; benchmarks time the same events (Received.at).
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from typing import Any

from kits.client import Client


@dataclass(frozen=True)
class Received:
    """One agent event and the moment (time.monotonic()) the operator's side had it."""

    at: float
    stream: str
    event: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.event["kind"])

    @property
    def seq(self) -> int:
        return int(self.event["seq"])

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.event.get("data") or {})


class EventReader:
    """Keeps every event with the moment it arrived; after an agent restart (410 with
    another stream) it reads the new run from its first event. Each poll of a client that
    carries the operator's epoch counts as operator contact at the agent (when it arrives),
    so a running reader holds the operator's vote there."""

    def __init__(self, client: Client, poll_seconds: float = 2.0) -> None:
        self.client = client
        self.poll_seconds = poll_seconds
        self.received: list[Received] = []
        self.errors = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._stream: str | None = None
        self._after = 0
        self._thread = threading.Thread(
            target=self._run, name=f"events-{client.server_name}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.client.timeout + 5)
        self.client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            path = f"/v1/events?after={self._after}&timeout={self.poll_seconds:g}"
            if self._stream:
                path += f"&stream={self._stream}"
            try:
                code, body = self.client.get(path)
            except (OSError, http.client.HTTPException, ValueError):
                self.client.close()
                self.errors += 1
                self._stop.wait(0.05)
                continue
            now = time.monotonic()
            if code == 410:
                if body.get("stream") != self._stream:  # another run of the agent
                    self._stream, self._after = body.get("stream"), 0
                else:  # fell out of the ring: go on from the oldest held
                    self._after = max(int(body.get("firstSeq") or 1) - 1, 0)
                continue
            if code != 200:
                self.errors += 1
                self._stop.wait(0.2)
                continue
            stream = str(body["stream"])
            self._stream = stream
            with self._cond:
                for event in body["events"]:
                    self.received.append(Received(now, stream, event))
                    self._after = int(event["seq"])
                self._cond.notify_all()

    def mark(self) -> int:
        """A position: wait()/since() with it see only what arrives from now on."""
        with self._cond:
            return len(self.received)

    def since(self, mark: int = 0, kind: str | None = None, **data: Any) -> list[Received]:
        """The events after `mark` (of `kind`, with these data fields), without waiting."""
        with self._cond:
            found = self.received[mark:]
        return [
            r
            for r in found
            if (kind is None or r.kind == kind) and all(r.data.get(k) == v for k, v in data.items())
        ]

    def wait(self, kind: str, timeout: float, mark: int = 0, **data: Any) -> Received:
        """The first event of `kind` (with these data fields) after `mark`; waits for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for r in self.received[mark:]:
                    if r.kind == kind and all(r.data.get(k) == v for k, v in data.items()):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(r.seq, r.kind, r.data) for r in self.received[mark:]][-15:]
                    raise AssertionError(
                        f"{self.client.server_name}: no {kind} {data} event "
                        f"within {timeout}s; the last seen: {seen}"
                    )
                self._cond.wait(left)
