"""The cluster's heartbeat secret rotated with an overlap, so that no peer is ever judged
silent because of a rotation.

The agents sign and check heartbeats with pair keys derived from the secret
(guestha.protocol.keys). Changing the secret at once would leave, for a moment, agents
that sign with the new pair keys beside agents that only know the old ones, and each side
would drop the other's datagrams (badMac) and count it silent. So the operator goes
through two steps, each confirmed by every running member's agent before the next:

1. ACCEPT: agents send with the old pair key and accept the new one too
   (`peers[].acceptKeys`);
2. SEND: agents send with the new pair key and still accept the old one;
then the new secret replaces the old one in the CA Secret and agents are given only the
new pair keys. At every moment each agent accepts what every other agent sends.

A step waits for every member whose VMI runs to confirm its configuration: a member the
operator cannot reach holds the rotation (it is reported in `status.heartbeatKeyRotation`),
since it could not follow. A member without a running guest gets the keys of the moment
when its agent comes back, as any configuration.

A rotation starts when the annotation ROTATE_ANNOTATION of the InGuestCluster gets a
value that `status.heartbeatKeyRotation.value` does not have yet (as `guestha.io/clear`
works for faults), e.g. after a guest was compromised. The next secret is kept in the CA
Secret (credentials: `heartbeat.key.next`) from the first step on, so an operator that
starts in the middle of a rotation starts again at ACCEPT, which accepts both keys: safe
whatever step the agents had reached.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

ROTATE_ANNOTATION = "guestha.io/rotate-heartbeat-key"
EVENT_STARTED = "HeartbeatKeyRotationStarted"
EVENT_DONE = "HeartbeatKeyRotated"


class Phase(enum.Enum):
    IDLE = "Idle"
    ACCEPT = "AcceptingNewKey"
    SEND = "SendingNewKey"


def secrets_for(phase: Phase, current: bytes, upcoming: bytes | None
                ) -> tuple[bytes, tuple[bytes, ...]]:
    """Pure: (the secret the agents sign with, the secrets they also accept)."""
    if phase is Phase.IDLE or upcoming is None:
        return current, ()
    if phase is Phase.ACCEPT:
        return current, (upcoming,)
    return upcoming, (current,)


def advance(phase: Phase, confirmed: bool) -> Phase | None:
    """Pure: the step after `phase` once every running member `confirmed` it (None: the
    rotation is complete, the new secret replaces the old); `phase` while not."""
    if not confirmed or phase is Phase.IDLE:
        return phase
    return Phase.SEND if phase is Phase.ACCEPT else None


def requested(body: Mapping[str, Any]) -> str | None:
    """The annotation's value when it asks for a rotation not done yet, else None."""
    wanted = ((body.get("metadata") or {}).get("annotations") or {}).get(ROTATE_ANNOTATION)
    done = ((body.get("status") or {}).get("heartbeatKeyRotation") or {}).get("value")
    return wanted if wanted and wanted != done else None


@dataclass(frozen=True)
class KeyStore:
    """The CA Secret's heartbeat keys (controller.credentials has the real calls)."""

    begin: Callable[[], Awaitable[bytes]]  # the next secret, stored (made once)
    finish: Callable[[bytes], Awaitable[bool]]  # the next becomes the current one


@dataclass
class HeartbeatKeys:
    """One cluster's heartbeat secret and its rotation (see the module docstring)."""

    namespace: str
    cluster: str
    current: bytes = field(repr=False)
    upcoming: bytes | None = field(default=None, repr=False)  # during a rotation
    store: KeyStore | None = None  # None: never rotated (unit tests)
    phase: Phase = Phase.IDLE
    value: str | None = None  # the annotation's value being carried out
    confirmed: bool = False  # every running member took this phase's configuration
    waiting: str = ""  # who a step waits for (status)

    def __post_init__(self) -> None:
        if self.upcoming is not None and self.phase is Phase.IDLE:
            self.phase = Phase.ACCEPT  # a rotation an earlier operator began

    @property
    def send(self) -> bytes:
        return secrets_for(self.phase, self.current, self.upcoming)[0]

    @property
    def accept(self) -> tuple[bytes, ...]:
        return secrets_for(self.phase, self.current, self.upcoming)[1]

    def took(self, running: Mapping[str, bool]) -> None:
        """After a pass's pushes: whether each member whose guest runs confirmed the
        configuration of this phase (member -> confirmed)."""
        behind = sorted(m for m, ok in running.items() if not ok)
        self.confirmed = not behind
        self.waiting = f"waiting for {', '.join(behind)}" if behind else ""

    async def step(self, body: Mapping[str, Any],
                   event: Callable[[str, str, str], None]) -> bool:
        """Starts or advances a rotation (the leader only); True when the keys changed
        (the next pass puts the new configurations)."""
        if self.store is None:
            return False
        if self.phase is Phase.IDLE:
            wanted = requested(body)
            if wanted is None:
                return False
            try:
                self.upcoming = await self.store.begin()
            except Exception as e:  # the API: tried again at the next pass
                log.warning("%s/%s: heartbeat key rotation not started: %s", self.namespace,
                            self.cluster, e)
                return False
            self.phase, self.value, self.confirmed = Phase.ACCEPT, wanted, False
            event("Normal", EVENT_STARTED, f"rotating the heartbeat secret ({wanted}): "
                  "agents accept the new pair keys first")
            return True
        if self.value is None:
            self.value = requested(body) or "resumed"
        nxt = advance(self.phase, self.confirmed)
        if nxt is self.phase:
            return False
        if nxt is None:
            assert self.upcoming is not None
            try:
                done = await self.store.finish(self.upcoming)
            except Exception as e:
                log.warning("%s/%s: heartbeat key not replaced: %s", self.namespace,
                            self.cluster, e)
                done = False
            if not done:
                return False
            self.current, self.upcoming, self.phase = self.upcoming, None, Phase.IDLE
            event("Normal", EVENT_DONE, "every agent signs and accepts only the new "
                  "heartbeat pair keys")
        else:
            self.phase = nxt
        self.confirmed = False
        log.info("%s/%s: heartbeat key rotation: %s", self.namespace, self.cluster,
                 self.phase.value)
        return True

    def status(self, old: Mapping[str, Any], now: str) -> dict[str, Any]:
        """`status.heartbeatKeyRotation` as it should be (kept as it was when idle)."""
        kept = dict(old.get("heartbeatKeyRotation") or {})
        if self.phase is Phase.IDLE:
            if self.value is not None and (kept.get("value"), kept.get("phase")) != (
                    self.value, "Done"):
                return {"heartbeatKeyRotation": {"value": self.value, "phase": "Done",
                                                 "time": now}}
            return {}
        entry = {"value": self.value or "", "phase": self.phase.value,
                 "time": kept.get("time") if kept.get("phase") == self.phase.value else now}
        if self.waiting:
            entry["message"] = self.waiting
        return {"heartbeatKeyRotation": entry}
