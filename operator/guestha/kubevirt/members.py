"""Members as KubeVirt shows them: a VirtualMachine and the VMI that runs it.

Pure functions over the raw objects (or the parts of them that the operator's indexes
keep), so they are tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guestha.kubevirt import fencing, injection
from guestha.kubevirt.template import RECORD_ANNOTATION, Record, record_of, template_injected
from guestha.model.members import MemberPhase, MemberView

RESTART_REQUIRED = "RestartRequired"  # KubeVirt's VM condition: the VMI runs an older template
FINAL_PHASES = (MemberPhase.SUCCEEDED, MemberPhase.FAILED)


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


def live(vmi: Mapping[str, Any]) -> bool:
    """The VMI runs, or is on its way to run (not final, not being deleted)."""
    return (_phase(vmi) not in FINAL_PHASES
            and not (vmi.get("metadata") or {}).get("deletionTimestamp"))


def kubevirt_restart_required(vm: Mapping[str, Any]) -> str | None:
    """KubeVirt's RestartRequired condition of the VM: its message, when True."""
    for c in (vm.get("status") or {}).get("conditions") or ():
        if c.get("type") == RESTART_REQUIRED and c.get("status") == "True":
            return str(c.get("message") or "a restart is required")
    return None


def restart_required(vm: Mapping[str, Any] | None, vmi: Mapping[str, Any] | None) -> str | None:
    """Why a member's live instance must restart to run guestha's agent that Template mode
    put in its VM's template (None: it need not). guestha's own reading (the instance
    lacks the injection of its VM's template) holds where KubeVirt sets no RestartRequired;
    KubeVirt's message is added when it does, and alone speaks when the template was
    injected again (a new plan) after the instance started."""
    if vm is None or vmi is None or not live(vmi):
        return None
    text = ((vm.get("metadata") or {}).get("annotations") or {}).get(RECORD_ANNOTATION)
    if text is None:
        return None
    try:
        record = Record.from_json(str(text))
    except ValueError:
        return None
    injected = vm.get("templateInjected")  # an index entry says it (see `index_entry`)
    if not (template_injected(vm, record.secret) if injected is None else injected):
        return None
    kubevirt = kubevirt_restart_required(vm)
    instance = ((vmi.get("metadata") or {}).get("annotations") or {}).get(
        injection.INJECTED_ANNOTATION)
    if instance != record.secret:
        why = ("the VM's template carries guestha's agent (Template mode) but its running "
               "instance started without it: restart the VM to start the agent")
        return f"{why} (KubeVirt: {kubevirt})" if kubevirt else why
    if kubevirt:
        return (f"the VM's template was injected again since its instance started: restart "
                f"the VM to run it (KubeVirt: {kubevirt})")
    return None


def vm_entry(vm: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator's VM index keeps of a VM: its labels (memberSelector), its
    Template-mode record, whether its template carries that injection, and KubeVirt's
    RestartRequired condition. `observe` and `restart_required` read it as a VM."""
    meta = vm.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    kept = {k: annotations[k] for k in (RECORD_ANNOTATION,) if k in annotations}
    try:
        record = record_of(vm)
    except ValueError:
        record = None
    conditions = [dict(c) for c in (vm.get("status") or {}).get("conditions") or ()
                  if c.get("type") == RESTART_REQUIRED]
    return {"metadata": {"labels": dict(meta.get("labels") or {}), "annotations": kept},
            "status": {"conditions": conditions},
            "templateInjected": record is not None and template_injected(vm, record.secret)}


def vmi_entry(vmi: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator's VMI index keeps of a VMI: uid, deletion mark, the injection's
    annotation, who wrote its phase (the fencing verdict reads it), when it was created
    (AutoStart waits for a guest coming up), and its status."""
    meta = vmi.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return {"metadata": {"uid": meta.get("uid"), "deletionTimestamp": meta.get("deletionTimestamp"),
                         "creationTimestamp": meta.get("creationTimestamp"),
                         "annotations": {k: annotations[k] for k in (injection.INJECTED_ANNOTATION,)
                                         if k in annotations},
                         "managedFields": fencing.phase_fields(vmi)},
            "status": dict(vmi.get("status") or {})}


def observe(name: str, vm: Mapping[str, Any] | None,
            vmi: Mapping[str, Any] | None) -> MemberView:
    """The view of member `name` from its VM and VMI (either may be absent)."""
    if vmi is not None:
        status = vmi.get("status") or {}
        meta = vmi.get("metadata") or {}
        return MemberView(name, _phase(vmi), _address(vmi), status.get("nodeName"),
                          _agent_connected(vmi), meta.get("uid"),
                          bool(meta.get("deletionTimestamp")), restart_required(vm, vmi),
                          fencing.parse_time(meta.get("creationTimestamp")))
    if vm is None:
        return MemberView(name, MemberPhase.MISSING)
    return MemberView(name, MemberPhase.STOPPED)
