"""The guest agent channel over both transports, Network and VSOCK, end to end.

Two runStrategy Always VMs with `autoattachVSOCK`, each booted by the KubeVirt simulator
from a cloud-init Secret made by the operator's injection recipe (guestha.cloudinit.recipe:
the agent zipapp, agent.json, TLS files, heartbeat key, a systemd unit; through
tests/kits/agentvms.py, as hack/bench/channel.py, which benchmarks the same set-up): one
agent with `transport: Network`, one with `transport: VSOCK`. The same channel tests run over
guestha.channel's NetworkTransport to the first (the VMI's address) and its VsockTransport
to the second (KubeVirt's vsock websocket through the kube-apiserver, with the operator
ServiceAccount's own token and RBAC from manifests/base/rbac.yaml, and guestha's
mutual TLS inside the websocket).

The operator's asyncio side (guestha.channel.aio) runs the same checks over its own two
transports: AsyncNetworkTransport, and AsyncVsockTransport (aiohttp's websocket through
the same apiserver), with the EventFollower watching the group's events over each.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubevirtkit import Namespace, wait_for

from guestha.channel.aio import (
    AsyncAgentClient,
    AsyncNetworkTransport,
    AsyncVsockTransport,
    EventFollower,
    FollowSettings,
)
from guestha.channel.client import AgentClient, AgentRefusal, new_operation_id
from guestha.channel.transport import (
    ChannelError,
    KubeAccess,
    Member,
    NetworkTransport,
    Transport,
    VsockTransport,
    operator_context,
)
from guestha.cloudinit import bundle
from guestha.protocol.constants import AGENT_PORT
from guestha.protocol.desired import DesiredConfig
from guestha.protocol.events import COMMAND_APPLIED, GROUP_STATE, EventBatch
from guestha.protocol.status import StatusReport
from kits.agentvms import kube_access, user_data, userdata_secret, vm
from kits.pki import Pki
from kits.waiting import wait_until

pytestmark = pytest.mark.controlplane
T = TypeVar("T")

CLUSTER = "chan"
PORT = AGENT_PORT
VMS = {"Network": "chan-net", "VSOCK": "chan-vsock"}
MONITOR = {"intervalSeconds": 1, "offlineIntervalSeconds": 1, "timeoutSeconds": 5}
GROUP = {
    "name": "app",
    "type": "Failover",
    "resources": [
        {
            "name": "sleeper",
            "type": "Process",
            "monitor": MONITOR,
            "attributes": {"command": ["/bin/sleep", "3600"]},
        }
    ],
}
# One member and the operator: 2 votes, both present while the test talks to the agent.
CONFIG = DesiredConfig.from_dict({
    "groups": [GROUP], "peers": [],  # the guest hosts have no watchdog device
    "fencing": {"selfFenceTimeoutSeconds": 0, "watchdog": False}})


@dataclass
class Guests:
    ns: Namespace
    pki: Pki
    members: dict[str, Member]  # by transport
    operator_kube: KubeAccess


@pytest.fixture(scope="module")
def guests(kube: Any, simulator: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guests]:
    assert kube.local is not None  # the simulator fixture runs on the local cluster only
    name = f"chan-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    ns = Namespace(kube, name)
    try:
        pki = Pki(tmp_path_factory.mktemp("channel-pki"))
        agent_bundle = bundle.build().data
        for transport, vm_name in VMS.items():
            data = user_data(CLUSTER, vm_name, transport, pki, agent_bundle, PORT)
            ns.apply(userdata_secret(f"{vm_name}-userdata", data))
            ns.apply(vm(vm_name, f"{vm_name}-userdata"))
        members = {
            transport: Member.from_vmi(ns.running(vm_name, timeout=60), PORT)
            for transport, vm_name in VMS.items()
        }
        yield Guests(ns, pki, members, kube_access(kube.local.operator_kubeconfig()))
    finally:
        kube.kubectl("delete", "namespace", name, "--timeout=120s")


@dataclass
class Channel:
    """One transport to the agent that serves it, as the operator holds it."""

    name: str
    member: Member
    guests: Guests
    make: Callable[[Any], Transport]  # operator TLS context -> transport

    def client(self, cert: tuple[Path, Path] | None = None, timeout: float = 10.0) -> AgentClient:
        pki = self.guests.pki
        context = operator_context(pki.ca_file, *(cert or pki.operator))
        return AgentClient(self.member, self.make(context), timeout=timeout)


def serving(guests: Guests, transport: str) -> Channel:
    """The channel of `transport` once its agent answers."""
    member = guests.members[transport]
    if transport == "Network":
        chan = Channel(transport, member, guests, NetworkTransport)
    else:
        chan = Channel(
            transport, member, guests, lambda ctx: VsockTransport(ctx, guests.operator_kube)
        )

    def answers() -> bool:
        try:
            with chan.client(timeout=3.0) as c:
                return bool(c.status())
        except (ChannelError, AgentRefusal):
            return False

    wait_for(f"the agent of {member} over {transport}", answers, timeout=90, interval=0.25)
    return chan


@pytest.fixture(scope="module", params=["Network", "VSOCK"])
def channel(request: pytest.FixtureRequest, guests: Guests) -> Channel:
    return serving(guests, str(request.param))


@pytest.fixture(scope="module")
def vsock(guests: Guests) -> Channel:
    return serving(guests, "VSOCK")


def epoch(c: AgentClient) -> int:
    return c.status().epoch


def configure(c: AgentClient) -> int:
    """The test group on the agent (at the agent's own epoch); that epoch."""
    current = epoch(c)
    c.epoch = current  # the operator's vote: its reads carry its epoch
    c.put_config(current, CONFIG)
    # the agent counts the operator's vote at its next tick (100 ms)
    wait_for("quorum (this member and the operator)", lambda: c.status().quorum.has_quorum, 5)
    return current


def group_state(c: AgentClient) -> str | None:
    group = c.status().group("app")
    return group.state if group else None


# --- the same tests over both transports -------------------------------------------------
def test_status_answers_with_the_members_identity(channel: Channel) -> None:
    with channel.client() as c:
        status = c.status()
        again = c.status()  # the same kept-alive connection
        health = c.healthz()
    assert isinstance(status, StatusReport)  # read strictly: every field the protocol has
    assert status.member == channel.member.name
    assert status.cluster == CLUSTER
    assert again.incarnation == status.incarnation
    assert (health.member, health.agent_version) == (status.member, status.agent_version)
    assert StatusReport.from_dict(status.to_dict()) == status


def test_config_and_group_online_offline_round_trip(channel: Channel) -> None:
    with channel.client() as c:
        at = configure(c)
        document = c.get_config()
        assert document.config == CONFIG and document.epoch == at and document.error is None
        wait_for("group app probed Offline", lambda: group_state(c) == "Offline", 20)
        answer = c.group_action("app", "online", at, reason="transport test")
        assert (answer.group, answer.action, answer.epoch) == ("app", "online", at)
        wait_for("group app Online", lambda: group_state(c) == "Online", 20)
        c.group_action("app", "offline", at)
        wait_for("group app Offline", lambda: group_state(c) == "Offline", 20)


def test_a_stale_epoch_is_refused_and_an_operation_applies_once(channel: Channel) -> None:
    with channel.client() as c:
        at = configure(c)
        c.put_config(at + 1, CONFIG)
        with pytest.raises(AgentRefusal) as refused:
            c.group_action("app", "probe", at)
        assert refused.value.status == 409
        assert refused.value.reason == "StaleEpoch"
        assert channel.name in str(refused.value) and channel.member.name in str(refused.value)

        op = new_operation_id()
        first = c.group_action("app", "probe", at + 1, operation_id=op)
        second = c.group_action("app", "probe", at + 1, operation_id=op)
        assert not first.replayed
        assert second.replayed
        assert second.to_dict() == first.to_dict()
        events = c.events(0, limit=1000).events
        applied = [
            e for e in events if e.kind == COMMAND_APPLIED and e.data.get("operationId") == op
        ]
        assert len(applied) == 1


def test_the_events_long_poll_delivers_a_group_action(channel: Channel) -> None:
    with channel.client() as commands, channel.client(timeout=5.0) as poller:
        at = configure(commands)
        status = commands.status()
        stream, after = status.events.stream, status.events.last_seq
        op = new_operation_id()
        arrived: list[float] = []
        failures: list[BaseException] = []

        def poll() -> None:
            nonlocal after
            deadline = time.monotonic() + 15
            try:
                while time.monotonic() < deadline:
                    answer = poller.events(after, wait_seconds=10, stream=stream)
                    for event in answer.events:
                        after = event.seq
                        if event.data.get("operationId") == op:
                            arrived.append(time.monotonic())
                            return
            except BaseException as exc:  # handed to the test's thread
                failures.append(exc)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        time.sleep(0.5)  # the poll is waiting at the agent now
        sent = time.monotonic()
        commands.group_action("app", "probe", at, operation_id=op)
        thread.join(20)
    assert not failures, failures
    assert arrived, "the long-poll did not deliver the CommandApplied event"
    assert arrived[0] - sent < 2.0


def test_a_reader_of_another_stream_is_told_where_the_stream_stands(channel: Channel) -> None:
    with channel.client() as c:
        cursor = c.status().events
        with pytest.raises(AgentRefusal) as refused:
            c.events(0, stream="an-earlier-run")
    assert refused.value.status == 410
    gone = refused.value.gone
    assert gone is not None and gone.stream == cursor.stream
    assert gone.last_seq >= cursor.last_seq


def test_an_operator_certificate_of_another_ca_is_refused(channel: Channel) -> None:
    with channel.client() as c:
        before = c.status().channel
    with (
        pytest.raises(ChannelError) as refused,
        channel.client(cert=channel.guests.pki.foreign) as c,
    ):
        c.status()
    # For VSOCK the websocket through the apiserver opened; the inner handshake failed.
    assert refused.value.stage == "tls", refused.value
    assert refused.value.transport == channel.name
    with channel.client() as c:
        after = c.status().channel
    assert after["handshakeFailed"] + after["refusedCertificate"] > (
        before["handshakeFailed"] + before["refusedCertificate"]
    )


# --- VSOCK only --------------------------------------------------------------------------
def test_vsock_is_refused_without_rbac_on_the_subresource(
    kube: Any, vsock: Channel, guests: Guests
) -> None:
    user = f"no-vsock-{uuid.uuid4().hex[:6]}"
    guests.ns.kubectl(
        "create", "rolebinding", f"{user}-view", "--clusterrole=view", f"--user={user}"
    )
    kubeconfig = kube.local.control_plane.user_kubeconfig(user)
    context = operator_context(guests.pki.ca_file, *guests.pki.operator)
    transport = VsockTransport(context, kube_access(kubeconfig))
    with (
        pytest.raises(ChannelError) as refused,
        AgentClient(guests.members["VSOCK"], transport) as c,
    ):
        c.status()
    assert refused.value.status == 403, refused.value
    assert refused.value.stage == "connect"
    assert "virtualmachineinstances/vsock" in str(refused.value)


def test_the_vsock_agent_is_not_on_the_guest_network(vsock: Channel, guests: Guests) -> None:
    """An agent with transport VSOCK listens on no guest address: over the network it is
    not there at all (here: the simulator's stand-in listens on the guest's loopback)."""
    context = operator_context(guests.pki.ca_file, *guests.pki.operator)
    with (
        pytest.raises(ChannelError) as refused,
        AgentClient(guests.members["VSOCK"], NetworkTransport(context), timeout=3.0) as c,
    ):
        c.status()
    assert refused.value.stage == "connect", refused.value


# --- the asyncio side, over both transports ----------------------------------------------
AsyncTransport = AsyncNetworkTransport | AsyncVsockTransport


@dataclass
class AsyncChannel:
    """One asyncio transport to the agent that serves it, as the operator's supervisor
    holds it."""

    name: str
    member: Member
    guests: Guests

    def transport(self, cert: tuple[Path, Path] | None = None,
                  kube: KubeAccess | None = None) -> AsyncTransport:
        pki = self.guests.pki
        context = operator_context(pki.ca_file, *(cert or pki.operator))
        if self.name == "Network":
            return AsyncNetworkTransport(context)
        return AsyncVsockTransport(kube or self.guests.operator_kube, context)


def run(scenario: Callable[[AsyncTransport], Coroutine[Any, Any, T]],
        transport: AsyncTransport, limit: float = 90.0) -> T:
    """`scenario(transport)` on a fresh loop; the transport closed after it."""
    async def bounded() -> T:
        try:
            async with asyncio.timeout(limit):
                return await scenario(transport)
        finally:
            await transport.aclose()
    return asyncio.run(bounded())


@pytest.fixture(scope="module", params=["Network", "VSOCK"])
def aio_channel(request: pytest.FixtureRequest, guests: Guests) -> AsyncChannel:
    serving(guests, str(request.param))  # the agent answers (the blocking client says)
    return AsyncChannel(str(request.param), guests.members[str(request.param)], guests)


def test_async_status_answers_on_one_connection(aio_channel: AsyncChannel) -> None:
    async def scenario(transport: AsyncTransport) -> None:
        async with AsyncAgentClient(aio_channel.member, transport, None) as c:
            status = await c.status()
            again = await c.status()
            health = await c.healthz()
        assert status.member == aio_channel.member.name and status.cluster == CLUSTER
        assert again.channel["accepted"] == status.channel["accepted"]  # kept alive
        assert (health.member, health.agent_version) == (status.member, status.agent_version)
    run(scenario, aio_channel.transport())


def test_async_group_actions_arrive_through_the_follower(aio_channel: AsyncChannel) -> None:
    """Configuration and group actions under the current epoch, their effects followed as
    events over the same transport, and a stale epoch refused."""
    states: list[str] = []
    statuses: list[StatusReport] = []

    async def on_events(name: str, batch: EventBatch | None,
                        status: StatusReport | None) -> None:
        if status is not None:
            statuses.append(status)
        for event in batch.events if batch else ():
            if event.kind == GROUP_STATE and event.data.get("group") == "app":
                states.append(str(event.data["state"]))

    async def scenario(transport: AsyncTransport) -> None:
        async with AsyncAgentClient(aio_channel.member, transport, None) as c:
            c.epoch = at = (await c.status()).epoch + 1  # a newer operator epoch
            applied = await c.put_config(CONFIG)
            assert applied.epoch == at and (await c.get_config()).config == CONFIG
            await wait_until(lambda: _state(c, "Offline"), 20, what="group app probed Offline")
            follower = EventFollower(
                lambda name: AsyncAgentClient(aio_channel.member, transport, at),
                on_events, settings=FollowSettings(poll_seconds=2.0))
            async with follower:
                follower.follow(aio_channel.member.name)
                await wait_until(lambda: statuses, 20, what="the follower's first status")
                await c.group_action("app", "online", reason="async transport test")
                await wait_until(lambda: "Online" in states, 20, what="app Online, as an event")
                await c.group_action("app", "offline")
                await wait_until(lambda: states[-1:] == ["Offline"], 20,
                                 what="app Offline, as an event")
            async with AsyncAgentClient(aio_channel.member, transport, at - 1) as stale:
                with pytest.raises(AgentRefusal) as refused:
                    await stale.group_action("app", "probe")
        assert (refused.value.status, refused.value.reason) == (409, "StaleEpoch")
        assert aio_channel.name in str(refused.value)
    run(scenario, aio_channel.transport())


async def _state(c: AsyncAgentClient, wanted: str) -> bool:
    group = (await c.status()).group("app")
    return group is not None and group.state == wanted


def test_async_operator_certificate_of_another_ca_is_refused(
        aio_channel: AsyncChannel) -> None:
    async def scenario(transport: AsyncTransport) -> ChannelError:
        async with AsyncAgentClient(aio_channel.member, transport, None) as c:
            with pytest.raises(ChannelError) as refused:
                await c.status()
        return refused.value
    error = run(scenario, aio_channel.transport(cert=aio_channel.guests.pki.foreign))
    # For VSOCK the websocket through the apiserver opened; the inner handshake failed.
    assert error.stage == "tls", error
    assert error.transport == aio_channel.name


def test_async_vsock_is_refused_without_rbac_on_the_subresource(
        kube: Any, vsock: Channel, guests: Guests) -> None:
    user = f"no-vsock-{uuid.uuid4().hex[:6]}"
    guests.ns.kubectl(
        "create", "rolebinding", f"{user}-view", "--clusterrole=view", f"--user={user}"
    )
    channel = AsyncChannel("VSOCK", guests.members["VSOCK"], guests)
    transport = channel.transport(kube=kube_access(kube.local.control_plane.user_kubeconfig(user)))

    async def scenario(transport: AsyncTransport) -> ChannelError:
        async with AsyncAgentClient(channel.member, transport, None) as c:
            with pytest.raises(ChannelError) as refused:
                await c.status()
        return refused.value
    error = run(scenario, transport)
    assert error.status == 403 and error.stage == "connect", error
    assert "virtualmachineinstances/vsock" in str(error)
