"""Every reason the operator writes is explained in docs/troubleshooting.md.

Reasons reach users in Events, in conditions and in the `reason` fields of status
(Switchover.status.reason, lastFailover.reason, lastFencing.reason). This test reads the
operator's code (controller/ and engine/) and finds every place that writes one: calls of
an Event sink (`event`, `kopf.event`, `kopf.warn`), of `set_condition`, the constructors
of the engine's and the rollout's decisions, and dict literals with a "reason" key. The
reason argument is resolved to its values: a string, a module constant, either branch of
an `if`. An argument that is computed (a variable, an f-string) must be listed in DYNAMIC
below with the values it can take, taken from the code's own tables: so a new call site
with a computed reason fails here until someone says what it can be, and the values listed
must then be documented too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from guestha.controller import publisher, template
from guestha.engine import reasons
from guestha.engine.plan import ACTION_KINDS
from guestha.protocol import states

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [ROOT / "operator/guestha/controller", ROOT / "operator/guestha/engine"]
DOC = ROOT / "docs" / "troubleshooting.md"

ENGINE = set(reasons.ALL)
SWITCHOVER_PHASES = {"Pending", "Running", "Succeeded", "Failed"}
ROLLOUT = {"UpToDate", "Upgrading", "Upgraded", "UpgradeFailed", "Paused",
           "MembersUnreachable", "ClusterNotSettled"}

# (module, the reason expression as written) -> the values it can take, and where from
DYNAMIC: dict[tuple[str, str], set[str]] = {
    # the Event sink itself: every caller is checked at its own call site
    ("outputs.py", "reason"): set(),
    # the Ready condition: the group's state when ready (Online, or Offline when not
    # wanted), else the engine's reason, or NoDecision before the first plan
    ("group_status.py", "state if ready else reason"):
        {states.ONLINE, states.OFFLINE, "NoDecision"} | ENGINE,
    ("group_status.py", "reason if moving else 'Settled'"): {"Settled", "NoDecision"} | ENGINE,
    ("group_status.py",
     "'Faulted' if faulted else 'StateUnknown' if unknown else state if degraded else "
     "'Healthy'"): {"Faulted", "StateUnknown", "Healthy", states.PARTIAL, states.FAULTED},
    # the AgentsUpToDate condition: the rollout decision's reason (rollout.condition)
    ("publisher.py", "*agents_up_to_date"): ROLLOUT,
    # one Event per planned action: online, offline, clear, fence
    ("publisher.py", "EVENT_REASONS.get(action.kind, action.kind)"):
        set(publisher.EVENT_REASONS.values()),
    ("publisher.py", "f'Switchover{decision.phase}'"): {f"Switchover{p}" for p in
                                                         SWITCHOVER_PHASES},
    # Switchover.status.reason: the engine's switchover reasons
    ("publisher.py", "decision.reason"): ENGINE,
    # lastFailover.reason
    ("publisher.py", "cause"): {"ResourceFaulted", "MemberLost", "MemberLeft"},
    # lastFencing.reason: the fence action's reason, from the engine
    ("fencingtally.py", "reason"): ENGINE,
    # the template mode's Events: one of its outcome reasons (template.Outcome.reason)
    ("template.py", "o.reason"): {template.INJECTED, template.RESTORED,
                                  template.SECRET_WRITTEN, template.NOT_INJECTED},
    # the engine's switchover helpers pass reasons through
    ("switchovers.py", "reason"): ENGINE,
    ("switchovers.py", "*problem"): ENGINE,
}

SINKS = {"event", "warn"}  # writer.event / outputs.event / kopf.event / kopf.warn / event()
BUILDERS = {"set_condition": 3, "Decision": 2, "SwitchoverDecision": 3, "_fail": 3}


def constants(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "text" (and A, B = "x", "y")."""
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
            if isinstance(target, ast.Name) and isinstance(value, ast.Constant) \
                    and isinstance(value.value, str):
                found[target.id] = value.value
            if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                for t, v in zip(target.elts, value.elts, strict=True):
                    if isinstance(t, ast.Name) and isinstance(v, ast.Constant):
                        found[t.id] = str(v.value)
    return found


def modules() -> dict[str, tuple[Path, ast.Module]]:
    return {p.stem: (p, ast.parse(p.read_text())) for folder in PACKAGES
            for p in sorted(folder.glob("*.py"))}


def reason_arguments(tree: ast.Module) -> Iterator[ast.expr]:
    """Every expression the module writes as a reason."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "reason":
                    yield value
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else \
            func.id if isinstance(func, ast.Name) else ""
        if name in SINKS and ast.unparse(func) != "kopf.on.event":
            keyword = [k.value for k in node.keywords if k.arg == "reason"]
            if keyword:
                yield keyword[0]
            elif len(node.args) == 4:  # writer.event(body, type, reason, message)
                yield node.args[2]
            elif len(node.args) == 3:  # event(type, reason, message)
                yield node.args[1]
        elif name in BUILDERS and len(node.args) > BUILDERS[name]:
            starred = [a for a in node.args if isinstance(a, ast.Starred)]
            yield starred[0] if starred else node.args[BUILDERS[name]]


def resolve(expr: ast.expr, module: str, consts: dict[str, dict[str, str]]) -> set[str] | None:
    """The values of a reason expression; None when it is computed."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return {expr.value}
    if isinstance(expr, ast.Name) and expr.id in consts[module]:
        return {consts[module][expr.id]}
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) \
            and expr.value.id in consts and expr.attr in consts[expr.value.id]:
        return {consts[expr.value.id][expr.attr]}
    if isinstance(expr, ast.IfExp):
        body, orelse = resolve(expr.body, module, consts), resolve(expr.orelse, module, consts)
        if body is not None and orelse is not None:
            return body | orelse
    return None


USED: set[tuple[str, str]] = set()


def emitted() -> tuple[set[str], list[str]]:
    """Every reason the code can write, and the computed expressions not in DYNAMIC."""
    found = modules()
    consts = {name: constants(tree) for name, (_, tree) in found.items()}
    values: set[str] = set()
    unknown: list[str] = []
    for name, (path, tree) in found.items():
        for expr in reason_arguments(tree):
            got = resolve(expr, name, consts)
            key = (path.name, ast.unparse(expr))
            if got is None:
                if key not in DYNAMIC:
                    unknown.append(f"{path.name}:{expr.lineno}: {key[1]}")
                    continue
                got = DYNAMIC[key]
                USED.add(key)
            values |= got
    return values, unknown


def documented() -> set[str]:
    """The reasons docs/troubleshooting.md explains: `Reason` in a table's first column."""
    names: set[str] = set()
    for line in DOC.read_text().splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Za-z]+)`", line.split("|")[1]))
    return names


def test_every_computed_reason_is_accounted_for() -> None:
    _, unknown = emitted()
    assert not unknown, ("reasons computed where this test cannot see their values; add "
                         f"them to DYNAMIC with what they can be: {unknown}")


def test_every_dynamic_entry_is_still_in_the_code() -> None:
    emitted()
    assert not sorted(set(DYNAMIC) - USED)


def test_every_reason_the_operator_writes_is_documented() -> None:
    values, _ = emitted()
    assert len(values) > 50  # the collector found the call sites (it can fail)
    missing = sorted(values - documented())
    assert not missing, f"explain these in docs/troubleshooting.md: {missing}"


def test_the_action_events_cover_every_action_kind() -> None:
    """EVENT_REASONS.get(kind, kind) never falls back to the bare kind."""
    assert set(publisher.EVENT_REASONS) == set(ACTION_KINDS)


def test_the_doc_explains_nothing_the_code_never_writes() -> None:
    values, _ = emitted()
    assert not sorted(documented() - values)
