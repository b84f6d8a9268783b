"""How a service group's state follows from its resources' states (guestha.protocol.states)."""

from __future__ import annotations

import pytest

from guestha.protocol.states import (
    FAULTED,
    GOING_OFFLINE,
    GOING_ONLINE,
    OFFLINE,
    ONLINE,
    PARTIAL,
    STARTING,
    STOPPING,
    UNKNOWN,
    group_state,
)

pytestmark = pytest.mark.unit

C, N = True, False  # critical, non-critical


@pytest.mark.parametrize(("resources", "transition", "expected"), [
    ([], None, OFFLINE),
    ([(ONLINE, C), (ONLINE, N)], None, ONLINE),
    ([(OFFLINE, C), (OFFLINE, N)], None, OFFLINE),
    ([(ONLINE, C), (OFFLINE, C)], None, PARTIAL),
    # a non-critical fault: the group keeps running, Partial
    ([(ONLINE, C), (FAULTED, N)], None, PARTIAL),
    # a non-critical fault with nothing online is just Offline
    ([(OFFLINE, C), (FAULTED, N)], None, OFFLINE),
    # a critical fault with everything stopped: Faulted (safe to start elsewhere)
    ([(FAULTED, C), (OFFLINE, N)], None, FAULTED),
    # a critical fault while something still runs is not Faulted: not safe yet
    ([(FAULTED, C), (ONLINE, N)], None, PARTIAL),
    ([(FAULTED, C), (UNKNOWN, N)], None, UNKNOWN),
    ([(ONLINE, C), (UNKNOWN, C)], None, UNKNOWN),
    ([(ONLINE, C), (STARTING, C)], None, STARTING),
    ([(ONLINE, C), (STOPPING, C)], None, STOPPING),
    ([(STARTING, C), (STOPPING, C)], None, STARTING),
    ([(OFFLINE, C)], GOING_ONLINE, STARTING),
    ([(ONLINE, C)], GOING_OFFLINE, STOPPING),
    ([(FAULTED, C), (ONLINE, C)], GOING_OFFLINE, STOPPING),
    ([(UNKNOWN, C)], GOING_ONLINE, STARTING),
])
def test_group_state(resources: list[tuple[str, bool]], transition: str | None,
                     expected: str) -> None:
    assert group_state(resources, transition) == expected


def test_faulted_or_offline_means_nothing_runs() -> None:
    """The safety reading: Faulted and Offline only when no resource is online or in doubt."""
    states = (ONLINE, OFFLINE, FAULTED, STARTING, STOPPING, UNKNOWN)
    for a in states:
        for b in states:
            for crit_a in (C, N):
                result = group_state([(a, crit_a), (b, C)])
                if result in (FAULTED, OFFLINE):
                    assert {a, b} <= {OFFLINE, FAULTED}, (a, b, result)
