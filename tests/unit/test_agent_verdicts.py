"""The VCS rules of one resource (agent/verdicts.py), as tables and properties.

The safety reading first: whatever a resource's state and counters, only a monitor that
answered Offline in time (or a clean confirmed by one) may make it Offline or Faulted.
Then each rule with its edges: ToleranceLimit, FaultOnMonitorTimeouts, RestartLimit
within ConfInterval, OnlineWaitLimit, clean after a fault or restart, the intervals.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from guestha.agent.verdicts import (
    CONFIRM_POLL_SECONDS,
    FAULT,
    NOTE,
    RESTART,
    SET,
    TOLERATE,
    WAIT,
    Limits,
    Seen,
    Verdict,
    after_clean,
    came_online,
    cleared,
    confirm_online,
    judge,
    moved,
    next_monitor,
    online_failed,
)
from guestha.protocol.config import ResourceConfig
from guestha.protocol.states import FAULTED, OFFLINE, ONLINE, STARTING, STOPPING, UNKNOWN

pytestmark = pytest.mark.unit

STATES = (ONLINE, OFFLINE, FAULTED, UNKNOWN)
RESULTS = (ONLINE, OFFLINE, UNKNOWN)
T = 1000.0  # an arbitrary "now" (monotonic seconds) for tables where time plays no part


def verdict(seen: Seen, result: str, timed_out: bool = False, limits: Limits | None = None,
            now: float = T) -> Verdict:
    return judge(seen, result, timed_out, limits or Limits(), now)[0]


def after(seen: Seen, result: str, timed_out: bool = False, limits: Limits | None = None,
          now: float = T) -> Seen:
    return judge(seen, result, timed_out, limits or Limits(), now)[1]


def every_case() -> list[tuple[Seen, str, bool, Limits]]:
    cases = []
    for state, was, faulted, tolerated, timeouts, restarts, held, result, timed_out, tol, \
            fomt, limit in itertools.product(
                STATES, (False, True), (False, True), (0, 1, 2), (0, 1, 3), (0, 1), (False, True),
                RESULTS, (False, True), (0, 1), (0, 1, 4), (0, 1)):
        if timed_out and result != UNKNOWN:
            continue  # a timed-out monitor has no answer
        cases.append((Seen(state, was, faulted, tolerated, timeouts, restarts, None, held),
                      result, timed_out, Limits(tol, fomt, limit)))
    return cases


# --------------------------------------------------------------------------- safety


def test_only_a_monitor_that_answered_offline_makes_a_resource_stopped() -> None:
    for seen, result, timed_out, limits in every_case():
        v, new = judge(seen, result, timed_out, limits, T)
        if v.action in (RESTART, FAULT):
            assert new.state == seen.state  # the thread cleans it first (after_clean)
            continue
        becomes = v.state if v.action == SET else seen.state
        assert new.state == becomes, (seen, result, timed_out, v, new)
        if becomes in (OFFLINE, FAULTED):
            assert result == OFFLINE and not timed_out, (seen, result, timed_out, v)


def test_a_failed_or_timed_out_monitor_never_leaves_a_stopped_resource_stopped() -> None:
    for seen, result, timed_out, limits in every_case():
        if seen.state in (OFFLINE, FAULTED) and (timed_out or result == UNKNOWN):
            assert verdict(seen, result, timed_out, limits) == Verdict(
                SET, UNKNOWN, "MonitorTimeout" if timed_out else "MonitorFailed")


def test_a_clean_not_confirmed_leaves_the_resource_in_doubt() -> None:
    for then, state in itertools.product((FAULTED, STARTING), (STARTING, STOPPING)):
        v, new = after_clean(Seen(state, was_online=True), False, then, "MonitorOffline")
        assert v == Verdict(SET, UNKNOWN, "CleanFailed")
        assert (new.state, new.was_online) == (UNKNOWN, True)
        # ... and the next offline monitor is an unexpected offline, not a confirmation.
        assert verdict(new, OFFLINE).action == FAULT


# --------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(("seen", "result", "timed_out", "limits", "expected"), [
    # Online
    (Seen(ONLINE, True), ONLINE, False, Limits(), Verdict(NOTE)),
    (Seen(ONLINE, True), OFFLINE, False, Limits(), Verdict(FAULT, "", "MonitorOffline")),
    (Seen(ONLINE, True), OFFLINE, False, Limits(tolerance_limit=1), Verdict(TOLERATE)),
    (Seen(ONLINE, True, tolerated=1), OFFLINE, False, Limits(tolerance_limit=1),
     Verdict(FAULT, "", "MonitorOffline")),
    # a failed monitor (OCF 1-6, 9; a unit in transition) is recovered at once: no tolerance
    (Seen(ONLINE, True), UNKNOWN, False, Limits(tolerance_limit=3),
     Verdict(FAULT, "", "MonitorFailed")),
    # timeouts: FaultOnMonitorTimeouts in a row (this one included), 0 = never
    (Seen(ONLINE, True, timeouts=0), UNKNOWN, True, Limits(fault_on_monitor_timeouts=2),
     Verdict(NOTE)),
    (Seen(ONLINE, True, timeouts=1), UNKNOWN, True, Limits(fault_on_monitor_timeouts=2),
     Verdict(FAULT, "", "MonitorTimeout")),
    (Seen(ONLINE, True), UNKNOWN, True, Limits(fault_on_monitor_timeouts=1),
     Verdict(FAULT, "", "MonitorTimeout")),
    (Seen(ONLINE, True, timeouts=9), UNKNOWN, True, Limits(fault_on_monitor_timeouts=0),
     Verdict(NOTE)),
    # recovery restarts in place while RestartLimit allows, unless restarts are held
    (Seen(ONLINE, True), OFFLINE, False, Limits(restart_limit=1),
     Verdict(RESTART, "", "MonitorOffline")),
    (Seen(ONLINE, True, restarts=1), OFFLINE, False, Limits(restart_limit=1),
     Verdict(FAULT, "", "MonitorOffline")),
    (Seen(ONLINE, True, held=True), OFFLINE, False, Limits(restart_limit=1),
     Verdict(FAULT, "", "MonitorOffline")),
    (Seen(ONLINE, True), UNKNOWN, False, Limits(restart_limit=2),
     Verdict(RESTART, "", "MonitorFailed")),
    (Seen(ONLINE, True, timeouts=3), UNKNOWN, True, Limits(restart_limit=2),
     Verdict(RESTART, "", "MonitorTimeout")),
    # Offline
    (Seen(OFFLINE), OFFLINE, False, Limits(), Verdict(NOTE)),
    (Seen(OFFLINE), ONLINE, False, Limits(), Verdict(SET, ONLINE, "FoundOnline")),
    (Seen(OFFLINE), UNKNOWN, False, Limits(), Verdict(SET, UNKNOWN, "MonitorFailed")),
    (Seen(OFFLINE, timeouts=1), UNKNOWN, True, Limits(),
     Verdict(SET, UNKNOWN, "MonitorTimeout")),
    # Faulted
    (Seen(FAULTED, faulted=True), OFFLINE, False, Limits(), Verdict(NOTE)),
    (Seen(FAULTED, faulted=True), ONLINE, False, Limits(), Verdict(SET, ONLINE, "FoundOnline")),
    (Seen(FAULTED, faulted=True), UNKNOWN, False, Limits(),
     Verdict(SET, UNKNOWN, "MonitorFailed")),
    # Unknown: never probed, or in doubt
    (Seen(UNKNOWN), ONLINE, False, Limits(), Verdict(SET, ONLINE, "Monitor")),
    (Seen(UNKNOWN), OFFLINE, False, Limits(), Verdict(SET, OFFLINE, "Monitor")),
    (Seen(UNKNOWN, faulted=True), OFFLINE, False, Limits(), Verdict(SET, FAULTED, "Monitor")),
    (Seen(UNKNOWN), UNKNOWN, False, Limits(), Verdict(NOTE)),
    (Seen(UNKNOWN, timeouts=5), UNKNOWN, True, Limits(), Verdict(NOTE)),
    # ran since it was last confirmed stopped: an offline now is an unexpected one
    (Seen(UNKNOWN, True), OFFLINE, False, Limits(), Verdict(FAULT, "", "MonitorOffline")),
    (Seen(UNKNOWN, True), OFFLINE, False, Limits(restart_limit=1),
     Verdict(RESTART, "", "MonitorOffline")),
    (Seen(UNKNOWN, True), OFFLINE, False, Limits(tolerance_limit=1), Verdict(TOLERATE)),
    (Seen(UNKNOWN, True, timeouts=3), UNKNOWN, True, Limits(),
     Verdict(FAULT, "", "MonitorTimeout")),
    (Seen(UNKNOWN, True), UNKNOWN, False, Limits(), Verdict(NOTE)),
])
def test_verdicts(seen: Seen, result: str, timed_out: bool, limits: Limits,
                  expected: Verdict) -> None:
    assert verdict(seen, result, timed_out, limits) == expected


# --------------------------------------------------------------------------- counters


def online_at(when: float, **counters: int) -> Seen:
    return replace(came_online(Seen(STARTING), when), **counters)


@pytest.mark.parametrize(("seen", "result", "timed_out", "limits", "expected"), [
    # ToleranceLimit: counted in a row; an Online result ends the row
    (online_at(0), OFFLINE, False, Limits(tolerance_limit=2), {"tolerated": 1}),
    (online_at(0, tolerated=1), OFFLINE, False, Limits(tolerance_limit=2), {"tolerated": 2}),
    (online_at(0, tolerated=2), ONLINE, False, Limits(tolerance_limit=2), {"tolerated": 0}),
    # a recovery starts the row afresh
    (online_at(0, tolerated=2), OFFLINE, False, Limits(tolerance_limit=2, restart_limit=1),
     {"tolerated": 0, "restarts": 1}),
    # FaultOnMonitorTimeouts: counted in a row, for any state; an answer ends the row
    (online_at(0), UNKNOWN, True, Limits(), {"timeouts": 1}),
    (online_at(0, timeouts=2), UNKNOWN, True, Limits(), {"timeouts": 3}),
    (online_at(0, timeouts=3), ONLINE, False, Limits(), {"timeouts": 0}),
    (online_at(0, timeouts=3), UNKNOWN, False, Limits(), {"timeouts": 0}),
    (Seen(OFFLINE, timeouts=2), UNKNOWN, True, Limits(), {"timeouts": 3, "state": UNKNOWN}),
    (Seen(OFFLINE, timeouts=2), OFFLINE, False, Limits(), {"timeouts": 0}),
    # RestartLimit: counted at each restart
    (online_at(0), OFFLINE, False, Limits(restart_limit=3), {"restarts": 1}),
    (online_at(0, restarts=2), OFFLINE, False, Limits(restart_limit=3), {"restarts": 3}),
    (online_at(0, restarts=3), OFFLINE, False, Limits(restart_limit=3), {"restarts": 3}),
])
def test_counters(seen: Seen, result: str, timed_out: bool, limits: Limits,
                  expected: dict[str, object]) -> None:
    new = after(seen, result, timed_out, limits, now=1.0)
    assert {key: getattr(new, key) for key in expected} == expected


def test_timeouts_in_a_row_interrupted_by_an_answer_start_again() -> None:
    limits = Limits(fault_on_monitor_timeouts=3)
    seen = online_at(0)
    actions = []
    for now, timed_out in enumerate([True, True, False, True, True, True], start=1):
        v, seen = judge(seen, UNKNOWN if timed_out else ONLINE, timed_out, limits, now)
        actions.append(v.action)
    assert actions == [NOTE, NOTE, NOTE, NOTE, NOTE, FAULT]


def test_tolerated_offlines_interrupted_by_an_online_start_again() -> None:
    limits = Limits(tolerance_limit=2)
    seen = online_at(0)
    actions = []
    for now, result in enumerate([OFFLINE, OFFLINE, ONLINE, OFFLINE, OFFLINE, OFFLINE], 1):
        v, seen = judge(seen, result, False, limits, now)
        actions.append(v.action)
    assert actions == [TOLERATE, TOLERATE, NOTE, TOLERATE, TOLERATE, FAULT]


# --------------------------------------------------------------------------- ConfInterval


@pytest.mark.parametrize(("conf", "steady_since", "now", "result", "restarts"), [
    # online (every monitor saying so) for ConfInterval: the restart count starts afresh
    (600, 0.0, 600.0, ONLINE, 0),  # elapsed exactly
    (600, 0.0, 599.5, ONLINE, 2),  # not quite
    (600, 0.0, 5000.0, ONLINE, 0),
    (600, None, 5000.0, ONLINE, 2),  # not steady (a problem since): the clock starts now
    (0, 0.0, 10**6, ONLINE, 2),  # 0: never by itself (only clear)
    # checked before the verdict: a long steady run earns its restarts back
    (600, 0.0, 600.0, OFFLINE, 1),
    (600, 0.0, 599.5, OFFLINE, 2),  # restarts used up: faults
])
def test_conf_interval(conf: float, steady_since: float | None, now: float, result: str,
                       restarts: int) -> None:
    limits = Limits(restart_limit=2, conf_interval=conf)
    seen = replace(online_at(0), restarts=2, steady_since=steady_since)
    v, new = judge(seen, result, False, limits, now)
    assert new.restarts == restarts
    if result == OFFLINE:
        assert v.action == (RESTART if restarts == 1 else FAULT)


@pytest.mark.parametrize(("result", "timed_out", "limits"), [
    (OFFLINE, False, Limits(tolerance_limit=1)),  # a tolerated offline
    (UNKNOWN, True, Limits()),  # a monitor timeout
])
def test_a_problem_starts_the_conf_interval_clock_again(result: str, timed_out: bool,
                                                       limits: Limits) -> None:
    limits = replace(limits, restart_limit=1, conf_interval=600)
    seen = replace(online_at(0), restarts=1)
    _, seen = judge(seen, ONLINE, False, limits, 300)
    v, seen = judge(seen, result, timed_out, limits, 400)
    assert v.action in (TOLERATE, NOTE) and seen.steady_since is None
    _, seen = judge(seen, ONLINE, False, limits, 500)
    assert seen.steady_since == 500
    # 600 s after it came online, but only 100 s after the problem: not reset
    _, seen = judge(seen, ONLINE, False, limits, 600)
    assert seen.restarts == 1
    _, seen = judge(seen, ONLINE, False, limits, 1100)
    assert seen.restarts == 0


def test_a_restart_confirmed_online_starts_every_count_afresh_but_restarts() -> None:
    limits = Limits(fault_on_monitor_timeouts=2, restart_limit=3)
    seen = online_at(0)
    v, seen = judge(seen, UNKNOWN, True, limits, 1)
    v, seen = judge(seen, UNKNOWN, True, limits, 2)
    assert (v.action, seen.restarts, seen.timeouts) == (RESTART, 1, 2)
    _, seen = after_clean(moved(seen, STARTING), True, STARTING, "Restart")
    seen = came_online(seen, 3)
    assert (seen.state, seen.restarts, seen.timeouts, seen.steady_since) == (ONLINE, 1, 0, 3)
    v, seen = judge(seen, UNKNOWN, True, limits, 4)  # one timeout after a restart: noted
    assert v.action == NOTE


# --------------------------------------------------------------------------- OnlineWaitLimit


@pytest.mark.parametrize(("wait_limit", "interval", "now", "result", "timed_out", "expected"), [
    (2, 10, 0.2, ONLINE, False, Verdict(SET, ONLINE)),
    (2, 10, 0.2, OFFLINE, False, Verdict(WAIT, wait=CONFIRM_POLL_SECONDS)),
    (2, 10, 0.2, UNKNOWN, True, Verdict(WAIT, wait=CONFIRM_POLL_SECONDS)),
    (2, 10, 19.5, OFFLINE, False, Verdict(WAIT, wait=0.5)),  # never past the window
    (2, 10, 20.0, OFFLINE, False, Verdict(FAULT, reason="OnlineFailed")),  # exactly over
    (2, 10, 20.0, ONLINE, False, Verdict(SET, ONLINE)),  # Online at the last moment counts
    (2, 0.5, 0.0, OFFLINE, False, Verdict(WAIT, wait=0.5)),  # a short MonitorInterval
    (0, 10, 0.0, OFFLINE, False, Verdict(FAULT, reason="OnlineFailed")),  # limit 0
    (0, 10, 0.0, ONLINE, False, Verdict(SET, ONLINE)),
])
def test_online_wait_limit(wait_limit: int, interval: float, now: float, result: str,
                           timed_out: bool, expected: Verdict) -> None:
    limits = Limits(online_wait_limit=wait_limit, monitor_interval=interval)
    assert confirm_online(0.0, now, result, timed_out, limits) == expected


def test_an_online_action_that_fails_faults_the_resource() -> None:
    assert online_failed(True) == Verdict(FAULT, reason="OnlineTimeout")
    assert online_failed(False) == Verdict(FAULT, reason="OnlineFailed")


# --------------------------------------------------------------------------- clean


@pytest.mark.parametrize(("stopped", "then", "expected", "state", "was_online"), [
    (True, FAULTED, Verdict(SET, FAULTED, "MonitorOffline"), FAULTED, False),
    (True, STARTING, Verdict(SET, STARTING, "MonitorOffline"), STARTING, False),
    (False, FAULTED, Verdict(SET, UNKNOWN, "CleanFailed"), UNKNOWN, True),
    (False, STARTING, Verdict(SET, UNKNOWN, "CleanFailed"), UNKNOWN, True),
])
def test_after_clean(stopped: bool, then: str, expected: Verdict, state: str,
                     was_online: bool) -> None:
    seen = moved(replace(online_at(0), restarts=1), STOPPING)
    v, new = after_clean(seen, stopped, then, "MonitorOffline")
    assert v == expected
    assert (new.state, new.was_online, new.steady_since, new.restarts) == (
        state, was_online, None, 1)
    assert new.faulted == (state == FAULTED)


def test_a_faulted_resource_in_doubt_is_faulted_again_once_confirmed_stopped() -> None:
    seen = moved(Seen(STOPPING), FAULTED)
    v, seen = judge(seen, UNKNOWN, False, Limits(), T)  # a failed monitor: in doubt
    assert (v.state, seen.faulted) == (UNKNOWN, True)
    v, seen = judge(seen, OFFLINE, False, Limits(), T)
    assert v == Verdict(SET, FAULTED, "Monitor")
    assert cleared(seen).faulted is False


def test_clear_starts_every_count_afresh() -> None:
    seen = Seen(FAULTED, True, True, 2, 3, 4, 5.0)
    assert cleared(seen) == Seen(FAULTED, True, False, 0, 0, 0, 5.0)


# --------------------------------------------------------------------------- intervals


@pytest.mark.parametrize(("state", "offline_interval", "expected"), [
    (ONLINE, 300, 10),
    (UNKNOWN, 300, 10),  # in doubt: watched as closely as online
    (OFFLINE, 300, 300),
    (FAULTED, 300, 300),
    (OFFLINE, 0, None),  # OfflineMonitorInterval 0: not watched while offline
    (FAULTED, 0, None),
    (STARTING, 300, None),  # the action's own monitors run then
    (STOPPING, 300, None),
])
def test_monitor_intervals(state: str, offline_interval: float, expected: float | None) -> None:
    limits = Limits(monitor_interval=10, offline_interval=offline_interval)
    assert next_monitor(state, limits) == expected


def test_limits_come_from_the_resource_configuration_and_its_defaults() -> None:
    config = ResourceConfig.from_dict({
        "name": "r", "type": "Process", "restartLimit": 2, "toleranceLimit": 1,
        "confIntervalSeconds": 30, "onlineWaitLimit": 3, "faultOnMonitorTimeouts": 0,
        "monitor": {"intervalSeconds": 5, "offlineIntervalSeconds": 0}}, "r")
    assert Limits.of(config) == Limits(1, 0, 2, 30.0, 3, 5.0, 0.0)
    assert Limits.of(ResourceConfig("r", "Process")) == Limits()


# --------------------------------------------------------------------------- properties

# One step of a resource's life: a monitor after `dt` seconds with its answer, and what
# the clean and the start that a recovery runs would do.
STEP = st.tuples(st.integers(0, 12), st.sampled_from(RESULTS), st.booleans(), st.booleans(),
                 st.booleans())
LIMITS = st.builds(Limits, st.integers(0, 2), st.integers(0, 3), st.integers(0, 3),
                   st.integers(0, 10).map(float), st.integers(0, 3), st.just(1.0),
                   st.just(5.0))


class Step:
    """What happened at one point of a resource's life (see live())."""

    def __init__(self, now: float, what: str, result: str, before: Seen, after: Seen,
                 confirmed: bool, reason: str = "") -> None:
        self.now, self.what, self.result, self.reason = now, what, result, reason
        self.before, self.after, self.confirmed = before, after, confirmed


def live(steps: list[tuple[int, str, bool, bool, bool]], limits: Limits,
         start: Seen) -> list[Step]:
    """Carry the verdicts out as the resource thread does, with a clock. A Step per
    monitor result (what: the verdict's action; result: "Timeout" for a timeout), per
    clean (what: "clean") and per restart confirmed Online ("started"); confirmed: a
    monitor answered Offline in time."""
    seen, now, log = start, 0.0, []
    for dt, result, timed_out, clean_ok, start_ok in steps:
        now += dt
        if timed_out:
            result = UNKNOWN
        v, new = judge(seen, result, timed_out, limits, now)
        log.append(Step(now, v.action, "Timeout" if timed_out else result, seen, new,
                        result == OFFLINE and not timed_out, v.reason))
        seen = new
        if v.action in (RESTART, FAULT):
            then = STARTING if v.action == RESTART else FAULTED
            moving = moved(seen, STARTING if v.action == RESTART else STOPPING)
            _, new = after_clean(moving, clean_ok, then, v.reason)
            log.append(Step(now, "clean", "", seen, new, clean_ok))
            seen = new
            if seen.state == STARTING:
                if start_ok:
                    new = came_online(seen, now)
                    log.append(Step(now, "started", ONLINE, seen, new, False))
                    seen = new
                else:
                    _, new = after_clean(moved(seen, STOPPING), clean_ok, FAULTED,
                                         "OnlineFailed")
                    log.append(Step(now, "clean", "", seen, new, clean_ok))
                    seen = new
    return log


@given(st.lists(STEP, max_size=40), LIMITS, st.sampled_from([Seen(UNKNOWN), Seen(OFFLINE)]))
def test_property_nothing_is_stopped_without_a_monitor_that_confirmed_it(
        steps: list[tuple[int, str, bool, bool, bool]], limits: Limits, first: Seen) -> None:
    stopped = (OFFLINE, FAULTED)
    for step in live(steps, limits, first):
        if step.after.state in stopped and step.before.state not in stopped:
            assert step.confirmed, (step.what, step.before, step.after)
        if step.after.state in stopped:
            assert not step.after.was_online


@given(st.lists(STEP, max_size=60), LIMITS)
def test_property_restarts_in_one_conf_interval_never_exceed_restart_limit(
        steps: list[tuple[int, str, bool, bool, bool]], limits: Limits) -> None:
    log = live(steps, limits, came_online(Seen(STARTING), 0.0))
    restarts = [step.now for step in log if step.what == RESTART]
    if limits.conf_interval == 0:
        assert len(restarts) <= limits.restart_limit
        return
    for first in restarts:
        within = [t for t in restarts if first <= t < first + limits.conf_interval]
        assert len(within) <= limits.restart_limit, (restarts, limits)


# Found by hypothesis: a failed monitor between two offline results of a resource in doubt
# after a failed clean did not end the row, so the second offline recovered it.
@example([(0, ONLINE, False, False, False), (0, ONLINE, True, False, False),
          (0, OFFLINE, False, False, False), (0, UNKNOWN, False, False, False),
          (0, OFFLINE, False, False, False)], Limits(1, 1, 0, 0.0, 0, 1.0, 5.0))
@given(st.lists(STEP, max_size=40), LIMITS)
def test_property_a_recovery_for_offline_or_timeouts_comes_only_after_its_limit(
        steps: list[tuple[int, str, bool, bool, bool]], limits: Limits) -> None:
    """ToleranceLimit + 1 offline results (since the last other answer, restart or
    recovery; timeouts between them neither count nor break the row) before a recovery for
    an offline one; FaultOnMonitorTimeouts timeouts in a row (since the last answer or
    restart: a clean that failed leaves the row as it was) before one for timeouts, and
    never with 0."""
    offline = timeouts = 0
    for step in live(steps, limits, came_online(Seen(STARTING), 0.0)):
        if step.what == "started":
            offline = timeouts = 0
        if step.what in ("clean", "started"):
            continue
        if step.result == "Timeout":
            timeouts += 1
        else:
            timeouts = 0
            offline = offline + 1 if step.result == OFFLINE else 0
        if step.what in (RESTART, FAULT) and step.reason == "MonitorTimeout":
            assert limits.fault_on_monitor_timeouts
            assert timeouts >= limits.fault_on_monitor_timeouts
        if step.what in (RESTART, FAULT) and step.reason == "MonitorOffline":
            assert offline >= limits.tolerance_limit + 1
        if step.what in (RESTART, FAULT):
            offline = 0
