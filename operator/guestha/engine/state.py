"""What the engine is given: one snapshot of a cluster, with the time it was taken.

Everything the scheduler decides from is here and nothing else: no clock, no API, no
agent. The controller builds a ClusterState from KubeVirt's objects, the agents' reports
and the custom resources, and calls `guestha.engine.plan` with it; tests build them by
hand (tests/unit/engine_scenarios). Times are seconds on one clock of the controller's
choosing (`now`, `last_contact`, `last_heard_by_peers`, `fence_requested_at`, `vm_since`
must all be on it); the engine only compares and adds them.

What the fields promise (the engine's safety rests on these):
- `MemberState.groups` is what the member's agent reported; while `agent_reachable` is
  true it is current. When the agent is not reachable it may hold the last report: the
  engine then reads it only as history ("the group was running there"), never as proof
  that something is stopped (DESIGN.md, safety rule 1).
- `stop_confirmed` is true only when the guest's stop was confirmed as DESIGN.md rule 1b
  says (by the node that ran it, or the node was fenced); a VMI that vanished, a VM phase
  Stopped or Missing, or a stop that was only requested never make it true.
- `last_contact` (the agent's last answer to the operator) and `last_heard_by_peers`
  survive operator restarts (the controller keeps them in status): a member with
  neither has never been heard, and no quorum-lease bound is counted for it.
- `last_heard_by_peers` is the latest time another member may have heard this one:
  what answering peers report of their heartbeats from it, and also, for every peer
  that may have shared a partition with it, the moment that peer stopped being able to
  hear it without saying so: when a peer answers the operator again after a silence
  (its own report of this member starts afresh after a reboot), or when a peer's stop
  is confirmed. Each of them may have counted its vote for this member until then,
  which is what the quorum-lease bound (safety.lease_bound) counts from.
- `GroupState.wanted_online` stays true from the moment the group should run (autoStart,
  a Switchover, a group found online and adopted) until a person takes it down: a group
  that faults is failed over only while it is wanted.
- `online_attempts[m]` counts online attempts on m that ended Faulted since the last
  success or clear there (VCS OnlineRetryLimit counts the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from guestha.model import cluster, servicegroup
from guestha.protocol.config import FAILOVER, PARALLEL
from guestha.protocol.desired import FencingConfig

# MemberState.vm: the member's VM as KubeVirt shows it.
VM_RUNNING = "Running"  # a VMI runs (phase Running)
VM_STARTING = "Starting"  # a VMI is being created or scheduled
VM_STOPPED = "Stopped"  # the VM exists, no VMI (not proof of anything: rule 1)
VM_MISSING = "Missing"  # no VirtualMachine of this name
VM_DOWN = "Down"  # the VMI reached Succeeded or Failed
VM_STATES = (VM_RUNNING, VM_STARTING, VM_STOPPED, VM_MISSING, VM_DOWN)

# Settings.fencing_policy, GroupState.failover_policy, Dependency.kind and .rigidity:
# the custom resources' words, defined once in guestha.model.
FENCE_KUBEVIRT = cluster.FENCE_KUBEVIRT
FENCE_SELF = cluster.FENCE_SELF
FENCE_NONE = cluster.FENCE_NONE
FENCING_POLICIES = cluster.FENCING_POLICIES
GROUP_FAILOVER = FAILOVER
GROUP_PARALLEL = PARALLEL
PRIORITY = servicegroup.PRIORITY
ROUND_ROBIN = servicegroup.ROUND_ROBIN
LOAD = servicegroup.LOAD
FAILOVER_POLICIES = servicegroup.FAILOVER_POLICIES
ONLINE_LOCAL = servicegroup.ONLINE_LOCAL
ONLINE_GLOBAL = servicegroup.ONLINE_GLOBAL
ONLINE_REMOTE = servicegroup.ONLINE_REMOTE
OFFLINE_LOCAL = servicegroup.OFFLINE_LOCAL
DEPENDENCY_KINDS = servicegroup.DEPENDENCY_KINDS
SOFT = servicegroup.SOFT
FIRM = servicegroup.FIRM
HARD = servicegroup.HARD
RIGIDITIES = servicegroup.RIGIDITIES

# Switchover.phase.
PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SWITCHOVER_PHASES = (PENDING, RUNNING, SUCCEEDED, FAILED)

_FENCING = FencingConfig()
# Settings.auto_start_wait by default: a guest under TCG reaches its agent in about 70 s,
# with KVM in 20-40 s; a member that is not up by then is taken as down (VCS autodisables
# a group on a system that has not joined).
AUTO_START_WAIT_SECONDS = 120.0


@dataclass(frozen=True)
class Settings:
    """The cluster's timing and fencing, in seconds (InGuestCluster spec.heartbeat,
    spec.fencing, spec.migration, and the operator's own lease at the agents).

    `operator_lease` and `offline_timeout` are what the operator puts in the agents'
    configuration (guestha.protocol.desired.FencingConfig): the operator's vote lasts
    `operator_lease` after its last request at an agent, and an agent that self-fences
    has `offline_timeout` to take its Failover groups down. `lease_margin` is added on
    top of the quorum-lease bound for what the engine cannot see: clock drift between
    the operator and the guests, the agent's re-check after a pause, scheduling delays.
    """

    peer_timeout: float
    self_fence_timeout: float
    fencing_policy: str
    watchdog: bool
    lease_margin: float
    migration_max_pause: float
    operator_lease: float = float(_FENCING.operator_lease_seconds)
    offline_timeout: float = float(_FENCING.offline_timeout_seconds)
    # How long AutoStart waits for a member ahead in the AutoStartList whose guest KubeVirt
    # started and that cannot take the group yet (its agent not answering, no quorum yet,
    # its VMI or node not seen ready), counted from its VMI's creation (failover.py).
    auto_start_wait: float = AUTO_START_WAIT_SECONDS

    @classmethod
    def of(cls, spec: cluster.ClusterSpec, lease_margin: float,
           operator_lease: float = float(_FENCING.operator_lease_seconds),
           offline_timeout: float = float(_FENCING.offline_timeout_seconds)) -> Settings:
        """From an InGuestCluster's spec; the last two as the operator configures its
        agents (guestha.protocol.desired.FencingConfig)."""
        return cls(spec.heartbeat.peer_timeout_milliseconds / 1000.0,
                   float(spec.fencing.self_fence_timeout_seconds), spec.fencing.policy,
                   spec.fencing.watchdog, lease_margin,
                   float(spec.migration.max_pause_seconds), operator_lease, offline_timeout)


@dataclass(frozen=True)
class MemberState:
    """One member: its VM as KubeVirt shows it, its agent as the operator reaches it."""

    name: str
    capacity: int = 100
    vm: str = VM_RUNNING
    agent_reachable: bool = True
    last_contact: float | None = None  # last answer of its agent to the operator
    last_heard_by_peers: float | None = None  # latest time a peer may have heard it (above)
    # Seconds of its silence (since it was last heard) during which the operator's own
    # event loop ran late: its answers may have waited unread, so that much of the
    # silence is the operator's, not evidence against the member (engine.fencing).
    operator_late: float = 0.0
    node_ready: bool = True  # its node is Ready and heartbeating
    stop_confirmed: bool = False  # DESIGN.md rule 1b proof (see the module docstring)
    fence_requested_at: float | None = None
    migrating: bool = False  # KubeVirt live-migrates its VMI now
    # Its agent lost quorum (cut off from its peers): it refuses to online anything and
    # self-fences, so it is no target for a group (snapshot.usable). An agent still
    # joining (no quorum yet since it started) is not: it takes the group once it hears
    # its peers, and refuses until then.
    quorum_lost: bool = False
    # When KubeVirt created the member's current VMI (None: no VMI): AutoStart waits for
    # a member coming up from then, at most Settings.auto_start_wait.
    vm_since: float | None = None
    groups: Mapping[str, str] = field(default_factory=dict)  # group -> protocol state
    # Groups Partial here only because some resources never started (added while the group
    # ran; no resource faulted): an online on this member completes them in place.
    incomplete: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Dependency:
    """A group dependency as the parent declares it: `group` is the child."""

    group: str
    kind: str = ONLINE_LOCAL
    rigidity: str = FIRM


@dataclass(frozen=True)
class GroupState:
    """A ServiceGroup: its spec as the engine needs it and the operator's intent."""

    name: str
    type: str = GROUP_FAILOVER
    systems: tuple[tuple[str, int], ...] = ()  # (member, priority)
    auto_start: bool = True
    auto_start_list: tuple[str, ...] = ()
    failover_policy: str = PRIORITY
    auto_failover: bool = True
    frozen: bool = False
    online_retry_limit: int = 0
    load: int = 0
    dependencies: tuple[Dependency, ...] = ()
    wanted_online: bool = True
    online_attempts: Mapping[str, int] = field(default_factory=dict)
    clear_requested: bool = False

    @classmethod
    def of(cls, name: str, spec: servicegroup.ServiceGroupSpec, *, wanted_online: bool,
           online_attempts: Mapping[str, int] | None = None,
           clear_requested: bool = False) -> GroupState:
        """From a ServiceGroup's spec and the controller's own records."""
        return cls(name, spec.type, tuple((s.member, s.priority) for s in spec.systems),
                   spec.auto_start, spec.auto_start_list, spec.failover_policy,
                   spec.auto_failover, spec.frozen, spec.online_retry_limit, spec.load,
                   tuple(Dependency(d.service_group, d.kind, d.rigidity)
                         for d in spec.dependencies),
                   wanted_online, dict(online_attempts or {}), clear_requested)

    def priority(self, member: str) -> int | None:
        """The member's priority in systems, None when it is not one of them."""
        for name, prio in self.systems:
            if name == member:
                return prio
        return None

    @property
    def members(self) -> tuple[str, ...]:
        """The systems' member names, lowest priority number first (then by name)."""
        return tuple(name for name, _ in sorted(self.systems, key=lambda s: (s[1], s[0])))


@dataclass(frozen=True)
class Switchover:
    """A Switchover as the controller last recorded it.

    `from_member` and `target` are its status (status.from, status.to): the member the
    group ran on when it started, and the member chosen (spec.to, or the engine's choice
    when spec.to is left out). `to` is spec.to."""

    name: str
    group: str
    to: str | None = None
    phase: str = PENDING
    from_member: str | None = None
    target: str | None = None


@dataclass(frozen=True)
class ClusterState:
    """One snapshot: what plan() decides from."""

    now: float
    settings: Settings
    members: tuple[MemberState, ...] = ()
    groups: tuple[GroupState, ...] = ()
    switchovers: tuple[Switchover, ...] = ()
    leader: bool = True
