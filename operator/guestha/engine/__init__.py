"""The pure scheduler: a cluster's state and a time in, a plan out (standard library only).

`plan(state)` is the one place where guestha decides what starts, stops, moves and is
fenced (DESIGN.md; docs/engine.md tells how it decides, rule by rule, with the VCS
equivalents). It reads no clock, no file and no network, and the same ClusterState
always gives the same Plan, whatever the order of its members, groups and switchovers.
The controller builds the state and carries out the plan.

Modules: state (the input), plan (the output), reasons (every reason word), safety
(rule 1: what proves a member runs nothing, the quorum-lease bound), fencing (when a
member is fenced), placement (policies), dependencies (group dependencies), failover and
parallel (one group of each type), switchovers, decisions (a group's overall state),
scheduler (the pipeline).
"""

from guestha.engine.plan import (
    Action,
    GroupDecision,
    Plan,
    SwitchoverDecision,
    Wait,
)
from guestha.engine.scheduler import plan
from guestha.engine.state import (
    ClusterState,
    Dependency,
    GroupState,
    MemberState,
    Settings,
    Switchover,
)

__all__ = [
    "Action",
    "ClusterState",
    "Dependency",
    "GroupDecision",
    "GroupState",
    "MemberState",
    "Plan",
    "Settings",
    "Switchover",
    "SwitchoverDecision",
    "Wait",
    "plan",
]
