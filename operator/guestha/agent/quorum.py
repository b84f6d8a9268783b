"""Quorum and the self-fencing decision (guestha's part of I/O fencing, Safety rule 1c).

The promise the operator's failover rests on: a member that cannot reach a majority of
votes takes its Failover groups offline by itself within selfFenceTimeoutSeconds, counted
from the last moment it had a majority. Once that bound (and the offline timeout) has
passed, the operator may start the groups elsewhere.

Votes are the cluster's members plus one for the operator; an agent that has no
configuration yet does not know the members, and has no quorum whoever it hears (it
counted itself and the operator as a majority of a cluster of one, and the
configuration that named its peers then read as a quorum lost). Present are this agent, every
peer that counts (heard within the peer timeout, and hearing this agent's current run:
guestha.agent.heartbeat), and the operator while a request of the operator in charge
arrived within the operator lease. A strict majority of votes present is quorum.

The clock of the bound is `last_held`, the last moment quorum was held. Nothing but quorum
itself moves it forward:
- A pause of this agent (live migration's last phase, SIGSTOP, a stalled guest) does not:
  the pause is counted in the bound, as the rest of the cluster counted it. After a pause
  the silence it slept through was its own, so it re-checks (asks its peers to answer at
  once and waits `recheck_window` seconds of its own running time) before it acts; a pause
  during a re-check does not start the re-check again. When the re-check ends without
  quorum and the bound has passed, it fences at once.
- A restart does not either: `last_held` is persisted (CLOCK_MONOTONIC, with the kernel's
  boot id beside it: guestha.agent.store.BootRecord) and a restarted agent continues from
  it, re-checking first as after a pause. A new boot starts afresh (nothing runs).
A self-fence that finished (Fenced) or failed (Failed) is kept across a restart too;
Failed stays for the rest of the boot (the guest is due to be reset).

`judge` is the whole rule: a pure function of (state, observation, settings, now), with
no clock reads and no I/O, so the rules are checked with tables (tests/unit). `Quorum`
holds the current state for the agent's threads.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

from guestha.agent.events import rfc3339 as _rfc3339
from guestha.protocol import TYPE_CHECKING
from guestha.protocol.desired import FencingConfig, HeartbeatConfig
from guestha.protocol.states import FAILED, FENCED, FENCING, IDLE, PENDING, RECHECKING
from guestha.protocol.status import QuorumStatus, SelfFenceStatus

if TYPE_CHECKING:
    from typing import Any

KEPT_ACROSS_RESTARTS = (FENCED, FAILED)

GAP_SECONDS = 1.5  # a judgement this much later than the one before: the agent was paused
PERSIST_SECONDS = 1.0  # how stale the persisted last_held may get while quorum holds
EPSILON = 1e-6  # times are floats: a microsecond of rounding is no time


def recheck_seconds(interval: float) -> float:
    """How long a re-check listens for the peers' answers (running seconds): three
    heartbeat intervals, and at least a second."""
    return max(1.0, 3 * interval)


_FENCING, _HEARTBEAT = FencingConfig(), HeartbeatConfig()  # the protocol's defaults


@dataclass(frozen=True)
class Settings:
    """The rule's parameters (from the desired configuration's fencing and heartbeat;
    until one arrives, from the protocol's defaults)."""

    self_fence_timeout: float = float(_FENCING.self_fence_timeout_seconds)  # 0: never
    operator_lease: float = float(_FENCING.operator_lease_seconds)
    # seconds of running time to hear answers after a pause
    recheck_window: float = recheck_seconds(_HEARTBEAT.interval_milliseconds / 1000)
    gap: float = GAP_SECONDS


@dataclass(frozen=True)
class Observation:
    """What the agent sees at one tick."""

    members: tuple[str, ...]  # every member, this one included
    peers: tuple[str, ...]  # the peers that count (see the module docstring)
    operator_contact: float | None  # arrival of the operator's last counted request
    # a configuration from the operator was applied: until then the agent does not know
    # its cluster's members, and no count of them is a majority (no quorum)
    configured: bool = True


@dataclass(frozen=True)
class State:
    """Everything the rule remembers between two judgements (monotonic seconds)."""

    last_tick: float  # when the previous judgement ran
    last_held: float  # the last moment quorum was held (a fresh run: when it started)
    phase: str = IDLE
    phase_since: float = 0.0
    reason: str = "starting"
    has_quorum: bool = False
    since: float = 0.0  # when has_quorum last changed
    recheck_left: float = 0.0  # running seconds the re-check under way still takes
    recheck_cause: str = ""
    paused: float = 0.0  # seconds this agent was paused since quorum was last held
    persisted_held: float | None = None  # last_held as last persisted
    # the last observation, for status and reasons
    members: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()
    votes: int = 2
    present: int = 1
    operator_present: bool = False
    operator_contact: float | None = None
    configured: bool = True


@dataclass(frozen=True)
class Decision:
    """What the agent's main loop must do after one judgement."""

    fence: bool = False  # start self-fencing now
    quorum_changed: bool = False
    cleared: bool = False  # a finished self-fence was cleared (quorum is back)
    resumed_after: float | None = None  # the agent did not run for this long: ask the peers
    persist: bool = False  # what `record` returns changed: write it


def fresh(now: float) -> State:
    """A run with nothing persisted from this boot: the clock starts now (nothing of this
    boot's runs yet)."""
    return State(last_tick=now, last_held=now, phase_since=now, since=now)


def restored(record: dict[str, Any], now: float, settings: Settings) -> State:
    """A run that continues an earlier one of this boot (the same CLOCK_MONOTONIC):
    `record` is what `record()` returned there. The bound continues from its last_held;
    a finished or failed self-fence is kept; the agent re-checks before it acts."""
    held = float(record["lastHeld"])
    phase = str(record.get("selfFence", IDLE))
    if phase not in KEPT_ACROSS_RESTARTS:
        phase = IDLE
    reason = str(record.get("reason", "")) if phase != IDLE else "restarted"
    return State(last_tick=now, last_held=min(held, now), phase=phase, phase_since=now,
                 reason=reason, since=now, recheck_left=settings.recheck_window,
                 recheck_cause=f"the agent restarted {max(0.0, now - held):.1f} s after it "
                 f"last held quorum", persisted_held=held)


def record(state: State) -> dict[str, Any]:
    """What a restart within the same boot needs (see `restored`)."""
    return {"lastHeld": state.last_held, "selfFence": state.phase,
            "reason": state.reason if state.phase in KEPT_ACROSS_RESTARTS else ""}


def describe(state: State) -> str:
    """The last observation in words (for reasons and events)."""
    operator = "in contact" if state.operator_present else "not in contact"
    unknown = "" if state.configured else "no configuration from the operator yet: "
    return (f"{unknown}{state.present} of {state.votes} votes present (this member, "
            f"{len(state.peers)} of {max(0, len(state.members) - 1)} peers, "
            f"operator {operator})")


def judge(state: State, seen: Observation, settings: Settings, now: float
          ) -> tuple[State, Decision]:
    """One judgement: the new state, and what to do."""
    gap = now - state.last_tick
    resumed = gap > settings.gap
    recheck_left = state.recheck_left - (0.0 if resumed else max(0.0, gap))
    recheck_left = recheck_left if recheck_left > EPSILON else 0.0
    cause = state.recheck_cause
    paused = state.paused + (gap if resumed else 0.0)
    if resumed and recheck_left <= 0:  # a re-check under way is not started again
        recheck_left = settings.recheck_window
        cause = f"this agent was paused for {gap:.1f} s"
    contact = seen.operator_contact
    operator = contact is not None and now - contact < settings.operator_lease
    votes = len(seen.members) + 1
    present = 1 + len(seen.peers) + (1 if operator else 0)
    quorum = seen.configured and present * 2 > votes
    changed = quorum != state.has_quorum
    new = dataclasses.replace(
        state, last_tick=now, has_quorum=quorum, since=now if changed else state.since,
        members=seen.members, peers=seen.peers, votes=votes, present=present,
        operator_present=operator, operator_contact=contact, recheck_cause=cause,
        configured=seen.configured)
    resumed_after = gap if resumed else None

    def moved(phase: str, reason: str) -> State:
        since = new.phase_since if phase == new.phase else now
        return dataclasses.replace(new, phase=phase, phase_since=since, reason=reason)

    if quorum:
        new = dataclasses.replace(new, last_held=now, recheck_left=0.0, paused=0.0)
        cleared = new.phase == FENCED
        if new.phase in (PENDING, RECHECKING):
            new = moved(IDLE, "quorum regained")
        elif cleared:
            new = moved(IDLE, "quorum regained after self-fencing")
        persist = (changed or cleared or state.persisted_held is None
                   or now - state.persisted_held >= PERSIST_SECONDS)
        if persist:
            new = dataclasses.replace(new, persisted_held=now)
        return new, Decision(quorum_changed=changed, cleared=cleared,
                             resumed_after=resumed_after, persist=persist)

    new = dataclasses.replace(new, recheck_left=recheck_left, paused=paused)
    decision = Decision(quorum_changed=changed, resumed_after=resumed_after,
                        persist=changed and state.persisted_held != new.last_held)
    if decision.persist:
        new = dataclasses.replace(new, persisted_held=new.last_held)
    if new.phase in (FENCING, FENCED, FAILED):
        return new, decision
    if not settings.self_fence_timeout:
        new = moved(IDLE, "self-fencing is disabled")
        return new, decision
    why = describe(new)
    lost_for = now - new.last_held
    if recheck_left > 0:
        return moved(RECHECKING, f"re-checking ({cause}): {why}"), decision
    if lost_for >= settings.self_fence_timeout - EPSILON:
        pauses = f", {new.paused:.1f} s of it paused" if new.paused else ""
        new = moved(FENCING, f"no quorum for {lost_for:.1f} s{pauses} "
                    f"(selfFenceTimeoutSeconds {settings.self_fence_timeout:g}): {why}")
        return new, dataclasses.replace(decision, fence=True, persist=True)
    if new.phase != PENDING:
        new = moved(PENDING, f"no quorum: {why}")
    return new, decision


def fence_finished(state: State, now: float, ok: bool, detail: str) -> State:
    """Self-fencing ended: Fenced when the Failover groups are offline, else Failed."""
    if state.phase != FENCING:
        return state
    return dataclasses.replace(state, phase=FENCED if ok else FAILED, phase_since=now,
                               reason=detail)


def seconds_left(state: State, settings: Settings, now: float) -> float | None:
    """Until self-fencing starts (None: it is not coming)."""
    if state.phase not in (PENDING, RECHECKING) or not settings.self_fence_timeout:
        return None
    return max(0.0, state.last_held + settings.self_fence_timeout - now)


def status(state: State, settings: Settings, now: float, wall: float
           ) -> tuple[QuorumStatus, SelfFenceStatus]:
    """The quorum and selfFence parts of /v1/status."""

    def stamp(mono: float) -> str:
        return _rfc3339(wall - (now - mono))

    left = seconds_left(state, settings, now)
    contact = state.operator_contact
    return (
        QuorumStatus(
            votes=state.votes, present=state.present,
            operator_in_contact=state.operator_present,
            operator_last_contact_milliseconds=None if contact is None
            else max(0, int((now - contact) * 1000)),
            has_quorum=state.has_quorum, since=stamp(state.since),
            last_held=stamp(state.last_held),
            members=tuple(state.members), alive_peers=tuple(state.peers),
        ),
        SelfFenceStatus(
            state=state.phase, reason=state.reason, since=stamp(state.phase_since),
            seconds_left=None if left is None else round(left, 3),
            timeout_seconds=settings.self_fence_timeout,
        ),
    )


class Quorum:
    """The current state, for the agent's threads: the main loop judges (`observe`), the
    channel's threads record the operator's contact and read.

    The state is a frozen value replaced whole, so a reader sees one judgement's state."""

    def __init__(self, now: float, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.current = fresh(now)
        self._contact_lock = threading.Lock()
        self._contact: float | None = None
        self._configured = False  # no configuration applied yet (Observation.configured)

    def configure(self, operator_lease: float, self_fence_timeout: float,
                  recheck_window: float) -> None:
        """A configuration was applied (the stored one at start, or the operator's)."""
        self.settings = Settings(self_fence_timeout, operator_lease, recheck_window,
                                 self.settings.gap)
        self._configured = True

    def restore(self, saved: dict[str, Any], now: float) -> None:
        self.current = restored(saved, now, self.settings)

    def operator_contact(self, arrived: float) -> None:
        """A request of the operator in charge arrived at `arrived` (requests are handled
        on several threads: an older arrival never moves the contact back)."""
        with self._contact_lock:
            if self._contact is None or arrived > self._contact:
                self._contact = arrived

    def observe(self, now: float, members: tuple[str, ...], peers: tuple[str, ...]
                ) -> Decision:
        with self._contact_lock:
            contact = self._contact
        self.current, decision = judge(
            self.current, Observation(members, peers, contact, self._configured),
            self.settings, now)
        return decision

    def fence_finished(self, now: float, ok: bool, detail: str) -> None:
        self.current = fence_finished(self.current, now, ok, detail)

    # what the rest of the agent reads

    @property
    def state(self) -> str:
        return self.current.phase

    @property
    def reason(self) -> str:
        return self.current.reason

    @property
    def has_quorum(self) -> bool:
        return self.current.has_quorum

    @property
    def votes(self) -> int:
        return self.current.votes

    @property
    def present(self) -> int:
        return self.current.present

    def describe(self, now: float) -> str:
        return describe(self.current)

    def record(self) -> dict[str, Any]:
        return record(self.current)

    def status(self, now: float, wall: float) -> tuple[QuorumStatus, SelfFenceStatus]:
        return status(self.current, self.settings, now, wall)
