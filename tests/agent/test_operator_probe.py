"""The operator's probe of a member its peers lost (controller.probes), against a real
agent: an agent that answers keeps its member reachable, and so does a probe whose
deadline passed only because the operator's own event loop was late (issue 15: no
healthy member fenced for a silence the operator caused); a stopped agent does not."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from guestha.channel.aio import AsyncAgentClient, AsyncNetworkTransport, Contact, Member
from guestha.channel.transport import operator_context
from guestha.controller.links import MemberLink
from guestha.controller.probes import PROBE_TIMEOUT_MAX, Prober
from kits.agentproc import AgentProc
from kits.pki import Pki

pytestmark = pytest.mark.agent


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProc]:
    proc = AgentProc("web-p", "127.0.0.48", tmp_path / "web-p", Pki(tmp_path / "pki"),
                     port=17764, heartbeat_port=17765).start()
    yield proc
    proc.signal(signal.SIGCONT)
    proc.stop()


def probe(agent: AgentProc, stall: float = 0.0) -> MemberLink:
    """One probe of the agent's member (reachable before it), the loop blocked for
    `stall` seconds once the probe is under way; the link as the probe left it."""
    member = Member("tests", agent.member, agent.port, agent.address)
    context = operator_context(agent.pki.ca_file, *agent.pki.operator)

    def client() -> AsyncAgentClient:
        return AsyncAgentClient(member, AsyncNetworkTransport(context), 0, 10.0)

    async def scenario() -> MemberLink:
        link = MemberLink("tests", "web", member, "uid-1", client)
        link.on_contact(Contact(True, time.monotonic()))
        done = asyncio.Event()
        prober = Prober("tests", "web", done.set)
        task = asyncio.create_task(prober._probe(agent.member, link, PROBE_TIMEOUT_MAX))
        for _ in range(3):
            await asyncio.sleep(0)  # the probe is connecting
        time.sleep(stall)  # the operator's loop blocked past the probe's deadline
        async with asyncio.timeout(30):
            await task
            await done.wait()
        await link.close()
        return link
    return asyncio.run(scenario())


def test_a_probe_late_only_because_of_the_operators_loop_keeps_the_member(
        agent: AgentProc) -> None:
    assert probe(agent).reachable  # the agent answers: reachable
    assert probe(agent, stall=2 * PROBE_TIMEOUT_MAX + 0.5).reachable


def test_a_stopped_agent_fails_its_probe(agent: AgentProc) -> None:
    agent.signal(signal.SIGSTOP)
    link = probe(agent)
    assert not link.reachable
    assert link.contact is not None and "probe" in (link.contact.error or "")
