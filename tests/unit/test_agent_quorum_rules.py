"""The quorum / self-fence rule (guestha.agent.quorum.judge) as tables.

Each row is a timeline for one member of a three-member cluster: when its two peers
count, when the operator's requests arrived, when the agent was paused (no tick runs) or
restarted (its state is gone but for the boot record it last wrote), and when it must
start self-fencing (None: never within the horizon). Ticks come every 100 ms as the
agent's main loop runs them. Time is an input: nothing sleeps.

The bound is selfFenceTimeoutSeconds (10 here) from the last tick that had quorum; pauses
and restarts are counted in it, and re-checked (1.5 s of running time) before acting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from guestha.agent import quorum
from guestha.agent.quorum import Observation, Settings
from guestha.protocol.states import FAILED, FENCED, FENCING, IDLE, PENDING, RECHECKING

pytestmark = pytest.mark.unit

MEMBERS = ("a", "b", "c")
SETTINGS = Settings(self_fence_timeout=10, operator_lease=15, recheck_window=1.5)
Span = tuple[float, float]  # [start, end)


@dataclass(frozen=True)
class Timeline:
    peers: Sequence[Span] = ()  # when both peers count
    one_peer: Sequence[Span] = ()  # when one peer counts
    contacts: Sequence[float] = ()  # arrivals of the operator's requests
    pauses: Sequence[Span] = ()  # (start, end): no tick runs in between
    restarts: Sequence[Span] = ()  # (crash, start again): the boot record carries over
    until: float = 60.0
    settings: Settings = SETTINGS


@dataclass
class Played:
    fence_at: float | None = None
    resumed: list[tuple[float, float]] = field(default_factory=list)  # (at, gap)
    phases: list[tuple[float, str]] = field(default_factory=list)  # changes only
    writes: int = 0
    state: quorum.State | None = None


def _in(spans: Sequence[Span], t: float) -> bool:
    return any(start <= t < end for start, end in spans)


def play(line: Timeline) -> Played:
    """Runs the rule tick by tick (the agent's main loop, without the agent)."""
    out = Played()
    state = quorum.fresh(0.0)
    saved = quorum.record(state)
    down_until: float | None = None
    for k in range(1, int(line.until * 10) + 1):
        now = k / 10
        if down_until is not None:
            if now < down_until:
                continue
            state, down_until = quorum.restored(saved, now, line.settings), None
        if _in(line.pauses, now):
            continue
        if any(abs(now - crash) < 1e-9 for crash, _ in line.restarts):
            down_until = next(end for crash, end in line.restarts if abs(now - crash) < 1e-9)
            continue
        peers = ("b", "c") if _in(line.peers, now) else ("b",) if _in(line.one_peer, now) \
            else ()
        arrived = [c for c in line.contacts if c <= now]
        seen = Observation(MEMBERS, peers, max(arrived) if arrived else None)
        state, decision = quorum.judge(state, seen, line.settings, now)
        if decision.persist:
            saved = quorum.record(state)
            out.writes += 1
        if decision.resumed_after is not None:
            out.resumed.append((now, round(decision.resumed_after, 1)))
        if not out.phases or out.phases[-1][1] != state.phase:
            out.phases.append((now, state.phase))
        if decision.fence:
            out.fence_at = now
            break
    out.state = state
    return out


FOREVER = 1e9
ROWS: list[tuple[str, Timeline, float | None]] = [
    ("quorum lost at 5 s: fence 10 s after the last tick that had it",
     Timeline(peers=[(0, 5)]), 14.9),
    ("quorum back before the bound: the clock starts again from the new loss",
     Timeline(peers=[(0, 5), (9, 12)]), 21.9),
    ("never any quorum: the bound runs from the start",
     Timeline(), 10.0),
    ("the operator's vote alone is no majority of four",
     Timeline(contacts=[k * 0.5 for k in range(200)]), 10.0),
    ("one peer and the operator: quorum until the operator's lease lapses",
     Timeline(one_peer=[(0, FOREVER)], contacts=[0.5]), 15.4 + 10),
    ("a 2 s stall 9 s into Pending: fence when the re-check after it ends",
     Timeline(peers=[(0, 5)], pauses=[(14, 16)]), 17.5),
    ("a 2 s stall every 11.5 s from 9 s: the first re-check ends past the bound",
     Timeline(pauses=[(9 + 11.5 * k, 11 + 11.5 * k) for k in range(5)]), 12.5),
    ("a 5 s pause 0.1 s after the loss, no answers: the bound still counts from the loss",
     Timeline(peers=[(0, 5)], pauses=[(5, 10)]), 14.9),
    ("a 30 s pause, no answers: re-check, then fence at once",
     Timeline(peers=[(0, 5)], pauses=[(5, 35)]), 36.5),
    ("a 30 s pause (live migration), the peers answer the re-check: nothing happens",
     Timeline(peers=[(0, 5), (35.2, FOREVER)], pauses=[(5, 35)]), None),
    ("pauses during a re-check do not start it again",
     Timeline(peers=[(0, 5)], pauses=[(13, 15)] + [(15.5 + 2.5 * k, 17.5 + 2.5 * k)
                                                   for k in range(20)]), 22.8),
    ("a restart 4 s into Pending continues the timer, after a re-check",
     Timeline(peers=[(0, 5)], restarts=[(9, 10)]), 14.9),
    ("a restart past the bound: re-check, then fence at once",
     Timeline(peers=[(0, 5)], restarts=[(12, 18)]), 19.5),
    ("a crash while quorate: the time down counts from the last persisted hold",
     Timeline(peers=[(0, 20)], restarts=[(20, 32)]), 33.5),
    ("a quick restart while quorate, the peers answer: nothing happens",
     Timeline(peers=[(0, 20), (21.3, FOREVER)], restarts=[(20, 21)]), None),
    ("self-fencing disabled",
     Timeline(settings=Settings(self_fence_timeout=0)), None),
]


@pytest.mark.parametrize("line,fence_at", [(r[1], r[2]) for r in ROWS],
                         ids=[r[0] for r in ROWS])
def test_when_the_agent_starts_self_fencing(line: Timeline, fence_at: float | None) -> None:
    played = play(line)
    assert played.fence_at == fence_at, played.phases


def test_a_pause_is_reported_once_and_rechecked() -> None:
    played = play(Timeline(peers=[(0, 5), (35.2, FOREVER)], pauses=[(5, 35)], until=40))
    assert played.resumed == [(35.0, 30.1)]  # from the last tick, at 4.9
    assert [p for _, p in played.phases] == [IDLE, RECHECKING, IDLE]
    assert played.state is not None and played.state.has_quorum


def test_pending_then_fencing_with_the_reason() -> None:
    played = play(Timeline(peers=[(0, 5)], pauses=[(14, 16)]))
    assert [p for _, p in played.phases] == [IDLE, PENDING, RECHECKING, FENCING]
    assert played.state is not None
    assert played.state.reason.startswith("no quorum for 12.6 s, 2.1 s of it paused")
    assert "0 of 2 peers" in played.state.reason


def test_the_boot_record_is_written_on_changes_and_once_a_second_while_quorate() -> None:
    quorate = play(Timeline(peers=[(0, FOREVER)], until=10))
    assert 9 <= quorate.writes <= 11  # 100 ticks, about one write a second
    lost = play(Timeline(peers=[(0, 5)], until=9))
    assert lost.writes <= 7  # the loss is written; the Pending seconds are not


def _judge(state: quorum.State, now: float, peers: tuple[str, ...] = ()) -> quorum.State:
    return quorum.judge(state, Observation(MEMBERS, peers, None), SETTINGS, now)[0]


def test_fenced_clears_when_quorum_returns_failed_stays() -> None:
    state = quorum.fresh(0.0)
    for k in range(1, 101):
        state = _judge(state, k / 10)
    assert state.phase == FENCING
    fenced = quorum.fence_finished(state, 10.5, True, "done")
    assert fenced.phase == FENCED
    half = _judge(fenced, 10.6, ("b",))
    assert half.phase == FENCED  # 2 of 4 votes is not a majority
    back, decision = quorum.judge(half, Observation(MEMBERS, ("b", "c"), None), SETTINGS,
                                  10.7)
    assert back.phase == IDLE and decision.cleared and decision.persist
    failed = quorum.fence_finished(state, 10.5, False, "offline failed")
    assert _judge(failed, 10.6, ("b", "c")).phase == FAILED


def test_a_restart_keeps_a_failed_or_finished_self_fence() -> None:
    state = quorum.fence_finished(
        dataclass_replace(quorum.fresh(0.0), phase=FENCING), 3.0, False, "stuck")
    again = quorum.restored(quorum.record(state), 50.0, SETTINGS)
    assert again.phase == FAILED and again.reason == "stuck"
    assert _judge(again, 50.1, ("b", "c")).phase == FAILED
    pending = quorum.restored(quorum.record(_judge(quorum.fresh(0.0), 0.1)), 5.0, SETTINGS)
    assert pending.phase == IDLE and pending.last_held == 0.0


def test_seconds_left_counts_from_the_last_hold() -> None:
    state = quorum.fresh(0.0)
    state = _judge(state, 0.1, ("b", "c"))
    state = _judge(state, 0.2)
    assert state.phase == PENDING
    assert quorum.seconds_left(state, SETTINGS, 4.1) == pytest.approx(6.0)
    held, fence = quorum.status(state, SETTINGS, 4.1, 1_000_000.0)
    assert fence.seconds_left == 6.0
    assert held.last_held == "1970-01-12T13:46:36.000Z"


def dataclass_replace(state: quorum.State, **changes: object) -> quorum.State:
    import dataclasses

    return dataclasses.replace(state, **changes)  # type: ignore[arg-type]


def test_no_quorum_before_the_first_configuration() -> None:
    """Unconfigured, the agent alone with the operator is not a majority of anything: no
    quorum, and so no QuorumLost when the configuration names its peers."""
    alone = ("a",)
    state = quorum.fresh(0.0)
    state, first = quorum.judge(state, Observation(alone, (), 0.0, configured=False),
                                SETTINGS, 0.1)
    assert not state.has_quorum and not first.quorum_changed
    assert quorum.describe(state).startswith("no configuration from the operator yet")
    state, named = quorum.judge(state, Observation(MEMBERS, (), 0.1), SETTINGS, 0.2)
    assert not state.has_quorum and not named.quorum_changed
    configured_alone, gained = quorum.judge(quorum.fresh(0.0), Observation(alone, (), 0.0),
                                            SETTINGS, 0.1)
    assert configured_alone.has_quorum and gained.quorum_changed  # a cluster of one
