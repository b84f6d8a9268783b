"""`kubectl guestha status`: the clusters and their groups at a glance, like `hastatus -sum`.

Pure: custom-resource bodies in, text out, so the layout is tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Body = Mapping[str, Any]


def _condition(body: Body, kind: str) -> str:
    for c in (body.get("status") or {}).get("conditions") or ():
        if c.get("type") == kind:
            return str(c.get("status", "Unknown"))
    return "Unknown"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]]


def render(clusters: Sequence[Body], groups: Sequence[Body]) -> str:
    """Three blocks: clusters, their members, and service groups with where they run."""
    if not clusters and not groups:
        return "No InGuestClusters or ServiceGroups found."
    lines = ["-- CLUSTERS"]
    lines += _table(
        ["NAMESPACE", "CLUSTER", "MEMBERS", "READY", "QUORUM", "AVAILABLE"],
        [[c["metadata"].get("namespace", ""), c["metadata"]["name"],
          str((c.get("status") or {}).get("memberCount", "-")),
          str((c.get("status") or {}).get("readyMembers", "-")),
          str((c.get("status") or {}).get("quorum", "-")).lower(),
          _condition(c, "Available")] for c in clusters])
    lines += ["", "-- MEMBERS"]
    lines += _table(
        ["CLUSTER", "MEMBER", "PHASE", "ADDRESS", "NODE", "AGENT"],
        [[c["metadata"]["name"], m.get("name", ""), m.get("phase", ""),
          m.get("address", "-"), m.get("node", "-"), m.get("agent", "-")]
         for c in clusters for m in (c.get("status") or {}).get("members") or ()])
    lines += ["", "-- SERVICE GROUPS"]
    lines += _table(
        ["NAMESPACE", "GROUP", "CLUSTER", "STATE", "ONLINE ON", "FROZEN", "FAILOVERS"],
        [[g["metadata"].get("namespace", ""), g["metadata"]["name"],
          (g.get("spec") or {}).get("cluster", ""),
          (g.get("status") or {}).get("state", "Unknown"),
          ",".join((g.get("status") or {}).get("onlineOn") or ()) or "-",
          str(bool((g.get("spec") or {}).get("frozen", False))).lower(),
          str((g.get("status") or {}).get("failovers", 0))] for g in groups])
    return "\n".join(lines)
