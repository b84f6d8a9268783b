"""Several real agent processes on one Lan, and an operator that holds its vote at each:
the set-up of the agent tier's heartbeat, quorum and partition tests."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kits.agentproc import AgentProc
from kits.client import Client
from kits.interpreters import python39
from kits.lan import Lan, lan
from kits.pki import Pki


class Operator:
    """Holds the operator's vote: polls every reachable agent twice a second, with the
    operator's epoch on each request (docs/agent-api.md: what counts as contact)."""

    def __init__(self, agents: list[AgentProc], epoch: int = 1) -> None:
        def clients() -> dict[str, Client]:
            return {a.member: a.client(epoch=epoch, timeout=1.5) for a in agents}

        self.epoch = epoch
        # The test's own requests and the vote-keeping thread each have their connections:
        # an http.client connection is not for two threads at once.
        self.clients = clients()
        self._pollers = clients()
        self.paused: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for member, client in self._pollers.items():
                if member in self.paused:
                    continue
                try:
                    client.get("/v1/healthz")
                except Exception:
                    client.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in [*self.clients.values(), *self._pollers.values()]:
            c.close()


@contextmanager
def lan_agents(folder: Path, tag: str, members: Sequence[str],
               options: Mapping[str, Mapping[str, Any]] | None = None,
               ) -> Iterator[tuple[Lan, list[AgentProc]]]:
    """One agent per member, each in a network namespace of its own on one Lan; the second
    runs under Python 3.9 (the oldest guests have) where one is installed. `options` holds
    AgentProc fields per member. On exit every agent is resumed, reconnected, retired (its
    groups taken off) and stopped."""
    pki = Pki(folder / "pki")
    with lan(tag, len(members)) as network:
        agents = [AgentProc(m, network.address(i), folder / m, pki, netns=network.node_ns(i),
                            python=(python39() or sys.executable) if i == 1
                            else sys.executable, **(options or {}).get(m, {}))
                  for i, m in enumerate(members)]
        try:
            for a in agents:
                a.start(wait=False)
            for a in agents:
                a.wait_listening()
            yield network, agents
        finally:
            for a in agents:
                if a.proc is not None and a.proc.poll() is None:
                    os.kill(a.proc.pid, signal.SIGCONT)
            for i, a in enumerate(agents):
                network.mend(i)
                a.retire()
                a.stop()
