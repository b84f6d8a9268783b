"""Safety rule 1: who may hold a Failover group, and what proves a member runs nothing.

DESIGN.md rule 1: a Failover group is online, or going online, on at most one member.
The engine brings it online on B only when, on every other member M that could run it,
it is proven not running:
  (a) M's agent answers and reports the group Offline or Faulted (protocol states: both
      mean nothing of it runs). Unknown, Partial, Starting, Stopping and Online are not
      proof, and neither is an agent that does not know the group;
  (b) M.stop_confirmed: the stop of M's guest was confirmed by the node that ran it, or
      the node was fenced (guestha.kubevirt.fencing decides; a VMI that vanished is not);
  (c) M's quorum lease has run out (lease_bound below): M's agent has lost quorum,
      self-fenced and had the time to take its Failover groups down.
What the agent of an unreachable member said last is history, never proof: it may have
been told to start since, or the report may have been lost.

"Could run it" is: the group's systems, and any member whose report, current or last,
shows the group in a state other than Offline or Faulted. A member outside the systems
whose agent answers and does not know the group runs nothing of it: the operator
configures a group only on its systems and never starts it elsewhere (rule 3: agents
start Failover groups only when told).

VCS equivalent: HAD does not online a failover group while it is online, or its state is
not probed, on any system of its SystemList (a concurrency violation otherwise), and
after a system fault it waits for I/O fencing to win the race before failing over.
"""

from __future__ import annotations

from guestha.engine.state import FENCE_NONE, ClusterState, MemberState
from guestha.protocol.states import FAULTED, OFFLINE

# Reported states that prove the group runs nothing on that member (protocol contract).
PROOF_STATES = frozenset({OFFLINE, FAULTED})


def silent_since(member: MemberState) -> float | None:
    """The last moment anyone heard the member: its agent answering the operator, or a
    reachable peer receiving its heartbeat. None: never heard."""
    times = [t for t in (member.last_contact, member.last_heard_by_peers) if t is not None]
    return max(times) if times else None


def lease_bound(member: MemberState, state: ClusterState) -> float | None:
    """The time after which member's agent has certainly lost quorum, self-fenced and
    taken its Failover groups offline (rule 1c); None when no such time can be counted.

    Votes are the members plus the operator's one (docs/agent-api.md, Quorum). The
    member keeps its own vote and may keep the votes of every member the operator does
    not reach either (they may still hear each other); the operator's side is the
    operator and the members it reaches. So:
    - if the cut-off members (agent unreachable, stop not confirmed) are a strict
      majority by themselves, the member may hold quorum for ever: None;
    - its reachable peers stop counting it `peer_timeout` after they last heard it;
    - if the cut-off members plus the operator's vote would be a majority, the
      operator's vote must lapse too: `operator_lease` after its last contact (and
      without a contact time nothing bounds that vote: None);
    - then the agent waits `self_fence_timeout`, has `offline_timeout` to take its
      groups down, and `lease_margin` covers what the engine cannot see (clock drift,
      the agent's re-check after a pause); a migrating member gets
      `migration_max_pause` on top (DESIGN.md, Live migration).
    No bound with fencing policy None, with self-fencing off (timeout 0), for an agent
    that answers, or for a member never heard at all (no time to count from).
    """
    s = state.settings
    if s.fencing_policy == FENCE_NONE or s.self_fence_timeout <= 0 or member.agent_reachable:
        return None
    votes = len(state.members) + 1
    cut_off = sum(1 for m in state.members if not m.agent_reachable and not m.stop_confirmed)
    if 2 * cut_off > votes:
        return None
    times: list[float] = []
    if member.last_heard_by_peers is not None:
        times.append(member.last_heard_by_peers + s.peer_timeout)
    if 2 * (cut_off + 1) > votes:
        if member.last_contact is None:
            return None
        times.append(member.last_contact + max(s.operator_lease, s.peer_timeout))
    elif member.last_contact is not None:
        times.append(member.last_contact + s.peer_timeout)
    if not times:
        return None
    bound = max(times) + s.self_fence_timeout + s.offline_timeout + s.lease_margin
    return bound + s.migration_max_pause if member.migrating else bound


def confirmed_down(member: MemberState, state: ClusterState) -> bool:
    """Nothing runs on the member: its stop was confirmed (1b) or its lease ran out
    (1c). Never true while its agent answers: then its reports say what runs."""
    if member.agent_reachable:
        return False
    if member.stop_confirmed:
        return True
    bound = lease_bound(member, state)
    return bound is not None and state.now >= bound


def proven_not_running(group: str, member: MemberState, state: ClusterState) -> bool:
    """Rule 1 for one member: (a) its answering agent reports the group Offline or
    Faulted, or (b)/(c) the member is confirmed down."""
    if member.agent_reachable:
        return member.groups.get(group) in PROOF_STATES
    return confirmed_down(member, state)
