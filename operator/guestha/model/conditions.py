"""metav1.Condition lists, updated the way Kubernetes controllers do.

A condition's lastTransitionTime moves only when its status changes, so a reconcile that
finds nothing new writes nothing new.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict


class Condition(TypedDict):
    """One entry of `status.conditions`, as metav1.Condition."""

    type: str
    status: str
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: str,
    generation: int,
) -> list[Condition]:
    """A copy of `conditions` with `type_` set; other conditions kept as they are."""
    wanted = "True" if status else "False"
    result: list[Condition] = []
    found = False
    for old in conditions:
        if old.get("type") != type_:
            result.append(Condition(
                type=str(old.get("type", "")), status=str(old.get("status", "Unknown")),
                reason=str(old.get("reason", "")), message=str(old.get("message", "")),
                lastTransitionTime=str(old.get("lastTransitionTime", now)),
                observedGeneration=int(old.get("observedGeneration", generation)),
            ))
            continue
        found = True
        since = str(old.get("lastTransitionTime", now)) if old.get("status") == wanted else now
        result.append(Condition(type=type_, status=wanted, reason=reason, message=message,
                                lastTransitionTime=since, observedGeneration=generation))
    if not found:
        result.append(Condition(type=type_, status=wanted, reason=reason, message=message,
                                lastTransitionTime=now, observedGeneration=generation))
    return result
