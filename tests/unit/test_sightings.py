"""The times the quorum-lease bound counts from never come too early
(guestha.controller.sightings)."""

from __future__ import annotations

import pytest

from guestha.controller.sightings import Sightings

pytestmark = pytest.mark.unit
MEMBERS = ("a", "b", "c")


def test_a_member_first_seen_counts_as_heard_then() -> None:
    s = Sightings()
    s.members(MEMBERS, 100.0)
    assert (s.of("a").last_contact, s.of("a").last_heard_by_peers) == (100.0, 100.0)
    s.answered("a", 90.0, {})  # an answer older than the start moves nothing back
    assert s.of("a").last_contact == 100.0


def test_contact_and_hearing_only_move_forward() -> None:
    s = Sightings()
    s.members(MEMBERS, 0.0)
    s.answered("a", 10.0, {"shop": "Online"})
    s.answered("a", 8.0, {"shop": "Offline"})  # a late report: the state is the newest
    assert s.of("a").last_contact == 10.0 and s.of("a").groups == {"shop": "Offline"}
    s.heard("a", 12.0)
    s.heard("a", 11.0)
    s.heard("a", None)
    assert s.of("a").last_heard_by_peers == 12.0


def test_a_peer_back_from_silence_or_stopped_may_have_heard_the_others_until_then() -> None:
    s = Sightings()
    s.members(MEMBERS, 0.0)
    s.peer_returned("b", 20.0, MEMBERS)
    assert [s.of(m).last_heard_by_peers for m in MEMBERS] == [20.0, 0.0, 20.0]
    s.peer_stopped("c", 30.0, MEMBERS)
    assert [s.of(m).last_heard_by_peers for m in MEMBERS] == [30.0, 30.0, 20.0]


def test_a_member_that_left_and_came_back_counts_from_its_return() -> None:
    s = Sightings()
    s.members(MEMBERS, 0.0)
    s.answered("a", 5.0, {})
    s.members(("b", "c"), 6.0)
    s.answered("a", 7.0, {})  # not a member now: ignored
    s.members(MEMBERS, 9.0)
    assert (s.of("a").last_contact, s.of("b").last_contact) == (9.0, 0.0)


def test_a_group_is_incomplete_only_when_partial_for_resources_never_started() -> None:
    from guestha.controller.observe import incomplete

    groups = {"a": "Partial", "b": "Partial", "c": "Online", "d": "Partial"}
    resources = {("a", "x"): "Online", ("a", "new"): "Offline",
                 ("b", "x"): "Online", ("b", "y"): "Faulted",
                 ("c", "x"): "Online",
                 ("d", "x"): "Online", ("d", "y"): "Unknown"}
    assert incomplete(groups, resources) == {"a"}


def test_a_peers_down_report_corrects_its_up_until_now() -> None:
    """Peers count a hung member Up (heard "now") until their peer timeout passes, then
    report when they last heard it: that time stands, not the last "now" (a hung member
    was found lost at twice its peer timeout)."""
    s = Sightings()
    s.members(MEMBERS, 0.0)
    for now in (10.0, 11.0, 12.0, 12.9):  # b and c still say Up
        s.heard("a", now, "b")
        s.heard("a", now, "c")
    assert s.of("a").last_heard_by_peers == 12.9
    s.heard("a", 10.0, "b")  # b's PeerDown: last heard at 10.0
    assert s.of("a").last_heard_by_peers == 12.9  # c has not said otherwise yet
    s.heard("a", 10.1, "c")
    assert s.of("a").last_heard_by_peers == 10.1
    s.heard("a", None, "b")  # a report without a hearing changes nothing
    assert s.of("a").last_heard_by_peers == 10.1


def test_a_peers_statement_never_goes_below_a_floor() -> None:
    s = Sightings()
    s.members(MEMBERS, 5.0)
    s.heard("a", 3.0, "b")  # heard before the operator first saw it: the start counts
    assert s.of("a").last_heard_by_peers == 5.0
    s.peer_returned("c", 20.0, MEMBERS)  # c answers again: it may have heard a until now
    s.heard("a", 12.0, "b")
    assert s.of("a").last_heard_by_peers == 20.0
