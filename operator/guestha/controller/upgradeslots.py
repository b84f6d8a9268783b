"""How many clusters restart an agent into a new bundle at once, across the operator.

Each cluster rolls its agents out one member at a time (controller.rollout). After the
operator itself is upgraded, though, every cluster finds its agents outdated in the same
minute: 500 clusters would each upload a bundle over the channel and restart an agent
within seconds, a burst of uploads through one event loop and of guests busy restarting.
So, as a Deployment's maxUnavailable bounds a rolling update, the operator bounds the
clusters with an upgrade in flight (`--max-agent-upgrades`, default DEFAULT_LIMIT):

- first come, first served among the clusters ready to start one (their rollout would
  send a bundle now); a cluster that stops being ready (it moves, a member went silent)
  leaves the queue, so it never holds up the others;
- an upgrade in flight always holds a slot, even past the limit: one an operator recalls
  after a restart or a take-over (status.agentUpgrade) is seen through, never abandoned;
- a slot freed wakes the clusters now first in line, so no one waits for its next pass.

Pure bookkeeping on the event loop (no lock: one thread), tested with tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_LIMIT = 10
# A waiter that has not asked again for this long left without saying so (its supervisor
# ended): it is dropped from the queue. Supervisors pass at least every 30 s.
STALE_SECONDS = 120.0


@dataclass
class Waiter:
    since: float  # when it first asked: its place in line
    asked: float  # when it last asked
    wake: Callable[[], None]


@dataclass
class UpgradeSlots:
    """The operator's agent-upgrade slots (see the module docstring). Keys name clusters
    ("namespace/name")."""

    limit: int = DEFAULT_LIMIT
    holders: set[str] = field(default_factory=set)
    queue: dict[str, Waiter] = field(default_factory=dict)  # in the order they asked

    def hold(self, key: str) -> None:
        """`key` has an upgrade in flight: it holds a slot, whatever the limit."""
        self.queue.pop(key, None)
        self.holders.add(key)

    def ask(self, key: str, now: float, wake: Callable[[], None]) -> bool:
        """`key` is ready to start an upgrade: True when it may (it then holds a slot),
        False when it waits in line (`wake` is called when its turn may have come)."""
        if key in self.holders:
            return True
        waiter = self.queue.get(key)
        if waiter is None:
            self.queue[key] = Waiter(now, now, wake)
        else:
            waiter.asked, waiter.wake = now, wake
        self._prune(now)
        if key in self._first(self.limit - len(self.holders)):
            self.hold(key)
            return True
        return False

    def release(self, key: str) -> None:
        """`key` has no upgrade in flight, and does not wait for one."""
        self.queue.pop(key, None)
        if key in self.holders:
            self.holders.discard(key)
            for first in self._first(self.limit - len(self.holders)):
                self.queue[first].wake()

    def ahead(self, key: str) -> int:
        """How many clusters are in line before `key`."""
        return list(self.queue).index(key) if key in self.queue else 0

    def _first(self, free: int) -> list[str]:
        return list(self.queue)[:max(0, free)]

    def _prune(self, now: float) -> None:
        for key in [k for k, w in self.queue.items() if now - w.asked > STALE_SECONDS]:
            del self.queue[key]


SLOTS = UpgradeSlots()


def configure(limit: int) -> None:
    """The operator's flag: at most `limit` clusters upgrade an agent at once."""
    if limit < 1:
        raise ValueError(f"--max-agent-upgrades must be at least 1, not {limit}")
    SLOTS.limit = limit
