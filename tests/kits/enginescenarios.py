"""Golden engine scenarios as data: a ClusterState in, the expected Plan out.

One YAML file per scenario in tests/unit/engine_scenarios/ (Pacemaker's cts/scheduler
is the model): `description`, the state (`now`, `settings`, `members`, `groups`,
`switchovers`, `leader`) and `expect`, the plan in a compact form a person can check:
  actions:      [kind, member, group, reason]            (group null for fence)
  waits:        [group, member, reason, until]
  groups:       name: [state, [online_on...], target, reason]
  switchovers:  name: [phase, from, to, reason]
  next_wakeup:  a time or null
Messages are prose and left out of the comparison (every one must be non-empty).

Shorthands of the input: `settings` fields not given take SETTINGS below; a member's
fields are MemberState's (snake_case) and a reachable member without `last_contact`
was heard at `now`; a group's `systems` may be a list (priorities 0, 1, 2... in order)
or a mapping member -> priority; `dependencies` entries are
{group, kind, rigidity}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from guestha.engine import (
    ClusterState,
    Dependency,
    GroupState,
    MemberState,
    Plan,
    Settings,
    Switchover,
)

SCENARIOS = Path(__file__).resolve().parents[1] / "unit" / "engine_scenarios"

SETTINGS: dict[str, Any] = {
    "peer_timeout": 3.0, "self_fence_timeout": 10.0, "fencing_policy": "KubeVirt",
    "watchdog": True, "lease_margin": 2.0, "migration_max_pause": 30.0,
    "operator_lease": 15.0, "offline_timeout": 60.0,
}


def files() -> list[Path]:
    return sorted(SCENARIOS.glob("*.yaml"))


def read(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name}: not a mapping"
    return data


def state(data: dict[str, Any]) -> ClusterState:
    now = float(data["now"])
    settings = Settings(**{**SETTINGS, **(data.get("settings") or {})})
    members = []
    for raw in data.get("members") or ():
        body = dict(raw)
        if body.get("agent_reachable", True) and "last_contact" not in body:
            body["last_contact"] = now
        body["groups"] = dict(body.get("groups") or {})
        body["incomplete"] = frozenset(body.get("incomplete") or ())
        members.append(MemberState(**body))
    groups = []
    for raw in data.get("groups") or ():
        body = dict(raw)
        systems = body.get("systems") or ()
        if isinstance(systems, dict):
            body["systems"] = tuple((str(k), int(v)) for k, v in systems.items())
        else:
            body["systems"] = tuple((str(m), i) for i, m in enumerate(systems))
        body["auto_start_list"] = tuple(body.get("auto_start_list") or ())
        body["dependencies"] = tuple(Dependency(**d) for d in body.get("dependencies") or ())
        body["online_attempts"] = dict(body.get("online_attempts") or {})
        groups.append(GroupState(**body))
    switchovers = tuple(Switchover(**s) for s in data.get("switchovers") or ())
    return ClusterState(now, settings, tuple(members), tuple(groups), switchovers,
                        bool(data.get("leader", True)))


def compact(plan: Plan) -> dict[str, Any]:
    """The plan as `expect` holds it."""
    return {
        "actions": [[a.kind, a.member, a.group, a.reason] for a in plan.actions],
        "waits": [[w.group, w.member, w.reason, w.until] for w in plan.waits],
        "groups": {n: [d.state, list(d.online_on), d.target, d.reason]
                   for n, d in plan.groups.items()},
        "switchovers": {n: [d.phase, d.from_member, d.to, d.reason]
                        for n, d in plan.switchovers.items()},
        "next_wakeup": plan.next_wakeup,
    }


def messages(plan: Plan) -> list[str]:
    return ([a.message for a in plan.actions] + [w.message for w in plan.waits]
            + [d.message for d in plan.groups.values()]
            + [d.message for d in plan.switchovers.values()])


class _Dumper(yaml.SafeDumper):
    pass


def _list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    """Short lists of scalars on one line, as people write them."""
    flow = all(not isinstance(v, (dict, list)) or v == [] or
               (isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v))
               for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(list, _list)


def write_expect(path: Path, expect: dict[str, Any]) -> None:
    """Replaces the file's `expect` (everything from the line `expect:` on)."""
    text = path.read_text()
    head = text.split("\nexpect:", 1)[0].rstrip("\n")
    body = yaml.dump({"expect": expect}, Dumper=_Dumper, sort_keys=False, width=100)
    path.write_text(head + "\n" + body)
