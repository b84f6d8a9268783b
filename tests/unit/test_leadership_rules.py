"""The leader election's pure rules: when a candidate may take the Lease, when a leader
must stop acting, and the argument parsing that guards them."""

from __future__ import annotations

import pytest

from guestha.controller.leadership import (
    CREATE,
    TAKE,
    WAIT,
    Elector,
    LeaseState,
    acquire_decision,
    renewal_deadline,
)

pytestmark = pytest.mark.unit


def held(holder: str = "other", duration: int = 15) -> LeaseState:
    return LeaseState(holder=holder, duration=duration, transitions=3, resource_version="7")


@pytest.mark.parametrize(
    ("state", "observed_at", "now", "decision", "wait"),
    [
        (None, 100.0, 100.0, CREATE, 0.0),
        (LeaseState("", 15, 3, "7"), 100.0, 100.0, TAKE, 0.0),  # released
        (held(), 100.0, 100.0, WAIT, 15.0),  # just seen: a whole lease to wait
        (held(), 100.0, 114.9, WAIT, pytest.approx(0.1)),
        (held(), 100.0, 115.0, TAKE, 0.0),  # unchanged for a whole lease: expired
        (held(duration=30), 100.0, 115.0, WAIT, 15.0),  # the Lease's longer duration counts
        (held(duration=5), 100.0, 110.0, WAIT, 5.0),  # ...and so does our own, if longer
        (held(holder="me"), 100.0, 110.0, WAIT, 5.0),  # our name, but not our leadership
    ],
)
def test_acquire_decision(state: LeaseState | None, observed_at: float, now: float,
                          decision: str, wait: float) -> None:
    assert acquire_decision(state, observed_at, now, 15) == (decision, wait)


def test_the_leader_stops_a_margin_before_anyone_may_take_over() -> None:
    """A candidate that saw the leader's last write (sent at 100) no earlier than it was
    sent cannot take over before 100 + 15; the leader stops at 100 + 15 - 2."""
    sent = 100.0
    deadline = renewal_deadline(sent, 15, 2.0)
    assert deadline == 113.0
    seen_by_candidate = sent + 0.001
    assert acquire_decision(held(), seen_by_candidate, deadline, 15)[0] == WAIT
    assert deadline < seen_by_candidate + 15


def test_lease_state_reads_a_lease_and_an_empty_one() -> None:
    lease = {"metadata": {"resourceVersion": "42"},
             "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15,
                      "leaseTransitions": 4}}
    assert LeaseState.from_object(lease) == LeaseState("pod-a", 15, 4, "42")
    assert LeaseState.from_object({}) == LeaseState("", 0, 0, "")


@pytest.mark.parametrize(
    ("lease_seconds", "renew_seconds", "field"),
    [(0, 0.5, "lease_seconds"), (15.5, 5.0, "lease_seconds"), (15, 13.0, "renew_seconds"),
     (15, 0.0, "renew_seconds")],
)
def test_bad_timings_are_refused_naming_the_field(lease_seconds: int, renew_seconds: float,
                                                  field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Elector("ns", "lease", "me", lease_seconds, renew_seconds)
