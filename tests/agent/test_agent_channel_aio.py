"""The operator's asyncio channel (guestha.channel.aio) against real agent processes.

Agents run as `python3 -m guestha.agent` on 127.0.0.x loopback addresses with certificates
made here; the operator's side is AsyncAgentClient over AsyncNetworkTransport and the
EventFollower, as the per-cluster supervisor holds them. What a user of the operator would
notice: typed answers, commands under the current epoch applied once, the agent's
refusals mapped, every event delivered in order, a restarted agent resynchronised, a
dead one reported unreachable, and nothing left running when following stops.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from guestha.channel.aio import (
    AgentRefusal,
    AsyncAgentClient,
    AsyncNetworkTransport,
    ChannelError,
    Contact,
    EventFollower,
    FollowSettings,
    Member,
    new_operation_id,
)
from guestha.channel.calls import LONG_POLL_MARGIN
from guestha.channel.transport import operator_context
from guestha.protocol.desired import DesiredConfig
from guestha.protocol.events import COMMAND_APPLIED, GROUP_STATE, EventBatch
from guestha.protocol.status import StatusReport
from kits.agentproc import AgentProc, unique_sleep
from kits.pki import Pki
from kits.waiting import wait_until

pytestmark = pytest.mark.agent
T = TypeVar("T")

SHOP = {"name": "shop", "type": "Failover", "resources": [
    {"name": "app", "type": "Process", "attributes": {"command": unique_sleep()},
     "monitor": {"intervalSeconds": 1, "offlineIntervalSeconds": 1}}]}
SIDE = {"name": "side", "type": "Parallel", "resources": []}
# One member and the operator: quorum while the operator talks to it; no self-fencing.
CONFIG = DesiredConfig.from_dict({"groups": [SHOP, SIDE],
                                  "fencing": {"selfFenceTimeoutSeconds": 0,
                                              "watchdog": False}})
QUICK = FollowSettings(poll_seconds=1.0, backoff_initial=0.05, backoff_maximum=0.5)


def run(coro: Coroutine[Any, Any, T], limit: float = 90.0) -> T:
    """The test's coroutine on a fresh loop; `limit` only keeps a hung test from waiting
    for pytest's own timeout."""
    async def bounded() -> T:
        async with asyncio.timeout(limit):
            return await coro
    return asyncio.run(bounded())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def agent(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProc]:
    proc = AgentProc("web-a", "127.0.0.46", tmp_path_factory.mktemp("web-a"), pki,
                     port=17760, heartbeat_port=17761).start()
    yield proc
    proc.retire()
    assert proc.stop() == 0, proc.log.read_text()[-3000:]


@pytest.fixture
def lone_agent(pki: Pki, tmp_path: Path) -> Iterator[AgentProc]:
    """An agent of the test's own, to stop, kill and restart."""
    proc = AgentProc("web-b", "127.0.0.47", tmp_path / "web-b", pki,
                     port=17762, heartbeat_port=17763).start()
    yield proc
    proc.stop()


def member(agent: AgentProc) -> Member:
    return Member("tests", agent.member, agent.port, agent.address)


def client(agent: AgentProc, epoch: Callable[[], int] | int | None = None,
           cert: tuple[Path, Path] | None = None, timeout: float = 10.0) -> AsyncAgentClient:
    context = operator_context(agent.pki.ca_file, *(cert or agent.pki.operator))
    return AsyncAgentClient(member(agent), AsyncNetworkTransport(context), epoch, timeout)


@dataclass
class Seen:
    """What a follower handed over, in order."""

    calls: list[tuple[str, EventBatch | None, StatusReport | None]] = field(default_factory=list)
    contacts: list[Contact] = field(default_factory=list)

    async def on_events(self, name: str, batch: EventBatch | None,
                        status: StatusReport | None) -> None:
        self.calls.append((name, batch, status))

    async def on_contact(self, name: str, contact: Contact) -> None:
        self.contacts.append(contact)

    @property
    def statuses(self) -> list[StatusReport]:
        return [s for _, _, s in self.calls if s is not None]

    def events(self) -> list[Any]:
        return [e for _, b, _ in self.calls if b is not None for e in b.events]


def follower(agent: AgentProc, seen: Seen, epoch: int = 0,
             settings: FollowSettings = QUICK) -> EventFollower:
    return EventFollower(lambda name: client(agent, epoch), seen.on_events, seen.on_contact,
                         settings)


# --- requests ------------------------------------------------------------------------------
def test_status_health_and_config_answer_typed_on_one_connection(agent: AgentProc) -> None:
    async def scenario() -> None:
        async with client(agent) as c:
            first = await c.status()
            again = await c.status()
            health = await c.healthz()
            document = await c.get_config()
        assert isinstance(first, StatusReport)
        assert (first.member, first.cluster) == ("web-a", "web")
        # one kept-alive connection: the agent accepted no other for the second request
        assert again.channel["accepted"] == first.channel["accepted"]
        assert (health.member, health.agent_version) == (first.member, first.agent_version)
        assert document.epoch == first.epoch
    run(scenario())


def test_commands_carry_the_current_epoch_and_apply_once(agent: AgentProc) -> None:
    async def scenario() -> None:
        async with client(agent) as probe:
            epoch = [(await probe.status()).epoch + 1]
        async with client(agent, lambda: epoch[0]) as c:
            applied = await c.put_config(CONFIG)
            assert applied.epoch == epoch[0] and set(applied.groups) == {"shop", "side"}
            assert (await c.status()).epoch == epoch[0]
            assert (await c.get_config()).config == CONFIG
            op = new_operation_id()
            first = await c.group_action("side", "probe", operation_id=op)
            second = await c.group_action("side", "probe", operation_id=op)
            assert (first.group, first.action, first.epoch) == ("side", "probe", epoch[0])
            assert not first.replayed and second.replayed
            assert second.to_dict() == first.to_dict()
            epoch[0] += 1  # the Elector's epoch moved on: the next command carries it
            again = await c.group_action("side", "probe")
            assert again.epoch == epoch[0] == (await c.status()).epoch
            batch = await c.events(0, 0, limit=1000)
        applied_ops = [e for e in batch.events
                       if e.kind == COMMAND_APPLIED and e.data.get("operationId") == op]
        assert len(applied_ops) == 1
    run(scenario())


def test_the_agents_refusals_are_mapped(agent: AgentProc) -> None:
    async def scenario() -> None:
        async with client(agent) as c:
            now = (await c.status()).epoch
        async with client(agent, now) as c:
            await c.put_config(CONFIG)
            with pytest.raises(AgentRefusal) as unknown:
                await c.group_action("nonesuch", "probe")
            cursor = (await c.status()).events
            with pytest.raises(AgentRefusal) as gone:
                await c.events(0, 0, stream="an-earlier-run")
        async with client(agent, now - 1) as stale:
            with pytest.raises(AgentRefusal) as refused:
                await stale.group_action("side", "probe")
        async with client(agent, None) as no_epoch:
            with pytest.raises(ValueError, match="needs the operator's epoch"):
                await no_epoch.put_config(CONFIG)
        assert (refused.value.status, refused.value.reason) == (409, "StaleEpoch")
        assert f"epoch {now - 1} is older than epoch {now}" in refused.value.message
        assert "web-a" in str(refused.value) and "Network" in str(refused.value)
        assert (unknown.value.status, unknown.value.reason) == (404, "GroupNotFound")
        assert gone.value.status == 410 and gone.value.gone is not None
        assert gone.value.gone.stream == cursor.stream
        assert gone.value.gone.last_seq >= cursor.last_seq
    run(scenario())


def test_an_operator_certificate_of_another_ca_is_refused(agent: AgentProc, pki: Pki) -> None:
    async def scenario() -> ChannelError:
        async with client(agent, cert=pki.foreign) as c:
            with pytest.raises(ChannelError) as refused:
                await c.status()
        return refused.value
    error = run(scenario())
    assert error.stage == "tls", error
    assert error.transport == "Network" and "web-a" in str(error)


def test_the_refusal_is_read_even_when_the_loop_was_too_busy_to_see_it(
        agent: AgentProc, pki: Pki) -> None:
    """With 1,500 members the loop may not read a connection for a while. The agent
    refuses a foreign certificate after the operator's handshake: its alert, then the
    connection closed; a request then sent draws a reset. The next write fails and asyncio
    closes the socket unread: the alert must still be what the operator reports."""
    async def scenario() -> BaseException | bytes:
        context = operator_context(pki.ca_file, *pki.foreign)
        stream = await AsyncNetworkTransport(context).dial(member(agent), 5.0)
        try:
            time.sleep(0.3)  # the loop is busy (blocked): the alert and the close arrive
            await stream.send(b"GET /v1/healthz HTTP/1.1\r\n\r\n")
            time.sleep(0.2)  # ... and the reset that the request drew
            await stream.send(b"GET /v1/healthz HTTP/1.1\r\n\r\n")
            return await stream.receive()
        except (ssl.SSLError, OSError) as exc:
            return exc
        finally:
            await stream.aclose()
    outcome = run(scenario())
    assert isinstance(outcome, ssl.SSLError), outcome
    assert "UNKNOWN_CA" in str(outcome) or "unknown ca" in str(outcome), outcome


def test_a_connection_unused_for_idle_close_is_closed_and_the_next_request_dials_again(
        agent: AgentProc) -> None:
    async def scenario() -> tuple[bool, bool, bool, str]:
        c = client(agent)
        c.idle_close = 2.0
        try:
            await c.healthz()
            kept = c.connected
            for _ in range(3):  # used within idle_close: kept
                await asyncio.sleep(0.5)
                await c.healthz()
            still = c.connected
            await asyncio.sleep(4.5)
            closed = not c.connected
            return kept, still, closed, (await c.healthz()).member
        finally:
            await c.aclose()
    kept, still, closed, member = run(scenario())
    assert (kept, still, closed, member) == (True, True, True, "web-a")


def test_a_cancelled_long_poll_drops_its_connection_and_the_next_request_works(
        agent: AgentProc) -> None:
    async def scenario() -> None:
        async with client(agent) as c:
            after = (await c.status()).events.last_seq
            poll = asyncio.create_task(c.events(after, 30))
            await wait_until(lambda: c.connected, 5, what="the long-poll sent")
            await asyncio.sleep(0.2)
            poll.cancel()
            with pytest.raises(asyncio.CancelledError):
                await poll
            assert not c.connected  # the answer it waited for must not reach the next request
            status = await c.status()
            assert status.member == "web-a"
    run(scenario())


def test_requests_of_several_tasks_share_the_connection_one_at_a_time(
        agent: AgentProc) -> None:
    async def scenario() -> None:
        async with client(agent) as c:
            first = await c.status()
            answers = await asyncio.gather(*(c.status() for _ in range(20)),
                                           c.healthz(), c.get_config())
        statuses = [a for a in answers[:20] if isinstance(a, StatusReport)]
        assert len(statuses) == 20
        assert {a.channel["accepted"] for a in statuses} == {first.channel["accepted"]}
    run(scenario())


# --- following events --------------------------------------------------------------------
def test_the_follower_delivers_every_event_in_order(agent: AgentProc) -> None:
    """Starts with the whole state, then every event after it exactly once, in seq order,
    across pages (limit 5) while commands arrive."""
    seen = Seen()

    async def scenario() -> list[str]:
        async with client(agent) as c:
            c.epoch = epoch = (await c.status()).epoch
            await c.put_config(CONFIG)
            async with follower(agent, seen, epoch,
                                FollowSettings(poll_seconds=1.0, limit=5)) as f:
                f.follow("web-a")
                await wait_until(lambda: seen.statuses, 10, what="the first status")
                ops = [new_operation_id() for _ in range(30)]
                for op in ops:
                    await c.group_action("side", "probe", operation_id=op)

                def delivered() -> list[str]:
                    return [e.data["operationId"] for e in seen.events()
                            if e.kind == COMMAND_APPLIED and e.data.get("operationId") in ops]
                got: list[str] = await wait_until(
                    lambda: len(delivered()) == len(ops) and delivered(), 20,
                    what="30 CommandApplied events")
                assert f.contact("web-a") is not None
        assert got == ops
        return got

    run(scenario())
    name, batch, status = seen.calls[0]
    assert (name, batch) == ("web-a", None) and status is not None
    seqs = [e.seq for e in seen.events()]
    assert seqs == list(range(status.events.last_seq + 1, status.events.last_seq + 1 + len(seqs)))
    assert all(len(b.events) <= 5 for _, b, _ in seen.calls if b is not None)
    assert len(seen.statuses) == 1  # no resync was needed
    assert seen.contacts and all(c.reachable for c in seen.contacts)


def test_group_online_and_offline_arrive_as_events(agent: AgentProc) -> None:
    seen = Seen()

    def group_states() -> list[str]:
        return [e.data["state"] for e in seen.events()
                if e.kind == GROUP_STATE and e.data.get("group") == "shop"]

    async def scenario() -> None:
        async with client(agent) as c:
            c.epoch = epoch = (await c.status()).epoch
            await c.put_config(CONFIG)
            async with follower(agent, seen, epoch) as f:
                f.follow("web-a")
                await wait_until(lambda: seen.statuses, 10, what="the first status")
                shop = seen.statuses[0].group("shop")
                assert shop is not None and shop.state == "Offline"
                await c.group_action("shop", "online", reason="aio test")
                await wait_until(lambda: "Online" in group_states(), 20, what="shop Online")
                await c.group_action("shop", "offline")
                await wait_until(lambda: group_states()[-1:] == ["Offline"], 20,
                                 what="shop Offline again")
    run(scenario())
    states = group_states()
    assert states.index("Online") < len(states) - 1 and states[-1] == "Offline"


def test_a_restarted_agent_is_resynchronised(lone_agent: AgentProc) -> None:
    seen = Seen()

    async def scenario() -> None:
        async with follower(lone_agent, seen) as f:
            f.follow("web-b")
            await wait_until(lambda: seen.statuses, 10, what="the first status")
            lone_agent.stop()  # SIGTERM: the agent stops cleanly
            await wait_until(lambda: any(not c.reachable for c in seen.contacts), 20,
                             what="web-b unreachable")
            lone_agent.start()
            await wait_until(lambda: len(seen.statuses) == 2, 20, what="the resync status")
            await wait_until(lambda: seen.contacts[-1].reachable, 10, what="reachable again")
    run(scenario())
    before, after = seen.statuses
    assert after.events.stream != before.events.stream
    assert after.incarnation > before.incarnation
    assert [c.reachable for c in seen.contacts] == [True, False, True]
    # after the resync, events continue in the new stream from its status
    index = next(i for i, (_, _, s) in enumerate(seen.calls) if s is after)
    later = [e for _, b, _ in seen.calls[index:] if b is not None for e in b.events]
    assert all(e.seq > after.events.last_seq for e in later)


def test_a_killed_agent_is_reported_unreachable(lone_agent: AgentProc) -> None:
    seen = Seen()

    async def scenario() -> Contact | None:
        async with follower(lone_agent, seen) as f:
            f.follow("web-b")
            await wait_until(lambda: seen.contacts, 10, what="first contact")
            lone_agent.signal(signal.SIGKILL)
            await wait_until(lambda: not seen.contacts[-1].reachable, 20,
                             what="web-b unreachable")
            return f.contact("web-b")
    lost = run(scenario())
    first, last = seen.contacts[0], seen.contacts[-1]
    assert first.reachable and first.last_contact is not None
    assert not last.reachable and last.error and "web-b" in last.error
    # the last successful exchange is kept: what the engine's last_contact is
    assert last.last_contact is not None and last.last_contact >= first.last_contact
    # what contact() reads now: still unreachable, the same last contact (its error may be
    # a later retry's: connection refused once the port is closed)
    assert lost is not None and (lost.reachable, lost.last_contact) == (False,
                                                                         last.last_contact)


def test_a_stall_of_the_operators_loop_is_not_the_agents_silence(agent: AgentProc) -> None:
    """The operator's loop blocked past the long poll's deadline (a start burst at 500
    clusters did this): the agent answered in time, its answer waited unread. The member
    stays reachable, and the follower goes on with it (issue 15: no healthy member
    fenced for a silence the operator caused)."""
    seen = Seen()
    deadline = QUICK.poll_seconds + LONG_POLL_MARGIN  # the poll's (the client's is 10 s)

    async def scenario() -> None:
        async with follower(agent, seen) as f:
            f.follow("web-a")
            await wait_until(lambda: seen.statuses, 10, what="the first status")
            await asyncio.sleep(QUICK.poll_seconds / 2)  # a long poll is in flight
            time.sleep(max(deadline, 10.0) + 1.0)  # the loop stalls past its deadline
            resumed = time.monotonic()

            def answered_since() -> bool:
                contact = f.contact("web-a")
                return contact is not None and (contact.last_contact or 0.0) > resumed
            await wait_until(answered_since, 10, what="an answer after the stall")
    run(scenario())
    assert [c.reachable for c in seen.contacts] == [True]


def test_a_hung_agent_is_still_reported_unreachable(lone_agent: AgentProc) -> None:
    """The same deadline with the operator's loop on time: a stopped agent (SIGSTOP, its
    connection open) is unreachable once its long poll's deadline passes."""
    seen = Seen()

    async def scenario() -> None:
        async with follower(lone_agent, seen) as f:
            f.follow("web-b")
            await wait_until(lambda: seen.contacts, 10, what="first contact")
            lone_agent.signal(signal.SIGSTOP)
            try:
                await wait_until(lambda: not seen.contacts[-1].reachable, 30,
                                 what="web-b unreachable")
            finally:
                lone_agent.signal(signal.SIGCONT)
    run(scenario())
    assert [c.reachable for c in seen.contacts][:2] == [True, False]
    assert "web-b" in (seen.contacts[1].error or "")


def test_a_failing_callback_makes_the_follower_resynchronise(agent: AgentProc) -> None:
    seen = Seen()
    failed: list[int] = []

    async def on_events(name: str, batch: EventBatch | None,
                        status: StatusReport | None) -> None:
        if status is not None and not failed:
            failed.append(1)
            raise RuntimeError("the consumer broke")
        await seen.on_events(name, batch, status)

    async def scenario() -> None:
        async with EventFollower(lambda n: client(agent), on_events, None, QUICK) as f:
            f.follow("web-a")
            await wait_until(lambda: seen.statuses, 10, what="a status after the failure")
    run(scenario())
    assert failed == [1] and len(seen.statuses) == 1


def test_stopping_the_follower_leaves_nothing_running(agent: AgentProc) -> None:
    async def scenario() -> None:
        async with client(agent) as probe:
            baseline = (await probe.status()).channel["open"]
            seen = Seen()
            f = follower(agent, seen)
            f.follow("web-a")
            f.follow("web-a")  # following twice is following once
            await wait_until(lambda: seen.statuses, 10, what="the first status")
            opened = await wait_until(
                lambda: _open(probe, baseline + 1), 10, what="the follower's connection")
            assert opened == baseline + 1
            await f.aclose()
            assert asyncio.all_tasks() == {asyncio.current_task()}
            assert f.members == frozenset()
            await wait_until(lambda: _open(probe, baseline), 10,
                             what="the agent saw the follower's connection closed")
    run(scenario())


async def _open(probe: AsyncAgentClient, wanted: int) -> int | None:
    open_now = (await probe.status()).channel["open"]
    return open_now if open_now == wanted else None
