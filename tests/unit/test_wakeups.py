"""Who a change wakes (controller.wakeups): only the daemons that read it. At 500 clusters,
10 per namespace, waking a namespace's every daemon for each VM or VMI change made ten
passes where one was due."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from guestha.controller.wakeups import Fingerprints, Wakeups

pytestmark = pytest.mark.unit


def woken(notify: dict[str, object]) -> list[str]:
    """Which of a namespace's subscribers one notify wakes: a cluster of members a0 and
    a1, one of b0, one with a memberSelector (every VM), another namespace's, and a
    daemon of no cluster in particular."""
    async def scenario() -> list[str]:
        wakeups = Wakeups()
        subs = {"a": ("ns", "a", {"a0", "a1"}.__contains__), "b": ("ns", "b", {"b0"}.__contains__),
                "selector": ("ns", "s", None), "elsewhere": ("other", "a", None),
                "any": ("ns", None, None)}
        with contextlib.ExitStack() as stack:
            events = {k: stack.enter_context(wakeups.subscribe(ns, cluster, wants))
                      for k, (ns, cluster, wants) in subs.items()}
            if notify.get("all"):
                wakeups.notify_all()
            else:
                wakeups.notify(str(notify["namespace"]),
                               cluster=notify.get("cluster"),  # type: ignore[arg-type]
                               vm=notify.get("vm"))  # type: ignore[arg-type]
            return sorted(k for k, e in events.items() if e.is_set())
    return asyncio.run(scenario())


@pytest.mark.parametrize(("notify", "expected"), [
    ({"namespace": "ns", "vm": "a1"}, ["a", "any", "selector"]),  # a member's VM or VMI
    ({"namespace": "ns", "vm": "b0"}, ["any", "b", "selector"]),
    ({"namespace": "ns", "vm": "stray"}, ["any", "selector"]),  # nobody's member
    ({"namespace": "ns", "cluster": "a"}, ["a", "any"]),  # cluster a, a group naming it
    ({"namespace": "ns"}, ["a", "any", "b", "selector"]),  # a Switchover: the namespace
    ({"namespace": "other", "vm": "a1"}, ["elsewhere"]),
    ({"all": True}, ["a", "any", "b", "elsewhere", "selector"]),  # a Node, leadership
])
def test_a_change_wakes_only_the_daemons_that_read_it(notify: dict[str, object],
                                                       expected: list[str]) -> None:
    assert woken(notify) == expected


def test_an_unchanged_fingerprint_wakes_nobody() -> None:
    seen = Fingerprints()
    assert seen.changed("sg-1", (1, ()))  # first sight
    assert not seen.changed("sg-1", (1, ()))  # its status written: the same essence
    assert seen.changed("sg-1", (2, ()))  # a new spec
    assert seen.changed("sg-2", (2, ()))  # another object
    assert seen.changed("sg-3", None)  # None is a fingerprint like any other
    assert not seen.changed("sg-3", None)
