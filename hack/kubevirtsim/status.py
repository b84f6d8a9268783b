"""KubeVirt's status vocabulary and the pure rules that write it.

Phases, condition types, finalizers, labels and event reasons are named as KubeVirt
names them, so that clients written against a real cluster read the simulator the same
way. Everything here is a pure function of its arguments (time is passed in).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

Obj = dict[str, Any]

# VMI phases
PENDING, SCHEDULING, SCHEDULED, RUNNING = "Pending", "Scheduling", "Scheduled", "Running"
SUCCEEDED, FAILED = "Succeeded", "Failed"
FINAL_PHASES = (SUCCEEDED, FAILED)

# finalizers: the VMI controller's on every VMI, the VM controller's on VMs and their VMIs
VMI_FINALIZER = "foregroundDeleteVirtualMachine"
VM_CONTROLLER_FINALIZER = "kubevirt.io/virtualMachineControllerFinalize"

# labels and annotations
NODE_NAME_LABEL = "kubevirt.io/nodeName"
SCHEDULABLE_LABEL = "kubevirt.io/schedulable"
HEARTBEAT_ANNOTATION = "kubevirt.io/heartbeat"
VM_GENERATION_ANNOTATION = "kubevirt.io/vm-generation"
FAULT_ANNOTATION = "kubevirtsim.guestha.io/fault"
SIMULATED_LABEL = "kubevirtsim.guestha.io/simulated"
OUT_OF_SERVICE_TAINT = "node.kubernetes.io/out-of-service"

# event reasons (KubeVirt's constants)
SUCCESSFUL_CREATE = "SuccessfulCreate"
SUCCESSFUL_DELETE = "SuccessfulDelete"
FAILED_CREATE = "FailedCreate"
FAILED_DELETE = "FailedDelete"
STARTED = "Started"
STOPPED = "Stopped"
SHUTTING_DOWN = "ShuttingDown"
FAILED = "Failed"
SYNC_FAILED = "SyncFailed"

LAUNCHER_IMAGE = "kubevirtsim/virt-launcher:v1"

RUN_STRATEGIES = ("Always", "RerunOnFailure", "Manual", "Halted", "Once")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(when: dt.datetime) -> str:
    """Kubernetes' metav1.Time form: seconds, UTC, 'Z'."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def set_condition(
    conditions: list[Obj],
    type_: str,
    status: str,
    when: dt.datetime,
    reason: str = "",
    message: str = "",
    probe: bool = False,
) -> bool:
    """Set one condition in place; the transition time changes only with the status.

    Returns True when anything changed.
    """
    stamp = rfc3339(when)
    for cond in conditions:
        if cond.get("type") != type_:
            continue
        before = dict(cond)
        if cond.get("status") != status:
            cond["lastTransitionTime"] = stamp
        cond["status"] = status
        for field, value in (("reason", reason), ("message", message)):
            if value:
                cond[field] = value
            else:
                cond.pop(field, None)
        if probe:
            cond["lastProbeTime"] = stamp
        return cond != before
    cond = {
        "type": type_,
        "status": status,
        "lastTransitionTime": stamp,
        "lastProbeTime": stamp if probe else None,
    }
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    conditions.append(cond)
    return True


def remove_condition(conditions: list[Obj], type_: str) -> bool:
    kept = [c for c in conditions if c.get("type") != type_]
    changed = len(kept) != len(conditions)
    conditions[:] = kept
    return changed


def condition(obj: Obj, type_: str) -> Obj | None:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def condition_true(obj: Obj, type_: str) -> bool:
    cond = condition(obj, type_)
    return cond is not None and cond.get("status") == "True"


def set_phase(vmi: Obj, phase: str, when: dt.datetime) -> bool:
    """Move a VMI to a phase, recording phaseTransitionTimestamps as KubeVirt does."""
    status = vmi.setdefault("status", {})
    if status.get("phase") == phase:
        return False
    status["phase"] = phase
    stamps = status.setdefault("phaseTransitionTimestamps", [])
    stamps.append({"phase": phase, "phaseTransitionTimestamp": rfc3339(when)})
    return True


def phase(vmi: Obj | None) -> str:
    if vmi is None:
        return ""
    return str(vmi.get("status", {}).get("phase") or "")


def is_final(vmi: Obj | None) -> bool:
    return phase(vmi) in FINAL_PHASES


def deleting(obj: Obj | None) -> bool:
    return obj is not None and bool(obj.get("metadata", {}).get("deletionTimestamp"))


def add_finalizer(obj: Obj, name: str) -> bool:
    finalizers = obj.setdefault("metadata", {}).setdefault("finalizers", [])
    if name in finalizers:
        return False
    finalizers.append(name)
    return True


def remove_finalizer(obj: Obj, name: str) -> bool:
    finalizers = obj.get("metadata", {}).get("finalizers") or []
    if name not in finalizers:
        return False
    obj["metadata"]["finalizers"] = [f for f in finalizers if f != name]
    return True


def controller_owner(obj: Obj) -> Obj | None:
    """The ownerReference with controller=true, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owned_by_vm(vmi: Obj | None, vm: Obj | None) -> bool:
    if vmi is None or vm is None:
        return False
    ref = controller_owner(vmi)
    return (
        ref is not None
        and ref.get("kind") == "VirtualMachine"
        and ref.get("uid") == vm["metadata"].get("uid")
    )


def termination_grace(vmi: Obj) -> float:
    """Seconds a deleted VMI's guest gets to shut down: spec.terminationGracePeriodSeconds
    (KubeVirt's default 30 s). The delete's own grace period cannot be used: the apiserver
    sets deletionGracePeriodSeconds to 0 on every custom resource, so a caller that wants a
    shorter grace (virt-api's stop with gracePeriod) patches the spec field first."""
    spec_grace = vmi.get("spec", {}).get("terminationGracePeriodSeconds")
    return 30.0 if spec_grace is None else max(float(spec_grace), 0.0)


def interface_name(vmi: Obj) -> str:
    """The name of the VMI's first interface, as status.interfaces[0].name reports it."""
    spec = vmi.get("spec", {})
    interfaces = spec.get("domain", {}).get("devices", {}).get("interfaces") or []
    if interfaces and interfaces[0].get("name"):
        return str(interfaces[0]["name"])
    networks = spec.get("networks") or []
    if networks and networks[0].get("name"):
        return str(networks[0]["name"])
    return "default"
