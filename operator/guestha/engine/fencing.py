"""When a silent member is fenced, and what the engine waits for otherwise.

A member is lost when its agent does not answer and nobody (the operator, a reachable
peer) heard it for `peer_timeout`, plus `migration_max_pause` while KubeVirt
live-migrates it (the last phase of a migration pauses the guest, and that silence is
not a loss), plus the time the operator's own event loop ran late within the silence,
`operator_late` (its answers may have waited unread: a silence the operator caused is
no evidence). With fencing policy KubeVirt a lost member is fenced (Action fence, reason
PeerTimeout: the controller stops its VMI at once, grace 0) when all of these hold:
- its VMI runs on a Ready node: on a node that is not Ready KubeVirt cannot confirm a
  stop (DESIGN.md rule 1b), so the engine waits for the quorum-lease bound instead
  (Wait NodeUnresponsive, until the bound);
- its stop is not confirmed yet and no fence was requested (a requested one that is not
  confirmed is waited for: FenceNotConfirmed; the lease bound stays a way out);
- at least one other member's agent answers the operator. When none does, the operator
  may be the one cut off (its own network, an API partition): fencing every member
  would take down a healthy cluster, so it waits (NoPeerReachable) for an agent to
  answer or for the lease bound;
- no frozen group may be running there: fencing would take a frozen group down, which
  freezing forbids (FrozenGroupThere; the lease bound still frees its other groups).
A member is fenced whatever it runs, as VCS and Pacemaker fence any member that leaves
the membership: a hung guest comes back by its runStrategy and rejoins.

Policy SelfFence never fences: it waits for the lease bound (AwaitingSelfFence). Policy
None never moves anything off a silent member (FencingDisabled, no bound).

A member never heard at all (no contact time) is not fenced: it has not joined (it may
be booting), and there is no time to count a timeout from (NeverSeen).

VCS equivalent: LLT peerinact declares a system lost, GAB reconfigures, I/O fencing
races for the coordination points and the loser panics; the winner fails the groups
over. guestha's "race" is the KubeVirt power-off confirmed by the node, with the
quorum-lease self-fence as the fallback that needs no node.
"""

from __future__ import annotations

from collections.abc import Iterable

from guestha.engine import reasons, safety
from guestha.engine.plan import FENCE, Action, Wait
from guestha.engine.snapshot import Snapshot
from guestha.engine.state import FENCE_KUBEVIRT, FENCE_NONE, VM_RUNNING, MemberState


def lost(member: MemberState, snap: Snapshot) -> bool:
    deadline = snap.silence_deadline(member)
    return (not member.agent_reachable and deadline is not None and snap.now >= deadline)


def plan_members(snap: Snapshot, frozen: Iterable[str]) -> tuple[list[Action], list[Wait]]:
    """Fence actions and member waits, members by name. `frozen`: the frozen groups."""
    frozen_groups = tuple(frozen)
    actions: list[Action] = []
    waits: list[Wait] = []
    s = snap.state.settings
    for name, m in snap.members.items():
        if m.agent_reachable or m.stop_confirmed:
            continue
        bound = safety.lease_bound(m, snap.state)
        down = name in snap.down

        def wait(reason: str, until: float | None, message: str,
                 name: str = name, down: bool = down) -> None:
            if not down:
                waits.append(Wait(None, name, reason, until, message))

        deadline = snap.silence_deadline(m)
        if deadline is None:
            wait(reasons.NEVER_SEEN, None,
                 f"{name}'s agent has never answered: nothing can be counted from")
            continue
        if snap.now < deadline:
            in_pause = m.migrating and snap.now >= deadline - s.migration_max_pause
            wait(reasons.MIGRATION_PAUSE if in_pause else reasons.AGENT_SILENT, deadline,
                 f"{name} is silent" + (" while migrating" if m.migrating else "")
                 + f"; lost at {deadline:g} if it stays so")
            continue
        bound_text = (f"until its quorum lease runs out at {bound:g}" if bound is not None
                      else "with no quorum-lease bound to count on")
        if s.fencing_policy == FENCE_NONE:
            wait(reasons.FENCING_DISABLED, None,
                 f"{name} is lost; fencing policy None: its groups are not moved")
            continue
        if s.fencing_policy != FENCE_KUBEVIRT:
            wait(reasons.AWAITING_SELF_FENCE, bound, f"{name} is lost; waiting {bound_text}")
            continue
        held = [g for g in frozen_groups
                if m.groups.get(g) not in (None, *safety.PROOF_STATES)]
        others = [o for o, om in snap.members.items() if o != name and om.agent_reachable]
        if held:
            wait(reasons.FROZEN_GROUP_THERE, bound,
                 f"{name} is lost but may run frozen group(s) {', '.join(held)}: not "
                 f"fenced; waiting {bound_text}")
        elif m.fence_requested_at is not None:
            wait(reasons.FENCE_NOT_CONFIRMED, bound,
                 f"{name}'s stop was requested at {m.fence_requested_at:g}, not confirmed; "
                 f"waiting for the confirmation or {bound_text}")
        elif not m.node_ready:
            wait(reasons.NODE_UNRESPONSIVE, bound,
                 f"{name}'s node is not Ready: KubeVirt cannot confirm a stop there; "
                 f"waiting {bound_text}")
        elif m.vm != VM_RUNNING:
            wait(reasons.STOP_NOT_CONFIRMED, bound,
                 f"{name}'s VM is {m.vm} but nothing confirmed its guest stopped; "
                 f"waiting {bound_text}")
        elif not others:
            wait(reasons.NO_PEER_REACHABLE, bound,
                 f"{name} is silent, and so is every other member: the operator may be "
                 f"the one cut off; not fenced, waiting {bound_text}")
        else:
            actions.append(Action(FENCE, name, None, reasons.PEER_TIMEOUT,
                                  f"{name} silent since {safety.silent_since(m):g}, past "
                                  "the peer timeout" +
                                  (" and the migration allowance" if m.migrating else "")))
    return actions, waits
