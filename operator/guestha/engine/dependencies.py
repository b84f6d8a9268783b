"""Group dependencies with VCS's semantics: where and when a parent may run.

The group that declares a dependency is the parent; the group it names is the child
(VCS `hagrp -link parent child kind rigidity`). Rules followed (VCS "service group
dependencies"):
- Kind, checked before the parent goes online on member m:
  OnlineLocal: the child is Online on m. OnlineGlobal: the child is Online on some
  member. OnlineRemote: the child is Online on a member other than m. OfflineLocal: the
  child does not run on m (its agent there reports it Offline or Faulted, or the child
  has no system there) and is not being started there.
  A child that is only Starting does not count yet: the parent waits (DependencyNotMet)
  and goes online in a later plan, after the child.
- The other way round, before the child goes online on m: not where an OfflineLocal
  parent runs ("and vice versa"), and not where a Hard parent faulted (they fail over
  together, to another member).
- Rigidity, once the parent runs:
  Soft: nothing happens to the parent when the child faults or goes offline.
  Firm: the parent is taken offline when the child stops being what the kind needs
  (Local: the child is Offline, Faulted or Stopping on the parent's member, or is being
  taken offline there by this plan; Global: the child runs nowhere; Remote: nowhere else;
  OfflineLocal: the child runs on the parent's member). The parent then comes back where
  the kind allows, so with OnlineLocal it follows the child to its new member.
  Hard (OnlineLocal only, as in VCS): as Firm, and when the parent faults on m the child
  is taken offline on m too, so both fail over together.
  A child that restarts a resource in place (Starting) or is Unknown does not take the
  parent down: that is not a fault of the child.
- A child that does not exist: the parent's online dependencies are never met
  (DependencyNotMet), an OfflineLocal one always is.
- Groups that depend on each other in a cycle (or on a group in one) are not planned at
  all (DependencyCycle); the CRD refuses only a group depending on itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from guestha.engine import safety
from guestha.engine.snapshot import Snapshot
from guestha.engine.state import (
    FIRM,
    HARD,
    OFFLINE_LOCAL,
    ONLINE_GLOBAL,
    ONLINE_LOCAL,
    ONLINE_REMOTE,
    GroupState,
)
from guestha.protocol.states import FAULTED, OFFLINE, ONLINE, PARTIAL, STARTING, STOPPING


@dataclass
class Placed:
    """The onlines and offlines planned so far in this plan, per group."""

    online: dict[str, set[str]] = field(default_factory=dict)
    offline: dict[str, set[str]] = field(default_factory=dict)

    def onlines(self, group: str) -> set[str]:
        return self.online.setdefault(group, set())

    def offlines(self, group: str) -> set[str]:
        return self.offline.setdefault(group, set())


def order(groups: Mapping[str, GroupState]) -> tuple[list[str], list[str]]:
    """(children before parents, ties by name; the groups in or above a cycle)."""
    children = {n: sorted({d.group for d in g.dependencies if d.group in groups})
                for n, g in groups.items()}
    done: list[str] = []
    placed: set[str] = set()
    pending = sorted(groups)
    while True:
        ready = [n for n in pending if all(c in placed for c in children[n])]
        if not ready:
            break
        first = ready[0]
        done.append(first)
        placed.add(first)
        pending.remove(first)
    return done, pending


def _up(snap: Snapshot, placed: Placed, child: str, member: str) -> bool:
    """The child runs on member (Online, Partial or Starting) and this plan does not take
    it offline there."""
    return (snap.report(child, member) in (ONLINE, PARTIAL, STARTING)
            and member not in placed.offlines(child))


def _online(snap: Snapshot, placed: Placed, child: str, member: str) -> bool:
    return snap.report(child, member) == ONLINE and member not in placed.offlines(child)


def parent_allows(snap: Snapshot, placed: Placed, group: GroupState,
                  member: str) -> str | None:
    """None when group may go online on member as far as its own dependencies go;
    otherwise why not."""
    for dep in group.dependencies:
        child = dep.group
        if child not in snap.groups:
            if dep.kind == OFFLINE_LOCAL:
                continue
            return f"child group {child} does not exist"
        if dep.kind == ONLINE_LOCAL and not _online(snap, placed, child, member):
            return f"{child} is not Online on {member} ({dep.kind})"
        if dep.kind == ONLINE_GLOBAL and not any(
                _online(snap, placed, child, m) for m in snap.members):
            return f"{child} is not Online anywhere ({dep.kind})"
        if dep.kind == ONLINE_REMOTE and not any(
                _online(snap, placed, child, m) for m in snap.members if m != member):
            return f"{child} is not Online on a member other than {member} ({dep.kind})"
        if dep.kind == OFFLINE_LOCAL:
            child_group = snap.groups[child]
            not_there = (snap.report(child, member) in safety.PROOF_STATES
                         or (child_group.priority(member) is None
                             and snap.proven_not_running(child, member)))
            if not not_there or member in placed.onlines(child):
                return f"{child} may run on {member} ({dep.kind})"
    return None


def child_allows(snap: Snapshot, group: GroupState, member: str) -> str | None:
    """None when no parent of group forbids it on member (OfflineLocal parent running
    there, Hard parent faulted there); otherwise why not."""
    for parent in snap.groups.values():
        for dep in parent.dependencies:
            if dep.group != group.name:
                continue
            state = snap.report(parent.name, member)
            if dep.kind == OFFLINE_LOCAL and state not in (None, *safety.PROOF_STATES):
                return f"parent {parent.name} runs on {member} ({dep.kind})"
            if dep.rigidity == HARD and state == FAULTED:
                return f"Hard parent {parent.name} faulted on {member}"
    return None


def broken(snap: Snapshot, placed: Placed, group: GroupState, member: str) -> str | None:
    """Why group, running on member, must go offline there by a Firm or Hard dependency;
    None when it may stay."""
    for dep in group.dependencies:
        if dep.rigidity not in (FIRM, HARD):
            continue
        child = dep.group
        if child not in snap.groups:
            continue  # the parent keeps running; it only waits when it must start
        if dep.kind == ONLINE_LOCAL:
            gone = (snap.report(child, member) in (OFFLINE, FAULTED, STOPPING, None)
                    or member in placed.offlines(child))
            if gone:
                return f"{child} is no longer online on {member} ({dep.kind}, {dep.rigidity})"
        elif dep.kind == ONLINE_GLOBAL:
            if not any(_up(snap, placed, child, m) for m in snap.members):
                return f"{child} is online nowhere ({dep.kind}, {dep.rigidity})"
        elif dep.kind == ONLINE_REMOTE:
            if not any(_up(snap, placed, child, m) for m in snap.members if m != member):
                return f"{child} is online on no other member ({dep.kind}, {dep.rigidity})"
        elif dep.kind == OFFLINE_LOCAL and _up(snap, placed, child, member):
            return f"{child} runs on {member} ({dep.kind}, {dep.rigidity})"
    return None


def hard_children(snap: Snapshot, placed: Placed, group: GroupState) -> list[tuple[str, str]]:
    """(child, member) to take offline because group faulted on member and depends on
    the child there Hard: they fail over together."""
    out: list[tuple[str, str]] = []
    for dep in group.dependencies:
        if dep.rigidity != HARD or dep.kind != ONLINE_LOCAL or dep.group not in snap.groups:
            continue
        if snap.groups[dep.group].frozen:
            continue
        for member in snap.members:
            if (snap.report(group.name, member) == FAULTED
                    and _up(snap, placed, dep.group, member)):
                out.append((dep.group, member))
    return out
