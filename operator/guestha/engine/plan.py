"""What the engine answers: a Plan, produced in one place and carried out in another.

The engine never acts; the controller carries out a Plan (as Pacemaker's graph producer
and consumer are apart). A Plan is level-based: it says what should happen given this
snapshot. The same snapshot gives the same Plan, so the controller sends an action once
and not again while the agents' reports have not changed (operation ids make a repeat
harmless at the agent anyway).

Order: fence actions first (members by name), then each group's actions with children
before their parents (dependency order, then by name); within one group clears, then
offlines, then the online. Waits follow the same order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Action.kind
ONLINE = "online"
OFFLINE = "offline"
CLEAR = "clear"
FENCE = "fence"
ACTION_KINDS = (ONLINE, OFFLINE, CLEAR, FENCE)


@dataclass(frozen=True)
class Action:
    """One command: online/offline/clear of `group` at `member`'s agent, or fence (group
    None): stop the member's VMI through KubeVirt (guestha.kubevirt.fencing)."""

    kind: str
    member: str
    group: str | None
    reason: str
    message: str


@dataclass(frozen=True)
class Wait:
    """Something the engine waits for, and until when at the latest (None: no bound
    it can see; an event must change the state first). A member wait has group None."""

    group: str | None
    member: str | None
    reason: str
    until: float | None
    message: str


@dataclass(frozen=True)
class GroupDecision:
    """A group's state for its status: `state` is one of the ServiceGroup's
    status.state words, `online_on` the members reporting it Online or Partial (by
    name), `target` the member this plan brings it online on (or a running Switchover's
    target)."""

    state: str
    online_on: tuple[str, ...]
    target: str | None
    reason: str
    message: str


@dataclass(frozen=True)
class SwitchoverDecision:
    """A Switchover's status: phase Pending, Running, Succeeded or Failed."""

    phase: str
    from_member: str | None
    to: str | None
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    waits: tuple[Wait, ...] = ()
    groups: Mapping[str, GroupDecision] = field(default_factory=dict)
    switchovers: Mapping[str, SwitchoverDecision] = field(default_factory=dict)
    next_wakeup: float | None = None  # earliest Wait.until after now: plan again then
