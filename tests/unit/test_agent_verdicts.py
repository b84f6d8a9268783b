"""What a monitor result means for a resource (agent/verdicts.py), as tables.

The safety reading first: whatever a resource's state and counters, only a monitor that
answered Offline in time may make (or keep) it Offline or Faulted.
"""

from __future__ import annotations

import itertools

import pytest

from guestha.agent.verdicts import (
    NOTE,
    RECOVER,
    SET,
    TOLERATE,
    Limits,
    Seen,
    Verdict,
    judge,
)
from guestha.protocol.states import FAULTED, OFFLINE, ONLINE, UNKNOWN

pytestmark = pytest.mark.unit

STATES = (ONLINE, OFFLINE, FAULTED, UNKNOWN)
RESULTS = (ONLINE, OFFLINE, UNKNOWN)


def every_case() -> list[tuple[Seen, str, bool, Limits]]:
    cases = []
    for state, was, faulted, tolerated, timeouts, result, timed_out, tol, fomt in \
            itertools.product(STATES, (False, True), (False, True), (0, 1, 2), (0, 1, 4),
                              RESULTS, (False, True), (0, 1), (0, 1, 4)):
        if timed_out and result != UNKNOWN:
            continue  # a timed-out monitor has no answer
        cases.append((Seen(state, was, faulted, tolerated, timeouts), result, timed_out,
                      Limits(tol, fomt)))
    return cases


def test_only_a_monitor_that_answered_offline_makes_a_resource_stopped() -> None:
    for seen, result, timed_out, limits in every_case():
        verdict = judge(seen, result, timed_out, limits)
        becomes = verdict.state if verdict.action == SET else seen.state
        if verdict.action == RECOVER:
            continue  # recovery stops it (clean) and confirms that before it is stopped
        if becomes in (OFFLINE, FAULTED):
            assert result == OFFLINE and not timed_out, (seen, result, timed_out, verdict)


def test_a_failed_or_timed_out_monitor_never_leaves_a_stopped_resource_stopped() -> None:
    for seen, result, timed_out, limits in every_case():
        if seen.state in (OFFLINE, FAULTED) and (timed_out or result == UNKNOWN):
            assert judge(seen, result, timed_out, limits) == Verdict(
                SET, UNKNOWN, "MonitorTimeout" if timed_out else "MonitorFailed")


@pytest.mark.parametrize(("seen", "result", "timed_out", "limits", "expected"), [
    # Online
    (Seen(ONLINE, True), ONLINE, False, Limits(), Verdict(NOTE)),
    (Seen(ONLINE, True), OFFLINE, False, Limits(), Verdict(RECOVER, "", "MonitorOffline")),
    (Seen(ONLINE, True), OFFLINE, False, Limits(tolerance_limit=1), Verdict(TOLERATE)),
    (Seen(ONLINE, True, tolerated=1), OFFLINE, False, Limits(tolerance_limit=1),
     Verdict(RECOVER, "", "MonitorOffline")),
    # a failed monitor (OCF 1-6, 9; a unit in transition) is recovered at once: no tolerance
    (Seen(ONLINE, True), UNKNOWN, False, Limits(tolerance_limit=3),
     Verdict(RECOVER, "", "MonitorFailed")),
    # timeouts: FaultOnMonitorTimeouts in a row, 0 = never
    (Seen(ONLINE, True, timeouts=1), UNKNOWN, True, Limits(fault_on_monitor_timeouts=2),
     Verdict(NOTE)),
    (Seen(ONLINE, True, timeouts=2), UNKNOWN, True, Limits(fault_on_monitor_timeouts=2),
     Verdict(RECOVER, "", "MonitorTimeout")),
    (Seen(ONLINE, True, timeouts=9), UNKNOWN, True, Limits(fault_on_monitor_timeouts=0),
     Verdict(NOTE)),
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
    (Seen(UNKNOWN, True), OFFLINE, False, Limits(), Verdict(RECOVER, "", "MonitorOffline")),
    (Seen(UNKNOWN, True, timeouts=4), UNKNOWN, True, Limits(),
     Verdict(RECOVER, "", "MonitorTimeout")),
    (Seen(UNKNOWN, True), UNKNOWN, False, Limits(), Verdict(NOTE)),
])
def test_verdicts(seen: Seen, result: str, timed_out: bool, limits: Limits,
                  expected: Verdict) -> None:
    assert judge(seen, result, timed_out, limits) == expected
