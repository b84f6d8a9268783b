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
