"""Every reason word the engine writes into a plan, defined once.

Reasons are CamelCase, like Kubernetes Event and condition reasons: the controller copies
them into Events, conditions and the Switchover's status unchanged, so a reason here is
part of guestha's user-facing vocabulary. A test checks that each is one CamelCase word.
"""

from __future__ import annotations

# Why a group goes online.
AUTO_START = "AutoStart"  # wanted online, no fault seen: VCS AutoStart
ONLINE_REQUESTED = "OnlineRequested"  # wanted online although autoStart is off
FAILOVER = "Failover"  # it faulted or lost its member: moved to the next one by policy
ONLINE_RETRY = "OnlineRetry"  # an online attempt faulted: retried in place (onlineRetryLimit)
SWITCHOVER = "Switchover"  # a Switchover moves it
COMPLETE_ONLINE = "CompleteOnline"  # resources added while it ran: started in place

# Why a group goes (or stays) offline, or is cleared.
CONCURRENCY_VIOLATION = "ConcurrencyViolation"  # a Failover group found running twice
NOT_IN_SYSTEMS = "NotInSystems"  # running on a member that is not one of its systems
DEPENDENCY_NOT_MET = "DependencyNotMet"  # a group dependency forbids it here or now
PARENT_FAULTED = "ParentFaulted"  # a Hard parent faulted: the child goes with it
CLEAR_REQUESTED = "ClearRequested"  # the guestha.io/clear annotation changed
DEPENDENCY_CYCLE = "DependencyCycle"  # groups that depend on each other: nothing is done

# Why a group does not move.
FROZEN = "Frozen"  # spec.frozen: nothing is done for it
NOT_WANTED = "NotWanted"  # autoStart is off and nobody asked for it yet
AUTO_FAILOVER_DISABLED = "AutoFailoverDisabled"  # faulted, autoFailover false: it stays so
IN_PROGRESS = "InProgress"  # an online or offline is under way (Starting, Stopping)
STATE_UNKNOWN = "StateUnknown"  # a reachable agent says Unknown: it may run there
NOT_CONFIRMED_OFFLINE = "NotConfirmedOffline"  # rule 1: a member may still run it
NO_AVAILABLE_MEMBER = "NoAvailableMember"  # no system can take it now
AUTO_START_WAIT = "AutoStartWait"  # a member ahead in the AutoStartList is still coming up
ALL_FAULTED = "AllFaulted"  # faulted on every system: a clear is needed
INSUFFICIENT_CAPACITY = "InsufficientCapacity"  # failoverPolicy Load: its load fits nowhere
STEADY = "Steady"  # where it should be, nothing to do

# Members: fencing and waiting for proof that a silent member runs nothing.
PEER_TIMEOUT = "PeerTimeout"  # silent past the peer timeout: fenced through KubeVirt
AGENT_SILENT = "AgentSilent"  # silent, the peer timeout not yet passed
MIGRATION_PAUSE = "MigrationPause"  # silent while live-migrating, within the allowance
NODE_UNRESPONSIVE = "NodeUnresponsive"  # its node is not Ready: KubeVirt cannot confirm a stop
FENCE_NOT_CONFIRMED = "FenceNotConfirmed"  # the stop was requested, not yet confirmed
STOP_NOT_CONFIRMED = "StopNotConfirmed"  # no running VMI, but nothing confirmed the stop
AWAITING_SELF_FENCE = "AwaitingSelfFence"  # fencing policy SelfFence: the lease must run out
FENCING_DISABLED = "FencingDisabled"  # fencing policy None: never moved automatically
NO_PEER_REACHABLE = "NoPeerReachable"  # no agent answers: the operator may be the one cut off
NEVER_SEEN = "NeverSeen"  # no contact time at all: no bound can be counted
FROZEN_GROUP_THERE = "FrozenGroupThere"  # fencing would take a frozen group down

# Switchovers.
SWITCHED = "Switched"
ALREADY_ON_TARGET = "AlreadyOnTarget"
GROUP_NOT_FOUND = "GroupNotFound"
NOT_FAILOVER_GROUP = "NotFailoverGroup"
GROUP_FROZEN = "GroupFrozen"
GROUP_NOT_ONLINE = "GroupNotOnline"
TARGET_NOT_IN_SYSTEMS = "TargetNotInSystems"
TARGET_FAULTED = "TargetFaulted"
TARGET_UNAVAILABLE = "TargetUnavailable"
NO_TARGET = "NoTarget"
ONLINE_FAILED = "OnlineFailed"
WAITING_FOR_GROUP = "WaitingForGroup"  # Pending: the group is settling
ANOTHER_SWITCHOVER = "AnotherSwitchover"  # Pending: another one moves this group
STOPPING_SOURCE = "StoppingSource"  # Running: offline on the member it ran on
STARTING_TARGET = "StartingTarget"  # Running: online on the target

# Leadership (safety rule 2).
NOT_LEADER = "NotLeader"

ALL = tuple(sorted(v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str)))
