"""`kubectl guestha status`: the clusters and their groups at a glance, like `hastatus -sum`.

Two steps, both pure (custom-resource bodies in, no API calls), so they are tested without
a cluster:
- `document()` turns the bodies into the summary that `-o json|yaml` prints. Its field
  names are an interface scripts rely on (docs/cli.md lists them): fields are only ever
  added, never renamed; a value the API does not have yet is null, never left out.
- `render()` lays the same summary out as text for a person, in blocks like VCS's
  `hastatus -sum`: clusters, members, groups, each group's state per member, faulted
  resources and pending switchovers (the last two only when there are any).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from guestha.cli import colour

Body = Mapping[str, Any]
FINISHED = ("Succeeded", "Failed")  # a Switchover's final phases


def _status(body: Body) -> Mapping[str, Any]:
    return body.get("status") or {}


def _meta(body: Body) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def _condition(body: Body, kind: str) -> str:
    for c in _status(body).get("conditions") or ():
        if c.get("type") == kind:
            return str(c.get("status", "Unknown"))
    return "Unknown"


def _cluster(c: Body) -> dict[str, Any]:
    status = _status(c)
    return {
        "namespace": _meta(c).get("namespace"), "name": _meta(c).get("name"),
        "memberCount": status.get("memberCount"), "readyMembers": status.get("readyMembers"),
        "quorum": status.get("quorum"), "available": _condition(c, "Available"),
        "members": [{"name": m.get("name"), "phase": m.get("phase"),
                     "agent": m.get("agent"), "agentVersion": m.get("agentVersion"),
                     "address": m.get("address"), "node": m.get("node")}
                    for m in status.get("members") or ()],
    }


def _group(g: Body) -> dict[str, Any]:
    spec, status = g.get("spec") or {}, _status(g)
    return {
        "namespace": _meta(g).get("namespace"), "name": _meta(g).get("name"),
        "cluster": spec.get("cluster"), "type": spec.get("type", "Failover"),
        "state": status.get("state", "Unknown"), "onlineOn": list(status.get("onlineOn") or ()),
        "frozen": bool(spec.get("frozen", False)), "failovers": int(status.get("failovers") or 0),
        "members": [{"name": m.get("name"), "state": m.get("state"),
                     "faulted": bool(m.get("faulted", False))}
                    for m in status.get("members") or ()],
    }


def _faults(g: Body) -> list[dict[str, Any]]:
    return [{"namespace": _meta(g).get("namespace"), "group": _meta(g).get("name"),
             "member": m.get("name"), "resource": r.get("name"), "message": r.get("message"),
             "lastFaultTime": r.get("lastFaultTime")}
            for m in _status(g).get("members") or ()
            for r in m.get("resources") or () if r.get("state") == "Faulted"]


def _switchover(s: Body) -> dict[str, Any]:
    spec, status = s.get("spec") or {}, _status(s)
    return {"namespace": _meta(s).get("namespace"), "name": _meta(s).get("name"),
            "group": spec.get("serviceGroup"), "phase": status.get("phase", "Pending"),
            "from": status.get("from"), "to": status.get("to") or spec.get("to"),
            "message": status.get("message")}


def document(clusters: Sequence[Body], groups: Sequence[Body],
             switchovers: Sequence[Body]) -> dict[str, Any]:
    """The machine-readable summary (`-o json|yaml`): clusters with their members, groups
    with their state per member, every faulted resource, the switchovers not finished."""
    return {
        "clusters": [_cluster(c) for c in clusters],
        "groups": [_group(g) for g in groups],
        "faultedResources": [f for g in groups for f in _faults(g)],
        "pendingSwitchovers": [_switchover(s) for s in switchovers
                               if _status(s).get("phase") not in FINISHED],
    }


def _text(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], paint: bool,
           coloured: Sequence[int] = ()) -> list[str]:
    """Columns aligned on the plain text; colour added after the padding (escape codes
    take no room on a terminal)."""
    cells = [[_text(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in [list(header), *cells]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for row in cells:
        out = [colour.paint(v, paint) + " " * (w - len(v)) if i in coloured else v.ljust(w)
               for i, (v, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(out).rstrip())
    return lines


def render(summary: Mapping[str, Any], paint: bool = False) -> str:
    """The summary as text: one block per kind of thing, state words coloured when
    `paint` (colour.wanted decides)."""
    clusters, groups = summary["clusters"], summary["groups"]
    if not clusters and not groups:
        return "No InGuestClusters or ServiceGroups found."
    lines = ["-- CLUSTERS"]
    lines += _table(["NAMESPACE", "CLUSTER", "MEMBERS", "READY", "QUORUM", "AVAILABLE"],
                    [[c["namespace"], c["name"], c["memberCount"], c["readyMembers"],
                      c["quorum"], c["available"]] for c in clusters], paint, (4, 5))
    lines += ["", "-- MEMBERS"]
    lines += _table(["NAMESPACE", "CLUSTER", "MEMBER", "PHASE", "AGENT", "ADDRESS", "NODE"],
                    [[c["namespace"], c["name"], m["name"], m["phase"], m["agent"],
                      m["address"], m["node"]] for c in clusters for m in c["members"]],
                    paint, (3,))
    lines += ["", "-- SERVICE GROUPS"]
    lines += _table(["NAMESPACE", "GROUP", "CLUSTER", "STATE", "ONLINE ON", "FROZEN",
                     "FAILOVERS"],
                    [[g["namespace"], g["name"], g["cluster"], g["state"], g["onlineOn"],
                      g["frozen"], g["failovers"]] for g in groups], paint, (3,))
    lines += ["", "-- GROUP STATE"]
    lines += _table(["NAMESPACE", "GROUP", "MEMBER", "STATE", "FAULTED"],
                    [[g["namespace"], g["name"], m["name"], m["state"], m["faulted"]]
                     for g in groups for m in g["members"]], paint, (3,))
    if summary["faultedResources"]:
        lines += ["", "-- FAULTED RESOURCES"]
        lines += _table(["NAMESPACE", "GROUP", "MEMBER", "RESOURCE", "MESSAGE"],
                        [[f["namespace"], f["group"], f["member"], f["resource"],
                          f["message"]] for f in summary["faultedResources"]], paint)
    if summary["pendingSwitchovers"]:
        lines += ["", "-- PENDING SWITCHOVERS"]
        lines += _table(["NAMESPACE", "SWITCHOVER", "GROUP", "PHASE", "FROM", "TO", "MESSAGE"],
                        [[s["namespace"], s["name"], s["group"], s["phase"], s["from"],
                          s["to"], s["message"]] for s in summary["pendingSwitchovers"]],
                        paint, (3,))
    return "\n".join(lines)
