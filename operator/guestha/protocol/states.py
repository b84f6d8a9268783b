"""The states the agent reports: resources, groups, self-fencing, peers; and how a group's
state follows from its resources'.

One pure function decides a group's state, so the agent, the operator, their tests and
anyone reading the code agree on what "Faulted" or "Partial" means. The rule that
matters for safety: a group is Faulted or Offline only when none of its resources is
online or in doubt, so the operator may start it elsewhere as soon as it reads either.

That rests on the resource states meaning this:
- Offline: a monitor confirmed that nothing of the resource runs (OCF 7, a unit inactive
  or failed, no process). Never set from a monitor that failed, timed out or found the
  resource in transition (OCF 1-6 and 9, systemd activating or deactivating, a process
  partly running): those make it Unknown (guestha.agent.verdicts).
- Faulted: it failed and a clean stopped it, confirmed by a monitor as for Offline.
- Unknown: it may be running (not probed yet, a monitor failed or timed out, a clean
  failed). Only a successful stop (offline or clean, confirmed) takes it out of doubt.
- Online, Starting, Stopping: it runs, or may.
"""

from __future__ import annotations

from collections.abc import Iterable

ONLINE = "Online"
OFFLINE = "Offline"
FAULTED = "Faulted"
STARTING = "Starting"
STOPPING = "Stopping"
UNKNOWN = "Unknown"
PARTIAL = "Partial"

RESOURCE_STATES = (ONLINE, OFFLINE, FAULTED, STARTING, STOPPING, UNKNOWN)
GROUP_STATES = (ONLINE, OFFLINE, PARTIAL, FAULTED, STARTING, STOPPING, UNKNOWN)

# What a group is doing as a whole (its worker's current operation), if anything.
GOING_ONLINE = "online"
GOING_OFFLINE = "offline"

# The self-fencing decision (`selfFence.state` of /v1/status, guestha.agent.quorum).
IDLE = "Idle"  # quorum, or self-fencing disabled
PENDING = "Pending"  # no quorum; fencing when the bound passes
RECHECKING = "Rechecking"  # after a pause or a restart of the agent: judging again first
FENCING = "Fencing"  # taking the Failover groups offline
FENCED = "Fenced"  # done; cleared when quorum returns
FAILED = "Failed"  # could not finish (the watchdog, when there is one, stops being petted)
SELF_FENCE_STATES = (IDLE, PENDING, RECHECKING, FENCING, FENCED, FAILED)

# A peer as heartbeats show it (`peers[].state` of /v1/status, guestha.agent.heartbeat).
PEER_UP = "Up"  # counted for quorum: heard within the peer timeout, and hearing this agent
PEER_DOWN = "Down"  # heard in this run, but not counted now
PEER_UNKNOWN = "Unknown"  # never heard in this run
PEER_STATES = (PEER_UP, PEER_DOWN, PEER_UNKNOWN)


def group_state(resources: Iterable[tuple[str, bool]], transition: str | None = None) -> str:
    """The state of a group from (state, critical) of each resource and its transition.

    In order of precedence:
    - Starting: the group is being brought online, or a resource is starting (this includes
      a restart in place);
    - Stopping: the group is being taken offline, or a resource is stopping (or being
      cleaned after a fault);
    - Unknown: some resource's state is unknown (not probed yet, a monitor failed, or a
      clean failed): nobody may assume it is stopped;
    - Online: every resource is online;
    - Faulted: a critical resource faulted and nothing is online any more;
    - Offline: nothing is online (non-critical resources may have faulted);
    - Partial: some resources are online, others offline or faulted (a faulted critical
      resource whose group still has online resources is Partial until they are stopped).
    A group without resources is Offline.
    """
    pairs = list(resources)
    states = [state for state, _ in pairs]
    if transition == GOING_ONLINE or STARTING in states:
        return STARTING
    if transition == GOING_OFFLINE or STOPPING in states:
        return STOPPING
    if UNKNOWN in states:
        return UNKNOWN
    if not pairs:
        return OFFLINE
    if all(state == ONLINE for state in states):
        return ONLINE
    online = ONLINE in states
    if online:
        return PARTIAL
    if any(state == FAULTED and critical for state, critical in pairs):
        return FAULTED
    return OFFLINE


def critical_fault(resources: Iterable[tuple[str, bool]]) -> bool:
    """VCS Critical: a critical resource is Faulted, so the group is faulted: it starts no
    further resource and is taken down. A non-critical resource's fault is only reported
    (the group goes on, Partial while others run)."""
    return any(state == FAULTED and critical for state, critical in resources)


def must_take_down(resources: Iterable[tuple[str, bool]]) -> bool:
    """The rest of the group must be stopped now: a critical resource faulted while others
    still run or may run (anything but Offline and Faulted). Once they are all stopped,
    the group is Faulted (group_state) and there is nothing left to take down."""
    pairs = list(resources)
    return critical_fault(pairs) and any(state not in (OFFLINE, FAULTED)
                                         for state, _ in pairs)
