"""The VirtualMachine controller: a VMI per VM, started and stopped by runStrategy.

As KubeVirt's VM controller does: the VMI is made from `spec.template` (same name, the
template's labels and annotations, a controller ownerReference, the VM controller's
finalizer), deleted for Halted or on a Stop request, and started again after it
finished as the strategy says (Always: after Succeeded or Failed; RerunOnFailure: after
Failed only; Manual: on a Start request; Once: only when there is none). VM status goes
through the status subresource. At each start the VM's spec is kept in a
ControllerRevision (`revision-start-vm-<vm uid>-<generation>`, named in the VMI's
status.virtualMachineRevisionName, older ones deleted); while the VMI runs, a template
spec that differs from it sets the VM condition RestartRequired, as KubeVirt's
syncRestartRequired does (nothing here is live-updatable: no LiveUpdate rollout strategy,
no hotplug), and a new start clears it. A deleted VM stops its VMI first and lets go of its own
finalizer once the VMI is gone (with propagationPolicy Orphan, at once); everything else
about deletion is kube-controller-manager's garbage collector's, as on a real cluster: it
deletes a VMI whose VM is gone (the VMI's controller ownerReference), holds a VM deleted
in the foreground until its VMI is gone, and orphans the VMI of a VM deleted with Orphan.

The decisions are pure functions (`decide`, `next_requests`, `vm_status`), unit-tested.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from kubevirtsim import status as st
from kubevirtsim.api import REVISIONS, VMIS, VMS, Api, ApiError, Obj, split_key
from kubevirtsim.events import Recorder
from kubevirtsim.informer import Informer

log = logging.getLogger(__name__)

START, STOP = "Start", "Stop"
RESTART_REQUIRED = "RestartRequired"
RESTART_MESSAGE = "a non-live-updatable field was changed in the template spec"  # KubeVirt's


# --- pure rules ----------------------------------------------------------------------------
def run_strategy(vm: Obj) -> str:
    """spec.runStrategy, else the deprecated spec.running (true: Always, false: Halted)."""
    spec = vm.get("spec", {})
    strategy = spec.get("runStrategy")
    if strategy:
        return str(strategy)
    return "Always" if spec.get("running") is True else "Halted"


def _requests(vm: Obj) -> list[Obj]:
    return list(vm.get("status", {}).get("stateChangeRequests") or [])


def has_start_request(vm: Obj) -> bool:
    requests = _requests(vm)
    return bool(requests) and requests[0].get("action") == START


def has_stop_request_for(vm: Obj, vmi: Obj | None) -> bool:
    requests = _requests(vm)
    if not requests or vmi is None or requests[0].get("action") != STOP:
        return False
    return bool(requests[0].get("uid")) and requests[0]["uid"] == vmi["metadata"].get("uid")


@dataclass(frozen=True)
class Decision:
    """What the VM controller does about one VM's VMI this round."""

    create: bool = False
    delete: bool = False
    add_start_request: bool = False  # RerunOnFailure: start again once the failed VMI is gone
    switch_to_always: bool = False  # Halted with a Start request: the VM is set to run
    reason: str = ""


def decide(vm: Obj, vmi: Obj | None) -> Decision:
    """KubeVirt's syncRunStrategy, as a pure function of the VM and its VMI (or None)."""
    strategy = run_strategy(vm)
    exists = vmi is not None
    stop_requested = has_stop_request_for(vm, vmi)
    deleting = st.deleting(vmi)
    phase = st.phase(vmi)
    if strategy == "Always":
        if exists:
            if (stop_requested or st.is_final(vmi)) and not deleting:
                return Decision(
                    delete=True,
                    reason=f"VMI {phase or 'unprocessed'}, runStrategy Always: restarting",
                )
            return Decision()
        return Decision(create=True, reason="runStrategy Always")
    if strategy == "RerunOnFailure":
        if exists:
            if not deleting and (stop_requested or phase in st.FINAL_PHASES):
                return Decision(
                    delete=True,
                    add_start_request=phase == st.FAILED,
                    reason=f"VMI {phase or 'stop requested'}, runStrategy RerunOnFailure",
                )
            return Decision()
        previous = vm.get("status", {}).get("runStrategy")
        if has_start_request(vm) or previous != strategy:
            return Decision(create=True, reason="runStrategy RerunOnFailure")
        return Decision()
    if strategy == "Manual":
        if exists:
            if stop_requested and not deleting:
                return Decision(delete=True, reason="stop request")
            return Decision()
        if has_start_request(vm):
            return Decision(create=True, reason="start request")
        return Decision()
    if strategy == "Halted":
        if exists:
            if not deleting:
                return Decision(delete=True, reason="runStrategy Halted")
            return Decision()
        if has_start_request(vm):
            return Decision(switch_to_always=True, reason="start request on a Halted VM")
        return Decision()
    if strategy == "Once":
        if not exists:
            return Decision(create=True, reason="runStrategy Once")
        return Decision()
    raise ValueError(
        f"spec.runStrategy: unknown run strategy {strategy!r}; one of "
        f"{', '.join(st.RUN_STRATEGIES)}"
    )


def next_requests(vm: Obj, vmi: Obj | None, add_start: bool = False) -> list[Obj]:
    """status.stateChangeRequests after this round: the first one is dropped once done."""
    requests = _requests(vm)
    if requests and not (add_start and requests[0].get("action") == START):
        first = requests[0]
        done = False
        if first.get("action") == STOP:
            done = vmi is None or not first.get("uid") or first["uid"] != vmi["metadata"].get("uid")
        elif first.get("action") == START:
            done = vmi is not None and not st.deleting(vmi)
        if done:
            requests = requests[1:]
    if add_start and not any(r.get("action") == START for r in requests):
        requests.append({"action": START})
    return requests


def set_to_start(vm: Obj, vmi: Obj | None) -> bool:
    strategy = run_strategy(vm)
    if strategy == "Always":
        return True
    if strategy == "Manual":
        return (not has_stop_request_for(vm, vmi)) if vmi is not None else has_start_request(vm)
    if strategy == "RerunOnFailure":
        return st.phase(vmi) != st.SUCCEEDED if vmi is not None else True
    if strategy == "Once":
        return vmi is None
    return False


MAX_START_BACKOFF_SECONDS = 300


def start_backoff_seconds(failures: int) -> int:
    """Seconds before another start after `failures` VMIs in a row failed before Running
    (10 s, doubling, at most 5 minutes)."""
    return int(min(10 * 2 ** max(failures - 1, 0), MAX_START_BACKOFF_SECONDS))


def ever_running(vmi: Obj | None) -> bool:
    stamps = (vmi or {}).get("status", {}).get("phaseTransitionTimestamps") or []
    return st.phase(vmi) == st.RUNNING or any(p.get("phase") == st.RUNNING for p in stamps)


def start_failure(vm: Obj, vmi: Obj | None, when: dt.datetime) -> Obj | None:
    """status.startFailure after this round, as KubeVirt tracks VMIs that fail to start:
    counted once per VMI that ended without ever running, cleared by one that ran."""
    current = vm.get("status", {}).get("startFailure")
    try:
        strategy = run_strategy(vm)
    except ValueError:
        return None
    if ever_running(vmi) or strategy not in ("Always", "RerunOnFailure", "Once"):
        return None
    if vmi is None or not st.is_final(vmi):
        return dict(current) if current else None
    uid = vmi["metadata"].get("uid")
    if current and current.get("lastFailedVMIUID") == uid:
        return dict(current)
    count = int((current or {}).get("consecutiveFailCount") or 0) + 1
    retry = when + dt.timedelta(seconds=start_backoff_seconds(count))
    return {
        "consecutiveFailCount": count,
        "lastFailedVMIUID": uid,
        "retryAfterTimestamp": st.rfc3339(retry),
    }


def backoff_left(vm: Obj, when: dt.datetime) -> float:
    """Seconds until a VM whose VMIs keep failing to start may be started again."""
    failure = vm.get("status", {}).get("startFailure") or {}
    retry = failure.get("retryAfterTimestamp")
    if not retry:
        return 0.0
    return max((st.parse_time(str(retry)) - when).total_seconds(), 0.0)


def printable_status(vm: Obj, vmi: Obj | None) -> str:
    """KubeVirt's printableStatus, first match wins (no storage or migration here)."""
    if st.deleting(vm):
        return "Terminating"
    if (
        vmi is not None
        and not st.is_final(vmi)
        and (st.deleting(vmi) or has_stop_request_for(vm, vmi) or run_strategy(vm) == "Halted")
    ):
        return "Stopping"
    if vmi is not None and st.phase(vmi) == st.RUNNING:
        return "Running"
    if vmi is not None:
        cond = st.condition(vmi, "PodScheduled")
        if cond and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            return "ErrorUnschedulable"
        if st.phase(vmi) in ("", st.PENDING, st.SCHEDULING, st.SCHEDULED):
            return "Starting"
    failures = int(
        (vm.get("status", {}).get("startFailure") or {}).get("consecutiveFailCount") or 0
    )
    if failures > 0 and run_strategy(vm) in ("Always", "RerunOnFailure", "Once"):
        return "CrashLoopBackOff"
    if vmi is not None:  # final
        return "Stopped"
    try:
        starting = decide(vm, None).create
    except ValueError:
        starting = False
    return "Starting" if starting else "Stopped"


def revision_name(vm: Obj) -> str:
    """The ControllerRevision that keeps the VM's spec as its VMI was started from it."""
    meta = vm["metadata"]
    return f"revision-start-vm-{meta['uid']}-{meta.get('generation') or 1}"


def revision(vm: Obj) -> Obj:
    """That ControllerRevision (owned by the VM, so collected with it)."""
    meta = vm["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": revision_name(vm),
            "namespace": meta.get("namespace") or "default",
            "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                                 "name": meta["name"], "uid": meta["uid"],
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "data": {"spec": copy.deepcopy(vm.get("spec") or {})},
        "revision": int(meta.get("generation") or 1),
    }


def restart_required(vm: Obj, started_spec: Obj | None, when: dt.datetime) -> Obj | None:
    """The RestartRequired condition the VM should carry while its VMI runs, as KubeVirt's
    syncRestartRequired decides it: True when the template spec differs from the spec the
    VMI was started from (`started_spec`, the VM spec of its ControllerRevision); None when
    they are the same. Without a started spec (no VMI) the condition stays as it is."""
    now = (vm.get("spec") or {}).get("template", {}).get("spec")
    then = (started_spec or {}).get("template", {}).get("spec")
    if started_spec is None or now == then:
        return None
    previous = st.condition(vm, RESTART_REQUIRED)
    if previous is not None and previous.get("status") == "True":
        return dict(previous)
    return {"type": RESTART_REQUIRED, "status": "True", "lastTransitionTime": st.rfc3339(when),
            "lastProbeTime": None, "message": RESTART_MESSAGE}


def vm_status(
    vm: Obj,
    vmi: Obj | None,
    requests: list[Obj],
    when: dt.datetime,
    failure: tuple[str, str] | None = None,
    finished: Obj | None = None,
    started_spec: Obj | None = None,
) -> Obj:
    """The VM's new status (a copy): created, ready, conditions, generations, requests.

    `finished` is the VMI seen final this round, which may be gone from the API by now:
    it still counts for startFailure. `started_spec`: the VM spec the running VMI was
    started from (its ControllerRevision), for RestartRequired.
    """
    status = copy.deepcopy(vm.get("status") or {})
    failed_starts = start_failure(vm, vmi if vmi is not None else finished, when)
    if failed_starts:
        status["startFailure"] = failed_starts
    else:
        status.pop("startFailure", None)
    status["created"] = vmi is not None
    status["ready"] = vmi is not None and st.condition_true(vmi, "Ready")
    status["runStrategy"] = run_strategy(vm)
    generation = int(vm.get("metadata", {}).get("generation") or 1)
    status["desiredGeneration"] = generation
    if vmi is not None:
        annotated = (vmi["metadata"].get("annotations") or {}).get(st.VM_GENERATION_ANNOTATION)
        text = str(annotated or "")
        status["observedGeneration"] = int(text) if text.isdigit() else generation
    elif "observedGeneration" not in status:
        status["observedGeneration"] = generation
    if requests:
        status["stateChangeRequests"] = requests
    else:
        status.pop("stateChangeRequests", None)
    conditions: list[Obj] = [
        c
        for c in status.get("conditions") or []
        if c.get("type") in ("Failure", "Initialized", "RestartRequired")
    ]
    ready = st.condition(vmi, "Ready") if vmi is not None else None
    stamp = st.rfc3339(when)
    previous_ready = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None
    )
    if vmi is None:
        ready = {
            "type": "Ready",
            "status": "False",
            "reason": "VMINotExists",
            "message": "VMI does not exist",
        }
    elif ready is None:
        ready = {
            "type": "Ready",
            "status": "False",
            "reason": "VMIConditionMissing",
            "message": "VMI is missing the Ready condition",
        }
    ready = {k: v for k, v in ready.items() if v not in (None, "")}
    ready["type"] = "Ready"
    if "lastTransitionTime" not in ready:
        same = previous_ready is not None and previous_ready.get("status") == ready["status"]
        ready["lastTransitionTime"] = (
            (previous_ready or {}).get("lastTransitionTime") if same else stamp
        )
    ready["lastProbeTime"] = ready.get("lastProbeTime") or None
    conditions.insert(0, ready)
    if vmi is not None:
        for cond in vmi.get("status", {}).get("conditions") or []:
            if cond.get("type") not in ("Ready", "Failure", "Initialized", "RestartRequired"):
                conditions.append(dict(cond))
    conditions = [c for c in conditions if c.get("type") != "Failure"]
    if failure is not None:
        conditions.append(
            {
                "type": "Failure",
                "status": "True",
                "reason": failure[0],
                "message": failure[1],
                "lastTransitionTime": stamp,
                "lastProbeTime": None,
            }
        )
    if vmi is not None and started_spec is not None:
        conditions = [c for c in conditions if c.get("type") != RESTART_REQUIRED]
        required = restart_required(vm, started_spec, when)
        if required is not None:
            conditions.append(required)
    status["conditions"] = conditions
    status["printableStatus"] = printable_status(dict(vm, status=status), vmi)
    return status


def vmi_from_vm(vm: Obj) -> Obj:
    """The VMI that KubeVirt's VM controller creates from a VM's template."""
    meta = vm["metadata"]
    template = copy.deepcopy(vm.get("spec", {}).get("template") or {})
    tmeta = template.get("metadata") or {}
    spec = template.get("spec") or {}
    annotations = dict(tmeta.get("annotations") or {})
    annotations[st.VM_GENERATION_ANNOTATION] = str(meta.get("generation") or 1)
    vmi: Obj = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace") or "default",
            "labels": dict(tmeta.get("labels") or {}),
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "kubevirt.io/v1",
                    "kind": "VirtualMachine",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "finalizers": [st.VM_CONTROLLER_FINALIZER],
        },
        "spec": spec,
    }
    devices = spec.setdefault("domain", {}).setdefault("devices", {})
    if (
        not devices.get("interfaces")
        and not spec.get("networks")
        and devices.get("autoattachPodInterface") is not False
    ):
        # KubeVirt's default network: the pod network through the bridge binding
        spec["networks"] = [{"name": "default", "pod": {}}]
        devices["interfaces"] = [{"name": "default", "bridge": {}}]
    return vmi


def admitted(vmi: Obj, when: dt.datetime) -> Obj:
    """A new VMI as KubeVirt's mutating webhook (virt-api) completes it on create: the
    foreground finalizer and phase Pending, so that no VMI is ever seen without a status
    (clients such as fence_kubevirt read status.phase of a VMI the moment it exists)."""
    out = copy.deepcopy(vmi)
    finalizers = out["metadata"].setdefault("finalizers", [])
    if st.VMI_FINALIZER not in finalizers:
        finalizers.append(st.VMI_FINALIZER)
    if not st.phase(out):
        st.set_phase(out, st.PENDING, when)
    return out


# --- the controller ------------------------------------------------------------------------
class VMController:
    """Reconciles one VM key at a time (the VMI of a VM has the VM's key)."""

    def __init__(
        self,
        api: Api,
        vms: Informer,
        vmis: Informer,
        events: Recorder,
        requeue: Callable[[str, float], None],
    ) -> None:
        self.api = api
        self.vms = vms
        self.vmis = vmis
        self.events = events
        self.requeue = requeue
        self._revisions: dict[str, Obj] = {}  # ns/name -> the VM spec it keeps (immutable)

    def reconcile(self, key: str) -> None:
        vm = self.vms.get(key)
        vmi = self.vmis.get(key)
        if vm is None:
            self._release_orphan(key, vmi)
            return
        owned = vmi if st.owned_by_vm(vmi, vm) else None
        if vmi is not None and owned is None:
            log.info(
                "VM %s: VMI %s is not its own (owner %s); leaving it alone",
                key,
                key,
                st.controller_owner(vmi),
            )
            if st.controller_owner(vmi) is None:  # orphaned from an earlier VM of this name
                self._release_orphan(key, vmi)
        if owned is not None and (st.deleting(owned) or st.is_final(owned)):
            self._release_vmi(key, owned)
        if st.deleting(vm):
            self._terminate(key, vm, owned)
            return
        if st.VM_CONTROLLER_FINALIZER not in (vm["metadata"].get("finalizers") or []):
            finalizers = list(vm["metadata"].get("finalizers") or [])
            vm = self._patch_finalizers(vm, [*finalizers, st.VM_CONTROLLER_FINALIZER]) or vm
        failure: tuple[str, str] | None = None
        decision = Decision()
        if vmi is None or owned is not None:  # else another object holds the VM's name
            try:
                decision = decide(vm, owned)
            except ValueError as exc:
                failure = ("FailedCreate", str(exc))
        if decision.delete and owned is not None:
            self._delete_vmi(vm, owned, decision.reason)
        wait = (
            backoff_left(vm, st.now())
            if decision.create and decision.reason not in ("start request",)
            else 0.0
        )
        if wait > 0:
            log.info("VM %s: its VMIs keep failing to start; next start in %.0fs", key, wait)
            self.requeue(key, wait)
        elif decision.create:
            failure = self._create_vmi(vm) or failure
        if decision.switch_to_always:
            self._switch_to_always(vm)
        self._update_status(key, owned, decision.add_start_request, failure)

    # actions
    def _create_vmi(self, vm: Obj) -> tuple[str, str] | None:
        vmi = admitted(vmi_from_vm(vm), st.now())
        ns = vmi["metadata"]["namespace"]
        try:
            self._keep_revision(vm)
        except ApiError as exc:
            log.warning("VM %s/%s: its start revision not kept: %s", ns,
                        vm["metadata"]["name"], exc)
            self.requeue(f"{ns}/{vm['metadata']['name']}", 1.0)
            return None
        vmi["status"]["virtualMachineRevisionName"] = revision_name(vm)
        try:
            created = self.api.create(VMIS, ns, vmi)
        except ApiError as exc:
            if exc.status == 409:  # the old VMI is still on its way out
                self.requeue(f"{ns}/{vm['metadata']['name']}", 0.5)
                return None
            message = f"Error creating virtual machine instance: {exc}"
            self.events.warning(vm, st.FAILED_CREATE, message)
            return ("FailedCreate", message)
        self.vmis.observe(created)
        self.events.normal(
            vm,
            st.SUCCESSFUL_CREATE,
            "Started the virtual machine by creating "
            f"the new virtual machine instance {created['metadata']['name']}",
        )
        return None

    def _keep_revision(self, vm: Obj) -> None:
        """The VM's spec at this start, as a ControllerRevision; older ones deleted, the
        start's own RestartRequired gone (KubeVirt's startVMI and createVMRevision)."""
        body = revision(vm)
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        prefix = name.rsplit("-", 1)[0] + "-"
        listed = self.api.list_all(REVISIONS, ns)
        for item in listed.get("items") or []:
            old = item["metadata"]["name"]
            if old.startswith(prefix) and old != name:
                self.api.delete(REVISIONS, ns, old)
                self._revisions.pop(f"{ns}/{old}", None)
        try:
            self._create_revision(ns, body)
        except ApiError as exc:
            if not exc.conflict:  # 409: this generation's, from an earlier start
                raise
            stored = self.api.get(REVISIONS, ns, name)
            if stored is not None and stored.get("data") != body["data"]:
                self.api.delete(REVISIONS, ns, name)
                self._create_revision(ns, body)
        self._revisions[f"{ns}/{name}"] = body["data"]["spec"]

    def _create_revision(self, namespace: str, body: Obj) -> None:
        """Create a ControllerRevision with its `data` as compact JSON, as Go clients send
        it. The apiserver keeps a RawExtension's bytes as given and checks that `data` never
        changes by comparing bytes: with the Python client's spaced JSON, the garbage
        collector's later patch (orphaning it, with the canonical bytes) would be refused
        as a change of `data`, and a VM deleted with propagationPolicy Orphan would hang.
        The body goes as YAML text (JSON is YAML), which the client passes through as is."""
        self.api.request("POST", REVISIONS.collection(namespace),
                         body=json.dumps(body, separators=(",", ":"), sort_keys=True),
                         content_type="application/yaml")

    def _started_spec(self, vmi: Obj | None) -> Obj | None:
        """The VM spec the VMI was started from (None: unknown, or no VMI)."""
        if vmi is None:
            return None
        name = (vmi.get("status") or {}).get("virtualMachineRevisionName")
        if not name:
            return None
        ns = vmi["metadata"].get("namespace") or "default"
        key = f"{ns}/{name}"
        if key not in self._revisions:
            try:
                stored = self.api.get(REVISIONS, ns, str(name))
            except ApiError as exc:
                log.warning("VMI %s: its start revision %s not read: %s", key, name, exc)
                return None
            if stored is None:
                return None
            self._revisions[key] = (stored.get("data") or {}).get("spec") or {}
        return self._revisions[key]

    def _delete_vmi(self, vm: Obj, vmi: Obj, reason: str) -> None:
        meta = vmi["metadata"]
        log.info(
            "VM %s/%s: deleting VMI %s (%s)", meta["namespace"], meta["name"], meta["uid"], reason
        )
        if self.api.delete(VMIS, meta["namespace"], meta["name"], uid=meta["uid"]):
            self.events.normal(
                vm,
                st.SUCCESSFUL_DELETE,
                "Stopped the virtual machine by "
                f"deleting the virtual machine instance {meta['uid']}",
            )

    def _release_vmi(self, key: str, vmi: Obj) -> None:
        """Drop the VM controller's finalizer from a VMI that is final or being deleted."""
        finalizers = vmi["metadata"].get("finalizers") or []
        if st.VM_CONTROLLER_FINALIZER not in finalizers:
            return
        ns, name = split_key(key)
        kept = [f for f in finalizers if f != st.VM_CONTROLLER_FINALIZER]
        try:
            stored = self.api.json_patch(
                VMIS,
                ns,
                name,
                [
                    {"op": "test", "path": "/metadata/uid", "value": vmi["metadata"]["uid"]},
                    {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
                    {"op": "replace", "path": "/metadata/finalizers", "value": kept},
                ],
            )
        except ApiError as exc:
            if exc.not_found:
                return
            if exc.status in (409, 422):  # a test op failed: the VMI changed meanwhile
                raise ApiError(409, "Conflict", str(exc)) from None
            raise
        if stored.get("kind") == "VirtualMachineInstance":
            self.vmis.observe(stored)

    def _terminate(self, key: str, vm: Obj, vmi: Obj | None) -> None:
        """A deleted VM, as KubeVirt's VM controller treats it: its VMI is stopped first,
        then the VM's finalizer goes. A VM deleted with propagationPolicy Orphan (the
        `orphan` finalizer) keeps its VMI running: the finalizer goes at once and the
        garbage collector takes the ownerReference off the VMI."""
        orphaning = "orphan" in (vm["metadata"].get("finalizers") or [])
        if vmi is not None and not orphaning:
            if not st.deleting(vmi):
                self._delete_vmi(vm, vmi, "the VM is being deleted")
            self._update_status(key, vmi, False, None)
            return
        finalizers = vm["metadata"].get("finalizers") or []
        if st.VM_CONTROLLER_FINALIZER in finalizers:
            self._patch_finalizers(
                vm, [f for f in finalizers if f != st.VM_CONTROLLER_FINALIZER]
            )

    def _release_orphan(self, key: str, vmi: Obj | None) -> None:
        """A VMI whose VM is gone keeps this controller's finalizer until it is final or
        being deleted (by the garbage collector, or anyone); then the finalizer goes, so
        that nothing is held up for a VM that no longer exists."""
        if vmi is not None and (st.deleting(vmi) or st.is_final(vmi)):
            self._release_vmi(key, vmi)

    def _patch_finalizers(self, vm: Obj, finalizers: list[str]) -> Obj | None:
        meta = vm["metadata"]
        try:
            stored = self.api.merge_patch(
                VMS,
                meta["namespace"],
                meta["name"],
                {
                    "metadata": {
                        "finalizers": finalizers,
                        "resourceVersion": meta["resourceVersion"],
                    }
                },
            )
        except ApiError as exc:
            if exc.not_found:
                return None
            raise
        self.vms.observe(stored)
        return stored

    def _switch_to_always(self, vm: Obj) -> None:
        meta = vm["metadata"]
        spec: Obj = (
            {"runStrategy": "Always"}
            if vm.get("spec", {}).get("runStrategy")
            else {"running": True}
        )
        stored = self.api.merge_patch(
            VMS,
            meta["namespace"],
            meta["name"],
            {"metadata": {"resourceVersion": meta["resourceVersion"]}, "spec": spec},
        )
        self.vms.observe(stored)

    def _update_status(
        self, key: str, vmi: Obj | None, add_start: bool, failure: tuple[str, str] | None
    ) -> None:
        for _ in range(5):
            vm = self.vms.get(key)
            if vm is None:
                return
            current = self.vmis.get(key)
            if current is not None and not st.owned_by_vm(current, vm):
                current = None
            requests = next_requests(vm, current, add_start)
            finished = vmi if st.is_final(vmi) and st.owned_by_vm(vmi, vm) else None
            started = self._started_spec(current)
            new = vm_status(vm, current, requests, st.now(), failure, finished, started)
            if _same_status(vm.get("status") or {}, new):
                return
            vm["status"] = new
            try:
                stored = self.api.replace(VMS, vm, sub="status")
            except ApiError as exc:
                if exc.conflict:
                    fresh = self.api.get(VMS, *split_key(key))
                    if fresh is not None:
                        self.vms.observe(fresh)
                    continue
                if exc.not_found:
                    return
                raise
            self.vms.observe(stored)
            return


def _same_status(old: Obj, new: Obj) -> bool:
    """Equal but for the probe times that change on every look."""

    def strip(status: Obj) -> Obj:
        out = copy.deepcopy(status)
        for cond in out.get("conditions") or []:
            cond.pop("lastProbeTime", None)
        return out

    return strip(old) == strip(new)
