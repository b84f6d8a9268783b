"""The VM controller's run-strategy rules, as KubeVirt's syncRunStrategy has them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kubevirtsim.vm import (
    RESTART_MESSAGE,
    backoff_left,
    decide,
    next_requests,
    printable_status,
    restart_required,
    revision,
    revision_name,
    run_strategy,
    start_backoff_seconds,
    start_failure,
    vm_status,
    vmi_from_vm,
)

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def vm(
    strategy: str | None = None,
    running: bool | None = None,
    requests: list[dict[str, Any]] | None = None,
    status_strategy: str | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "template": {
            "metadata": {"labels": {"app": "a"}, "annotations": {"x": "y"}},
            "spec": {"domain": {"devices": {}}},
        }
    }
    if strategy is not None:
        spec["runStrategy"] = strategy
    if running is not None:
        spec["running"] = running
    status: dict[str, Any] = {}
    if requests is not None:
        status["stateChangeRequests"] = requests
    if status_strategy is not None:
        status["runStrategy"] = status_strategy
    meta: dict[str, Any] = {"name": "v", "namespace": "ns", "uid": "vm-uid", "generation": 3}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": spec, "status": status}


def vmi(
    phase: str = "Running", uid: str = "u1", deleting: bool = False, ready: bool = True
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "v",
        "uid": uid,
        "annotations": {"kubevirt.io/vm-generation": "2"},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"metadata": meta, "status": {"phase": phase, "conditions": conditions}}


def test_run_strategy_from_running() -> None:
    assert run_strategy(vm(running=True)) == "Always"
    assert run_strategy(vm(running=False)) == "Halted"
    assert run_strategy(vm()) == "Halted"
    assert run_strategy(vm("Manual", running=True)) == "Manual"


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_always_restarts_after_any_end(phase: str) -> None:
    assert decide(vm("Always"), None).create
    assert not decide(vm("Always"), vmi()).delete
    assert decide(vm("Always"), vmi(phase)).delete
    assert not decide(vm("Always"), vmi(phase, deleting=True)).delete


def test_rerun_on_failure() -> None:
    fresh = vm("RerunOnFailure")
    assert decide(fresh, None).create  # coming from no strategy: start
    settled = vm("RerunOnFailure", status_strategy="RerunOnFailure")
    assert not decide(settled, None).create  # stopped after a success: stays down
    failed = decide(settled, vmi("Failed"))
    assert failed.delete and failed.add_start_request
    succeeded = decide(settled, vmi("Succeeded"))
    assert succeeded.delete and not succeeded.add_start_request
    again = vm("RerunOnFailure", requests=[{"action": "Start"}], status_strategy="RerunOnFailure")
    assert decide(again, None).create


def test_manual_and_halted_and_once() -> None:
    assert not decide(vm("Manual"), None).create
    assert decide(vm("Manual", requests=[{"action": "Start"}]), None).create
    assert not decide(vm("Manual"), vmi("Failed")).delete
    stop = vm("Manual", requests=[{"action": "Stop", "uid": "u1"}])
    assert decide(stop, vmi(uid="u1")).delete
    assert not decide(stop, vmi(uid="other")).delete
    assert decide(vm("Halted"), vmi()).delete
    assert not decide(vm("Halted"), None).create
    assert decide(vm("Halted", requests=[{"action": "Start"}]), None).switch_to_always
    assert decide(vm("Once"), None).create
    assert not decide(vm("Once"), vmi("Failed")).delete


def test_unknown_strategy_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"spec\.runStrategy"):
        decide(vm("Sometimes"), None)


def test_state_change_requests_are_trimmed_when_done() -> None:
    start = vm("Manual", requests=[{"action": "Start"}])
    assert next_requests(start, None) == [{"action": "Start"}]
    assert next_requests(start, vmi()) == []
    assert next_requests(start, vmi(deleting=True)) == [{"action": "Start"}]
    restart = vm("Manual", requests=[{"action": "Stop", "uid": "u1"}, {"action": "Start"}])
    assert next_requests(restart, vmi(uid="u1")) == restart["status"]["stateChangeRequests"]
    assert next_requests(restart, None) == [{"action": "Start"}]
    assert next_requests(vm("RerunOnFailure"), vmi("Failed"), add_start=True) == [
        {"action": "Start"}
    ]


def test_printable_status() -> None:
    assert printable_status(vm("Always"), vmi()) == "Running"
    assert printable_status(vm("Always"), vmi("Scheduling")) == "Starting"
    assert printable_status(vm("Always"), None) == "Starting"
    assert printable_status(vm("Halted"), None) == "Stopped"
    assert printable_status(vm("Halted"), vmi()) == "Stopping"
    assert printable_status(vm("Always"), vmi(deleting=True)) == "Stopping"
    assert printable_status(vm("Manual"), vmi("Failed")) == "Stopped"
    assert printable_status(vm("Always", deleting=True), vmi()) == "Terminating"


def test_vm_status_from_vmi() -> None:
    status = vm_status(vm("Always"), vmi(), [], NOW)
    assert status["created"] is True and status["ready"] is True
    assert status["printableStatus"] == "Running" and status["runStrategy"] == "Always"
    assert status["observedGeneration"] == 2 and status["desiredGeneration"] == 3
    ready = status["conditions"][0]
    assert ready["type"] == "Ready" and ready["status"] == "True"
    none = vm_status(vm("Halted"), None, [], NOW)
    assert none["created"] is False and none["ready"] is False
    assert none["conditions"][0]["reason"] == "VMINotExists"
    failed = vm_status(vm("Always"), None, [], NOW, failure=("FailedCreate", "boom"))
    assert any(c["type"] == "Failure" and c["message"] == "boom" for c in failed["conditions"])


def test_vmi_from_vm() -> None:
    made = vmi_from_vm(vm("Always"))
    meta = made["metadata"]
    assert meta["name"] == "v" and meta["namespace"] == "ns"
    assert meta["labels"] == {"app": "a"}
    assert meta["annotations"] == {"x": "y", "kubevirt.io/vm-generation": "3"}
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "name": "v",
            "uid": "vm-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["finalizers"] == ["kubevirt.io/virtualMachineControllerFinalize"]
    assert made["spec"]["networks"] == [{"name": "default", "pod": {}}]
    assert made["spec"]["domain"]["devices"]["interfaces"][0]["name"] == "default"


def test_start_failures_back_off_and_clear_once_a_vmi_ran() -> None:
    never_ran = vmi("Failed", uid="f1")
    never_ran["status"]["phaseTransitionTimestamps"] = [{"phase": "Pending"}]
    first = start_failure(vm("Always"), never_ran, NOW)
    assert first == {
        "consecutiveFailCount": 1,
        "lastFailedVMIUID": "f1",
        "retryAfterTimestamp": "2026-01-01T00:00:10Z",
    }
    looping = vm("Always")
    looping["status"]["startFailure"] = first
    assert start_failure(looping, never_ran, NOW) == first  # counted once per VMI
    second_vmi = vmi("Failed", uid="f2")
    second_vmi["status"]["phaseTransitionTimestamps"] = []
    second = start_failure(looping, second_vmi, NOW)
    assert second is not None and second["consecutiveFailCount"] == 2
    assert backoff_left(looping, NOW) == 10.0
    assert printable_status(looping, None) == "CrashLoopBackOff"
    assert printable_status(looping, never_ran) == "CrashLoopBackOff"
    assert start_failure(looping, vmi("Running"), NOW) is None
    assert start_failure(vm("Manual", requests=[]), never_ran, NOW) is None
    assert start_backoff_seconds(1) == 10 and start_backoff_seconds(10) == 300


def test_restart_required_as_kubevirt_sets_it() -> None:
    """KubeVirt's syncRestartRequired: while a VMI runs, a template spec that differs from
    the spec it was started from (its ControllerRevision) sets RestartRequired; the same
    spec again clears it; without a VMI it stays as it was until the next start."""
    started = vm("Always")
    kept = revision(started)
    assert kept["metadata"]["name"] == revision_name(started) == "revision-start-vm-vm-uid-3"
    assert kept["metadata"]["ownerReferences"][0]["uid"] == "vm-uid"
    started_spec = kept["data"]["spec"]
    same = vm_status(started, vmi(), [], NOW, started_spec=started_spec)
    assert not [c for c in same["conditions"] if c["type"] == "RestartRequired"]
    changed = vm("Always")
    changed["spec"]["template"]["spec"]["volumes"] = [{"name": "ci", "cloudInitNoCloud": {
        "secretRef": {"name": "s"}}}]
    changed["spec"]["runStrategy"] = "Always"
    status = vm_status(changed, vmi(), [], NOW, started_spec=started_spec)
    [cond] = [c for c in status["conditions"] if c["type"] == "RestartRequired"]
    assert cond["status"] == "True" and cond["message"] == RESTART_MESSAGE
    # the transition time stays while it holds
    later = NOW + dt.timedelta(seconds=30)
    assert restart_required({**changed, "status": status}, started_spec, later) == cond
    # only the template's spec counts: its labels or the run strategy need no restart
    relabelled = vm("Manual")
    relabelled["spec"]["template"]["metadata"]["labels"] = {"app": "b"}
    assert restart_required(relabelled, started_spec, NOW) is None
    # stopped: kept until the next start, whose revision is the spec itself
    stopped = vm_status({**changed, "status": status}, None, [], NOW)
    assert [c["type"] for c in stopped["conditions"]].count("RestartRequired") == 1
    restarted = vm_status({**changed, "status": stopped}, vmi(uid="u2"), [], NOW,
                          started_spec=revision(changed)["data"]["spec"])
    assert not [c for c in restarted["conditions"] if c["type"] == "RestartRequired"]
