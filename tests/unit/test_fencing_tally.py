"""status.fencings / lastFencing counted by the process, not from a stale index
(guestha.controller.fencingtally)."""

from __future__ import annotations

import pytest

from guestha.controller.fencingtally import FencingTally

pytestmark = pytest.mark.unit


def test_two_fencings_read_against_a_status_not_caught_up_count_two() -> None:
    tally, stale = FencingTally(), {"fencings": 3}
    tally.requested(stale, "a", "PeerTimeout", "silent", "t1")
    tally.requested(stale, "b", "PeerTimeout", "silent", "t2")  # the index still shows 3
    assert tally.status(stale) == {"fencings": 5, "lastFencing": {
        "member": "b", "reason": "PeerTimeout", "message": "silent", "requestedTime": "t2",
        "confirmedTime": None}}  # null: the merge patch drops the last fencing's


def test_a_confirmation_before_the_index_shows_the_request_keeps_its_time() -> None:
    tally, stale = FencingTally(), {"fencings": 0}
    tally.requested(stale, "a", "PeerTimeout", "silent", "t1")
    tally.confirmed(stale, "a", "t2")  # the status read has no lastFencing yet
    assert tally.status(stale)["lastFencing"]["confirmedTime"] == "t2"
    written = tally.status(stale)
    assert tally.status(written) == {}  # once the status shows it, nothing more to write
    tally.requested(written, "b", "PeerTimeout", "silent", "t3")
    shown = {**written, "fencings": 2,
             "lastFencing": {"member": "b", "reason": "PeerTimeout", "message": "silent",
                             "requestedTime": "t3"}}  # as the merge patch left it
    assert tally.status(shown) == {}


def test_a_lost_write_is_written_again_and_a_higher_count_elsewhere_wins() -> None:
    tally = FencingTally()
    tally.requested({}, "a", "PeerTimeout", "silent", "t1")
    assert tally.status({})["fencings"] == 1  # the write failed: still carried next pass
    newer = {"fencings": 7, "lastFencing": {"member": "c", "requestedTime": "t9"}}
    assert tally.status(newer) == {}  # another replica counted since: its status stands
    tally.requested(newer, "b", "PeerTimeout", "silent", "t10")
    assert tally.status(newer)["fencings"] == 8


def test_a_confirmation_of_a_fencing_a_predecessor_requested_is_written() -> None:
    tally = FencingTally()
    shown = {"fencings": 2, "lastFencing": {"member": "a", "requestedTime": "t1"}}
    tally.confirmed(shown, "a", "t2")
    assert tally.status(shown) == {"fencings": 2, "lastFencing": {
        "member": "a", "requestedTime": "t1", "confirmedTime": "t2"}}
    tally.confirmed(shown, "b", "t3")  # not the last one fenced: nothing changes
    assert tally.status(shown)["lastFencing"]["member"] == "a"
