"""Each member's agent as the supervisor sees it: its reports, its events, its commands.

A MemberLink keeps what the engine needs of one agent: whether it answers and since when
(from the cluster's EventFollower, guestha.channel.follower: one asyncio task per member,
no thread), the state of each group and resource as the agent reports them, and which
peers it hears. Commands go over a connection of their own, so a long-poll never delays
an online or offline. A link belongs to one run of the member's guest (its VMI's uid): a
new run gets a new link, so nothing the old guest said is taken for the new one's.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from guestha.channel.aio import (
    AgentRefusal,
    AsyncAgentClient,
    AsyncNetworkTransport,
    AsyncTransport,
    AsyncVsockTransport,
    ChannelError,
    Contact,
    KubeAccess,
    Member,
)
from guestha.controller import metrics
from guestha.protocol import events as kinds
from guestha.protocol.commands import ActionAccepted, ConfigApplied
from guestha.protocol.constants import AGENT_PORT, VSOCK
from guestha.protocol.desired import DesiredConfig
from guestha.protocol.events import EventBatch
from guestha.protocol.states import PEER_UP
from guestha.protocol.status import StatusReport

log = logging.getLogger(__name__)
COMMAND_TIMEOUT = 10.0  # seconds for one command's answer (the agent answers at once)
# A command connection unused this long is closed (the next command dials again): at 500
# clusters the 1,500 idle ones held some 50 MB of TLS state.
IDLE_CLOSE_SECONDS = 30.0


@dataclass
class PeerSight:
    """Whether an agent counts a peer (heartbeats both ways), and since when (operator
    clock): the engine's `last_heard_by_peers`."""

    up: bool
    since: float


@dataclass
class LinkState:
    """What the agent last told the operator (mutable, owned by the link)."""

    report: StatusReport | None = None
    groups: dict[str, str] = field(default_factory=dict)
    resources: dict[tuple[str, str], str] = field(default_factory=dict)
    peers: dict[str, PeerSight] = field(default_factory=dict)
    # the agent lost quorum it held (QuorumLost) and has not regained it; an agent still
    # joining, or one that lost it before this link, refuses onlines by itself (409)
    quorum_lost: bool = False
    faults: list[tuple[str, str, str]] = field(default_factory=list)  # (group, resource, why)
    # Bumped whenever a report or an event says something of the group: an answer to a
    # command, which says what the state was when the agent accepted it, must not
    # overwrite what the agent told since (it may finish the action before we read that).
    news: dict[str, int] = field(default_factory=dict)

    def heard_of(self, group: str) -> None:
        self.news[group] = self.news.get(group, 0) + 1


class MemberLink:
    """The operator's link to one run of one member's agent."""

    def __init__(self, namespace: str, cluster: str, member: Member, uid: str | None,
                 client: Callable[[], AsyncAgentClient]) -> None:
        self.namespace, self.cluster, self.member = namespace, cluster, member.name
        self.address, self.uid = member.address, uid
        self.created = time.monotonic()  # the follower's first answer is awaited from here
        self.client = client  # a new client for this member (the follower's, a command's)
        self.commands = client()
        self.state = LinkState()
        self.contact: Contact | None = None
        self.applied: DesiredConfig | None = None  # what the agent accepted last

    @property
    def reachable(self) -> bool:
        return self.contact is not None and self.contact.reachable

    @property
    def last_contact(self) -> float | None:
        return self.contact.last_contact if self.contact is not None else None

    async def close(self) -> None:
        await self.commands.aclose()
        metrics.forget_member(self.namespace, self.cluster, self.member)

    # -- what the follower tells

    def on_report(self, report: StatusReport) -> None:
        """A whole status report (at start, after a restart of the agent, after lost
        events): it replaces everything the events had said."""
        now = time.monotonic()
        st = self.state
        st.report = report
        for name in set(st.groups) | set(report.groups):
            st.heard_of(name)
        st.groups = {name: g.state for name, g in report.groups.items()}
        st.resources = {(name, r.name): r.state for name, g in report.groups.items()
                        for r in g.resources}
        if report.quorum.has_quorum:
            st.quorum_lost = False
        st.peers = {p.member: PeerSight(p.state == PEER_UP,
                                        now - (p.last_heard_milliseconds or 0) / 1000.0)
                    for p in report.peers}

    def on_batch(self, batch: EventBatch) -> None:
        """New events, in order."""
        now = time.monotonic()
        st = self.state
        for event in batch.events:
            data: Mapping[str, Any] = event.data
            if event.kind == kinds.GROUP_STATE:
                st.groups[str(data.get("group"))] = str(data.get("state"))
                st.heard_of(str(data.get("group")))
            elif event.kind == kinds.RESOURCE_STATE:
                st.resources[(str(data.get("group")), str(data.get("resource")))] = \
                    str(data.get("state"))
            elif event.kind == kinds.RESOURCE_FAULTED:
                st.faults.append((str(data.get("group")), str(data.get("resource")),
                                  str(data.get("message") or data.get("reason") or "")))
            elif event.kind in (kinds.QUORUM_GAINED, kinds.QUORUM_LOST):
                # only a loss counts, not an agent still joining (no quorum yet since it
                # started, even past its self-fence timeout: its peers may start later)
                st.quorum_lost = event.kind == kinds.QUORUM_LOST
            elif event.kind == kinds.PEER_UP:
                st.peers[str(data.get("member"))] = PeerSight(True, now)
            elif event.kind == kinds.PEER_DOWN:
                # the agent says how long ago it last heard the peer: the silence counts
                # from then (an agent without that field: from now, later than it was)
                age = data.get("lastHeardMilliseconds")
                since = now - age / 1000.0 if isinstance(age, int) and age >= 0 else now
                st.peers[str(data.get("member"))] = PeerSight(False, since)

    def on_contact(self, contact: Contact) -> None:
        self.contact = contact
        metrics.MEMBER_UP.labels(self.namespace, self.cluster, self.member).set(
            1 if contact.reachable else 0)
        if not contact.reachable:
            self.applied = None  # a restarted agent may have lost nothing, but ask again

    # -- what the supervisor asks

    def hears(self, peer: str, now: float) -> float | None:
        """When this agent last counted `peer` (now while it does); None: never."""
        sight = self.state.peers.get(peer)
        if sight is None:
            return None
        return now if sight.up else sight.since

    def take_faults(self) -> list[tuple[str, str, str]]:
        faults, self.state.faults = self.state.faults, []
        return faults

    def _failed(self, what: str, error: Exception) -> None:
        if isinstance(error, ChannelError):
            metrics.CHANNEL_ERRORS.labels(self.namespace, self.cluster, self.member,
                                          error.stage).inc()
        log.warning("%s/%s: %s: %s", self.namespace, self.member, what, error)

    async def command(self, group: str, action: str) -> ActionAccepted | None:
        """Ask for a group action; the agent's answer updates the group's state at once
        (so the next plan does not ask again), unless the agent told newer news of the
        group meanwhile. None when it could not be asked."""
        before = self.state.news.get(group, 0)
        try:
            accepted = await self.commands.group_action(group, action)
        except (AgentRefusal, ChannelError) as e:
            self._failed(f"{action} {group}", e)
            return None
        if accepted.state and self.state.news.get(group, 0) == before:
            self.state.groups[group] = accepted.state
            self.state.heard_of(group)
        return accepted

    async def push(self, config: DesiredConfig) -> ConfigApplied | None:
        """Put the desired configuration unless the agent has it already."""
        if self.applied == config:
            return None
        try:
            applied = await self.commands.put_config(config)
        except (AgentRefusal, ChannelError) as e:
            self._failed("configuration", e)
            return None
        self.applied = config
        return applied


def transport_for(spec: Mapping[str, Any], context: ssl.SSLContext,
                  access: Callable[[], KubeAccess]) -> AsyncTransport:
    """The cluster's channel transport (spec.channel.transport)."""
    channel = spec.get("channel") or {}
    if channel.get("transport") == VSOCK:
        return AsyncVsockTransport(access(), context)
    return AsyncNetworkTransport(context)


def channel_port(spec: Mapping[str, Any]) -> int:
    return int((spec.get("channel") or {}).get("port", AGENT_PORT))
