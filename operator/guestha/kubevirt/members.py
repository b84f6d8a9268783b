"""Members as KubeVirt shows them: a VirtualMachine and the VMI that runs it.

Pure functions over the raw objects, so they are tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guestha.model.members import MemberPhase, MemberView


def _phase(vmi: Mapping[str, Any]) -> MemberPhase:
    raw = (vmi.get("status") or {}).get("phase") or "Pending"
    try:
        return MemberPhase(raw)
    except ValueError:
        return MemberPhase.UNKNOWN


def _address(vmi: Mapping[str, Any]) -> str | None:
    for iface in (vmi.get("status") or {}).get("interfaces") or ():
        if iface.get("ipAddress"):
            return str(iface["ipAddress"])
    return None


def _agent_connected(vmi: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "AgentConnected" and c.get("status") == "True"
               for c in (vmi.get("status") or {}).get("conditions") or ())


def observe(name: str, vm: Mapping[str, Any] | None,
            vmi: Mapping[str, Any] | None) -> MemberView:
    """The view of member `name` from its VM and VMI (either may be absent)."""
    if vmi is not None:
        status = vmi.get("status") or {}
        meta = vmi.get("metadata") or {}
        return MemberView(name, _phase(vmi), _address(vmi), status.get("nodeName"),
                          _agent_connected(vmi), meta.get("uid"),
                          bool(meta.get("deletionTimestamp")))
    if vm is None:
        return MemberView(name, MemberPhase.MISSING)
    return MemberView(name, MemberPhase.STOPPED)
