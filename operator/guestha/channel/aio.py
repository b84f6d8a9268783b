"""The operator's asyncio side of the guest agent channel, in one import.

The per-cluster supervisor holds one event stream per member, 1,500 members in one
process, so this side runs on the event loop with no thread per member:
`AsyncAgentClient` (guestha.channel.aio_client) over `AsyncNetworkTransport` or
`AsyncVsockTransport` (guestha.channel.aio_transport), and `EventFollower`
(guestha.channel.follower), one task per member following its agent's events. Errors are
the blocking client's: ChannelError and AgentRefusal.
"""

from __future__ import annotations

from guestha.channel.aio_client import AsyncAgentClient
from guestha.channel.aio_transport import (
    AsyncNetworkTransport,
    AsyncStream,
    AsyncTransport,
    AsyncVsockTransport,
)
from guestha.channel.calls import AgentRefusal, new_operation_id
from guestha.channel.follower import (
    POLL_SECONDS,
    Contact,
    EventFollower,
    FollowSettings,
    backoff_delay,
    retry_delay,
)
from guestha.channel.transport import ChannelError, KubeAccess, Member

__all__ = [
    "POLL_SECONDS", "AgentRefusal", "AsyncAgentClient", "AsyncNetworkTransport",
    "AsyncStream", "AsyncTransport", "AsyncVsockTransport", "ChannelError", "Contact",
    "EventFollower", "FollowSettings", "KubeAccess", "Member", "backoff_delay",
    "new_operation_id", "retry_delay",
]
