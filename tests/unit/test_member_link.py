"""A member's link keeps the newest word of its agent (guestha.controller.links).

The agent answers a command with the group's state when it accepted it, and carries the
action out at once: its GroupState event may reach the operator (on the event stream's
own connection) before that answer does. The answer must not overwrite the event: once
it did, a cleared fault stayed Faulted in the operator's eyes for ever (found by the
control-plane failover test). The agent's answers are scripted here, to order them
deterministically; the real agents' side is in tests/controlplane/test_failover.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from guestha.channel.aio import Member
from guestha.controller.links import MemberLink
from guestha.protocol.commands import ActionAccepted
from guestha.protocol.events import Event, EventBatch

pytestmark = pytest.mark.unit


class ScriptedAgent:
    """Answers group actions with `state`, after running `meanwhile` (what arrives on
    the event stream while the answer is on its way)."""

    def __init__(self, state: str, meanwhile: Callable[[], None]) -> None:
        self.state, self.meanwhile = state, meanwhile

    async def group_action(self, group: str, action: str) -> ActionAccepted:
        self.meanwhile()
        return ActionAccepted(group, action, "op", 1, self.state)

    async def aclose(self) -> None:
        pass


def link_with(agent: Any) -> MemberLink:
    return MemberLink("ns", "web", Member("ns", "web-a", 7480, "10.0.0.1"), "uid",
                      lambda: agent)


def batch(group: str, state: str) -> EventBatch:
    return EventBatch("s1", 1, False, (Event(1, "GroupState", "2026-11-30T00:00:00Z",
                                             {"group": group, "state": state}),))


def test_an_event_that_came_first_is_not_overwritten_by_the_commands_answer() -> None:
    holder: list[MemberLink] = []
    agent = ScriptedAgent("Faulted", lambda: holder[0].on_batch(batch("shop", "Offline")))
    link = link_with(agent)
    holder.append(link)
    link.state.groups["shop"] = "Faulted"
    asyncio.run(link.command("shop", "clear"))
    assert link.state.groups["shop"] == "Offline"


def test_without_news_the_answer_is_taken_at_once() -> None:
    link = link_with(ScriptedAgent("Starting", lambda: None))
    link.state.groups["shop"] = "Offline"
    asyncio.run(link.command("shop", "online"))
    assert link.state.groups["shop"] == "Starting"


def test_a_peer_down_counts_the_silence_from_when_the_agent_last_heard_it() -> None:
    """PeerDown comes a peer timeout after the peer fell silent; the operator's count of
    that silence (engine/fencing.py) starts at the agent's last hearing, not at the event,
    which would add a whole peer timeout to a hung guest's failover."""
    import time as _time

    link = link_with(None)
    before = _time.monotonic()
    link.on_batch(EventBatch("s1", 1, False, (Event(
        1, "PeerDown", "2026-11-30T00:00:00Z",
        {"member": "web-b", "lastHeardMilliseconds": 3000}),)))
    heard = link.hears("web-b", _time.monotonic())
    assert heard is not None and heard <= before - 2.9
    link.on_batch(EventBatch("s1", 2, False, (Event(
        2, "PeerDown", "2026-11-30T00:00:00Z", {"member": "web-c"}),)))  # an older agent
    heard_c = link.hears("web-c", _time.monotonic())
    assert heard_c is not None and heard_c >= before


def test_an_agent_that_lost_quorum_is_marked_until_it_regains_it() -> None:
    """A member cut off from its peers refuses onlines and self-fences: the engine must
    not pick it (found by the control-plane test of a member its peers lose, where the
    engine asked it to autostart for ever)."""
    link = link_with(None)
    assert not link.state.quorum_lost  # a new run: joining, not lost
    for seq, kind, lost in ((1, "SelfFencing", False),  # joining, past its timeout
                            (2, "QuorumGained", False), (3, "QuorumLost", True),
                            (4, "SelfFencing", True), (5, "QuorumGained", False)):
        link.on_batch(EventBatch("s1", seq, False, (Event(
            seq, kind, "2026-11-30T00:00:00Z", {}),)))
        assert link.state.quorum_lost is lost, kind
