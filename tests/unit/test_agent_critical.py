"""VCS Critical (agent/states.py): what a resource's fault does to its group, as tables.

A critical resource that faults faults the group: no further resource is started and the
rest is taken down; a non-critical one is only reported. The group is Faulted, and safe
to start elsewhere, only once nothing of it runs any more (group_state).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guestha.protocol.states import (
    FAULTED,
    OFFLINE,
    ONLINE,
    PARTIAL,
    RESOURCE_STATES,
    STARTING,
    STOPPING,
    UNKNOWN,
    critical_fault,
    group_state,
    must_take_down,
)

pytestmark = pytest.mark.unit

C, N = True, False  # critical, non-critical


@pytest.mark.parametrize(("resources", "faulted", "take_down"), [
    ([], False, False),
    ([(ONLINE, C), (ONLINE, N)], False, False),
    # a critical fault with others running, starting, stopping or in doubt: take them down
    ([(FAULTED, C), (ONLINE, N)], True, True),
    ([(FAULTED, C), (ONLINE, C)], True, True),
    ([(FAULTED, C), (STARTING, C)], True, True),
    ([(FAULTED, C), (STOPPING, N)], True, True),
    ([(FAULTED, C), (UNKNOWN, N)], True, True),  # it may run: it is stopped too
    # ... with everything else already stopped: nothing left to take down
    ([(FAULTED, C)], True, False),
    ([(FAULTED, C), (OFFLINE, N), (FAULTED, N)], True, False),
    # a non-critical fault is only reported
    ([(FAULTED, N), (ONLINE, C)], False, False),
    ([(FAULTED, N), (FAULTED, N), (ONLINE, C)], False, False),
    # offline critical resources are no fault
    ([(OFFLINE, C), (ONLINE, N)], False, False),
])
def test_critical(resources: list[tuple[str, bool]], faulted: bool, take_down: bool) -> None:
    assert critical_fault(resources) is faulted
    assert must_take_down(resources) is take_down


@pytest.mark.parametrize(("resources", "before", "after"), [
    # a critical fault: Partial while the rest runs, Faulted once it is taken down
    ([(FAULTED, C), (ONLINE, N)], PARTIAL, FAULTED),
    # a non-critical fault: the group stays Partial (nothing is taken down)
    ([(FAULTED, N), (ONLINE, C)], PARTIAL, PARTIAL),
])
def test_a_group_is_faulted_only_after_the_take_down(resources: list[tuple[str, bool]],
                                                     before: str, after: str) -> None:
    assert group_state(resources) == before
    stopped = [(OFFLINE if s != FAULTED else s, c) for s, c in resources] \
        if must_take_down(resources) else resources
    assert group_state(stopped) == after


RESOURCES = st.lists(st.tuples(st.sampled_from(RESOURCE_STATES), st.booleans()), max_size=6)


@given(RESOURCES)
def test_property_a_group_that_needs_no_take_down_is_never_faulted_while_it_runs(
        resources: list[tuple[str, bool]]) -> None:
    """Faulted (the operator's licence to start it elsewhere) only when nothing runs or
    may run; and a critical fault with anything still running always asks for the take
    down that gets it there."""
    if group_state(resources) == FAULTED:
        assert all(s in (OFFLINE, FAULTED) for s, _ in resources)
        assert not must_take_down(resources)
    if critical_fault(resources) and any(s not in (OFFLINE, FAULTED) for s, _ in resources):
        assert must_take_down(resources)
