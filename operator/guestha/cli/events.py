"""`kubectl guestha events`: guestha's own Events (on its InGuestClusters, ServiceGroups
and Switchovers), oldest first so the newest is on the last line, next to the prompt.

Pure: Event bodies in, rows out. The operator posts core/v1 Events through kopf, which sets
`lastTimestamp` (and `firstTimestamp`); `eventTime` and the object's creation time stand in
when an Event lacks it, so every Event has a place in the order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

KINDS = ("InGuestCluster", "ServiceGroup", "Switchover")


def when(event: Mapping[str, Any]) -> str:
    """The Event's latest time as RFC 3339 text (comparable as text: all UTC, 'Z')."""
    return str(event.get("lastTimestamp") or event.get("eventTime")
               or (event.get("metadata") or {}).get("creationTimestamp") or "")


def guestha_events(events: Sequence[Mapping[str, Any]], name: str | None
                   ) -> list[Mapping[str, Any]]:
    """The Events about guestha's objects (about `name`, any of the kinds, when given),
    oldest first."""
    def ours(e: Mapping[str, Any]) -> bool:
        about = e.get("involvedObject") or {}
        return (str(about.get("apiVersion") or "").startswith("guestha.io/")
                and about.get("kind") in KINDS and (name is None or about.get("name") == name))
    return sorted((e for e in events if ours(e)), key=when)


def rows(events: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """One row per Event: time, namespace, type, reason, object, count, message."""
    out = []
    for e in events:
        about = e.get("involvedObject") or {}
        out.append([when(e) or "-", str(about.get("namespace") or "-"),
                    str(e.get("type") or "-"), str(e.get("reason") or "-"),
                    f"{str(about.get('kind', '')).lower()}/{about.get('name', '')}",
                    str(e.get("count") or 1), str(e.get("message") or "")])
    return out


HEADER = ["TIME", "NAMESPACE", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"]
