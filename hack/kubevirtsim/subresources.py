"""virt-api's `subresources.kubevirt.io/v1` handlers: what each endpoint does to the cluster.

KubeVirt's start/stop/restart/migrate endpoints do not power anything themselves: they
patch the VM's spec (runStrategy) or status (stateChangeRequests) with a JSON patch guarded
by `test` operations, or create a VirtualMachineInstanceMigration, and answer 202; the
VM and VMI controllers do the rest. These handlers do the same against the apiserver, with
KubeVirt's checks, status codes and messages (Kubernetes `Status` bodies), so the
simulator's controllers - and their node rules: nothing is confirmed on a node that stopped
answering - carry out what was asked. guestosinfo and vsock reach the guest as virt-handler
would, through the guest host the simulator booted.

Deviations, on purpose: virt-api answers a failed guestosinfo validation and a vsock port
nothing listens on with a 500 (or, for vsock, an upgraded websocket that closes at once);
here they are 409 and 400 with the same messages, so that callers get a clear 4xx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from kubevirtsim import status as st
from kubevirtsim.api import KUBEVIRT, VMIS, VMS, Api, ApiError, Obj, Resource
from kubevirtsim.guests import Guests
from kubevirtsim.nodes import Nodes, NodeState

MIGRATIONS = Resource(
    KUBEVIRT,
    "virtualmachineinstancemigrations",
    True,
    "VirtualMachineInstanceMigration",
    "kubevirt.io/v1",
)

UNMARSHAL = "Can not unmarshal Request body to struct, error: {}"
VM_NOT_RUNNING = "VM is not running"
VMI_NOT_RUNNING = "VMI is not running"
NO_AGENT = "VMI does not have guest agent connected"
JSONPATCH_TEST_FAILED = "jsonpatch test operation does not apply"
UNDERWAY = "unable to complete request: stop/start already underway"

VM_RESOURCE = ("kubevirt.io", "virtualmachine")
VMI_RESOURCE = ("kubevirt.io", "virtualmachineinstance")


class StatusError(Exception):
    """A failure answered with a Kubernetes Status body (as apimachinery's StatusError)."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def body(self) -> Obj:
        status: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status


def not_found(resource: tuple[str, str], name: str) -> StatusError:
    group, kind = resource
    return StatusError(
        404,
        "NotFound",
        f'{kind}.{group} "{name}" not found',
        {"name": name, "group": group, "kind": kind},
    )


def conflict(resource: tuple[str, str], name: str, why: str) -> StatusError:
    group, kind = resource
    return StatusError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind}.{group} "{name}": {why}',
        {"name": name, "group": group, "kind": kind},
    )


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def internal(message: str) -> StatusError:
    return StatusError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        {"causes": [{"message": message}]},
    )


def forbidden(message: str) -> StatusError:
    return StatusError(403, "Forbidden", message)


# --- request bodies ------------------------------------------------------------------------
@dataclass
class Options:
    """The fields of KubeVirt's Start/Stop/Restart/MigrateOptions this simulator uses."""

    dry_run: bool = False
    paused: bool = False
    grace_period: int | None = None  # StopOptions.gracePeriod
    grace_period_seconds: int | None = None  # RestartOptions.gracePeriodSeconds
    added_node_selector: dict[str, str] = field(default_factory=dict)


def _int_field(body: Obj, name: str, kind: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(
            UNMARSHAL.format(
                f"json: cannot unmarshal {type(value).__name__} into Go struct field "
                f"{kind}.{name} of type int64"
            )
        )
    return value


def parse_options(raw: bytes, kind: str) -> Options:
    """A request body (JSON or YAML, may be empty) as KubeVirt's `kind` options."""
    if not raw.strip():
        return Options()
    try:
        body = json.loads(raw)
    except ValueError:
        try:
            body = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise bad_request(UNMARSHAL.format(f"error converting YAML to JSON: {exc}")) from None
    if body is None:
        return Options()
    if not isinstance(body, dict):
        raise bad_request(
            UNMARSHAL.format(
                f"json: cannot unmarshal {type(body).__name__} into Go value of type v1.{kind}"
            )
        )
    dry_run = body.get("dryRun") or []
    if not isinstance(dry_run, list) or not all(isinstance(v, str) for v in dry_run):
        raise bad_request(
            UNMARSHAL.format(
                f"json: cannot unmarshal {type(dry_run).__name__} into Go struct field "
                f"{kind}.dryRun of type []string"
            )
        )
    bad = [v for v in dry_run if v != "All"]
    if bad:
        raise bad_request(f'dryRun: unsupported value {bad[0]!r}: the only value is "All"')
    paused = body.get("paused", False)
    if not isinstance(paused, bool):
        raise bad_request(
            UNMARSHAL.format(
                f"json: cannot unmarshal {type(paused).__name__} into Go struct field "
                f"{kind}.paused of type bool"
            )
        )
    selector = body.get("addedNodeSelector") or {}
    if not isinstance(selector, dict):
        raise bad_request(
            UNMARSHAL.format(
                f"json: cannot unmarshal {type(selector).__name__} into Go struct field "
                f"{kind}.addedNodeSelector of type map[string]string"
            )
        )
    return Options(
        dry_run=bool(dry_run),
        paused=paused,
        grace_period=_int_field(body, "gracePeriod", kind),
        grace_period_seconds=_int_field(body, "gracePeriodSeconds", kind),
        added_node_selector={str(k): str(v) for k, v in selector.items()},
    )


# --- pure patch builders -------------------------------------------------------------------
def change_request_patch(vm: Obj, changes: list[Obj]) -> list[Obj]:
    """The JSON patch that records state change requests on a VM's status.

    A VM without any status gets one; otherwise the current requests are tested and the
    new ones added, or replace them when the change is a single Stop. Anything else
    while requests are pending is refused (a start or restart already under way).
    """
    status = vm.get("status") or {}
    ops: list[Obj]
    if not status:
        ops = [{"op": "add", "path": "/status", "value": {"stateChangeRequests": changes}}]
    else:
        current = status.get("stateChangeRequests") or []
        ops = [{"op": "test", "path": "/status/stateChangeRequests", "value": current or None}]
        if not current:
            ops.append({"op": "add", "path": "/status/stateChangeRequests", "value": changes})
        elif len(changes) == 1 and changes[0].get("action") == "Stop":
            ops.append({"op": "replace", "path": "/status/stateChangeRequests", "value": changes})
        else:
            raise internal(UNDERWAY)
    if status.get("startFailure") is not None:
        ops.append({"op": "remove", "path": "/status/startFailure"})
    return ops


def running_patch(vm: Obj, running: bool) -> list[Obj]:
    """runStrategy Always/Halted (or the deprecated spec.running), guarded by a test."""
    spec = vm.get("spec") or {}
    if spec.get("runStrategy") is not None:
        return [
            {"op": "test", "path": "/spec/runStrategy", "value": spec["runStrategy"]},
            {
                "op": "replace",
                "path": "/spec/runStrategy",
                "value": "Always" if running else "Halted",
            },
        ]
    return [
        {"op": "test", "path": "/spec/running", "value": spec.get("running")},
        {"op": "add", "path": "/spec/running", "value": running},
    ]


def run_strategy(vm: Obj) -> str:
    spec = vm.get("spec") or {}
    if spec.get("runStrategy"):
        return str(spec["runStrategy"])
    return "Always" if spec.get("running") is True else "Halted"


def vsock_attached(vmi: Obj) -> bool:
    devices = vmi.get("spec", {}).get("domain", {}).get("devices", {})
    return devices.get("autoattachVSOCK") is True


def parse_port(value: str | None) -> int:
    """The vsock `port` query parameter, as virt-handler parses it (uint32)."""
    text = value or ""
    if not text.isdigit():
        raise bad_request(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    port = int(text)
    if port >= 1 << 32:
        raise bad_request(f'strconv.ParseUint: parsing "{text}": value out of range')
    return port


def parse_tls(value: str | None) -> bool:
    """The vsock `tls` query parameter (Go's ParseBool); virt-api's default is true."""
    if value is None or value == "":
        return True
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise bad_request(f'strconv.ParseBool: parsing "{value}": invalid syntax')


def guest_agent_info(info: Obj, version: str) -> Obj:
    """virt-api's VirtualMachineInstanceGuestAgentInfo from qemu-guest-agent's answers."""
    raw_os = info.get("os") or {}
    names = {
        "name": "name",
        "kernel-release": "kernelRelease",
        "version": "version",
        "pretty-name": "prettyName",
        "version-id": "versionId",
        "kernel-version": "kernelVersion",
        "machine": "machine",
        "id": "id",
    }
    os_info = {ours: str(raw_os[theirs]) for theirs, ours in names.items() if raw_os.get(theirs)}
    zone = info.get("timezone") or {}
    timezone = f"{zone.get('zone', 'UTC')}, {int(zone.get('offset', 0))}"
    return {
        "guestAgentVersion": version,
        "hostname": str(info.get("hostname", "")),
        "os": os_info,
        "timezone": timezone,
        "fsFreezeStatus": "thawed",
    }


# --- the handlers --------------------------------------------------------------------------
class Subresources:
    """The handlers; each returns the response body (or None for 202) or raises StatusError."""

    def __init__(self, api: Api, guests: Guests, nodes: Nodes) -> None:
        self.api = api
        self.guests = guests
        self.nodes = nodes

    # reads, fresh from the apiserver as virt-api does (not from the informers' caches)
    def _vm(self, namespace: str, name: str) -> Obj:
        try:
            vm = self.api.get(VMS, namespace, name)
        except ApiError as exc:
            raise internal(f"unable to retrieve vm [{name}]: {exc}") from None
        if vm is None:
            raise not_found(VM_RESOURCE, name)
        return vm

    def _vmi_or_none(self, namespace: str, name: str) -> Obj | None:
        try:
            return self.api.get(VMIS, namespace, name)
        except ApiError as exc:
            raise internal(f"unable to retrieve vmi [{name}]: {exc}") from None

    def _vmi(self, namespace: str, name: str) -> Obj:
        vmi = self._vmi_or_none(namespace, name)
        if vmi is None:
            raise not_found(VMI_RESOURCE, name)
        return vmi

    def _patch(
        self, res: Resource, namespace: str, name: str, ops: list[Obj], dry_run: bool, sub: str = ""
    ) -> None:
        try:
            self.api.request(
                "PATCH",
                res.item(namespace, name, sub),
                query={"dryRun": "All"} if dry_run else None,
                body=ops,
                content_type="application/json-patch+json",
            )
        except ApiError as exc:
            # the apiserver answers a failed test operation with 422 (or 409 on a race)
            if exc.status in (409, 422) and (
                "test" in exc.body or JSONPATCH_TEST_FAILED in exc.body
            ):
                raise conflict(VM_RESOURCE, name, f"{JSONPATCH_TEST_FAILED}: {exc}") from None
            raise internal(str(exc)) from None

    # PUT virtualmachines/{name}/start
    def start(self, namespace: str, name: str, raw: bytes) -> None:
        vm = self._vm(namespace, name)
        vmi = self._vmi_or_none(namespace, name)
        if vmi is not None and not st.is_final(vmi) and st.phase(vmi) not in ("", "Unknown"):
            raise conflict(VM_RESOURCE, name, "VM is already running")
        opts = parse_options(raw, "StartOptions")
        data = {"paused": "true"} if opts.paused else None
        start: Obj = {"action": "Start", **({"data": data} if data else {})}
        strategy = run_strategy(vm)
        if strategy == "Halted":
            template_spec = (vm.get("spec", {}).get("template") or {}).get("spec") or {}
            if opts.paused and template_spec.get("startStrategy") != "Paused":
                self._patch(
                    VMS, namespace, name, change_request_patch(vm, [start]), opts.dry_run, "status"
                )
            else:
                self._patch(VMS, namespace, name, running_patch(vm, True), opts.dry_run)
        elif strategy in ("RerunOnFailure", "Manual"):
            phase = st.phase(vmi)
            restart = vmi is not None and (
                (strategy == "RerunOnFailure" and phase == st.SUCCEEDED)
                or (strategy == "Manual" and st.is_final(vmi))
            )
            if strategy == "RerunOnFailure" and vmi is not None and phase == st.FAILED:
                raise conflict(
                    VM_RESOURCE,
                    name,
                    "RerunOnFailure does not support starting VM from failed state",
                )
            changes = [start]
            if restart and vmi is not None:
                changes = [{"action": "Stop", "uid": vmi["metadata"]["uid"]}, start]
            self._patch(
                VMS, namespace, name, change_request_patch(vm, changes), opts.dry_run, "status"
            )
        elif strategy in ("Always", "Once"):
            raise conflict(VM_RESOURCE, name, f"{strategy} does not support manual start requests")
        else:
            raise internal(f"unknown runStrategy {strategy!r}")

    # PUT virtualmachines/{name}/stop
    def stop(self, namespace: str, name: str, raw: bytes) -> None:
        opts = parse_options(raw, "StopOptions")
        vm = self._vm(namespace, name)
        strategy = run_strategy(vm)
        vmi = self._vmi_or_none(namespace, name)
        running = vmi is not None and not st.is_final(vmi)
        old_grace: int | None = None
        if vmi is not None and running and opts.grace_period is not None:
            # The apiserver gives custom resources no delete grace of their own: the grace
            # period travels in the VMI's spec, patched before the VMI is deleted.
            current = vmi.get("spec", {}).get("terminationGracePeriodSeconds")
            old_grace = current if isinstance(current, int) else None
            ops = [
                {"op": "test", "path": "/spec/terminationGracePeriodSeconds", "value": current},
                {
                    "op": "add",
                    "path": "/spec/terminationGracePeriodSeconds",
                    "value": opts.grace_period,
                },
            ]
            try:
                self._patch(VMIS, namespace, name, ops, opts.dry_run)
            except StatusError as exc:
                raise internal(exc.message) from None
        if strategy in ("Halted", "RerunOnFailure", "Manual"):
            if vmi is None or not running:
                raise conflict(VM_RESOURCE, name, VM_NOT_RUNNING)
            if strategy == "Halted" and (
                opts.grace_period is None
                or (old_grace is not None and opts.grace_period >= old_grace)
            ):
                raise conflict(
                    VM_RESOURCE,
                    name,
                    "Halted only supports manual stop requests with a shorter graceperiod",
                )
            changes = [{"action": "Stop", "uid": vmi["metadata"]["uid"]}]
            self._patch(
                VMS, namespace, name, change_request_patch(vm, changes), opts.dry_run, "status"
            )
        elif strategy in ("Always", "Once"):
            self._patch(VMS, namespace, name, running_patch(vm, False), opts.dry_run)
        else:
            raise internal(f"unknown runStrategy {strategy!r}")

    # PUT virtualmachines/{name}/restart
    def restart(self, namespace: str, name: str, raw: bytes) -> None:
        opts = parse_options(raw, "RestartOptions")
        grace = opts.grace_period_seconds
        if grace is not None and grace > 0:
            raise bad_request("For force restart, only gracePeriod=0 is supported for now")
        if grace is not None and grace < 0:
            raise bad_request("gracePeriod has to be greater or equal to 0")
        vm = self._vm(namespace, name)
        strategy = run_strategy(vm)
        if strategy in ("Halted", "Once"):
            # (sic: KubeVirt's message spells it this way)
            raise conflict(
                VM_RESOURCE, name, f"RunStategy {strategy} does not support manual restart requests"
            )
        vmi = self._vmi_or_none(namespace, name)
        if vmi is None:
            raise conflict(VM_RESOURCE, name, f"{VM_NOT_RUNNING}: Halted")
        changes = [{"action": "Stop", "uid": vmi["metadata"]["uid"]}, {"action": "Start"}]
        self._patch(VMS, namespace, name, change_request_patch(vm, changes), opts.dry_run, "status")
        if grace == 0 and not opts.dry_run:
            # KubeVirt deletes the virt-launcher pod at once; here: the guest is powered off,
            # by the node - which does nothing while it does not answer.
            node = vmi.get("status", {}).get("nodeName")
            guest = self.guests.get(vmi["metadata"]["uid"])
            if guest is not None and self.nodes.state(node) is NodeState.READY:
                self.guests.power_off(guest, 0)

    # PUT virtualmachines/{name}/migrate
    def migrate(self, namespace: str, name: str, raw: bytes) -> None:
        opts = parse_options(raw, "MigrateOptions")
        self._vm(namespace, name)
        vmi = self._vmi(namespace, name)
        if st.phase(vmi) != st.RUNNING:
            raise conflict(VM_RESOURCE, name, VM_NOT_RUNNING)
        spec: Obj = {"vmiName": name}
        if opts.added_node_selector:
            spec["addedNodeSelector"] = opts.added_node_selector
        migration: Obj = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstanceMigration",
            "metadata": {"generateName": "kubevirt-migrate-vm-", "namespace": namespace},
            "spec": spec,
        }
        try:
            self.api.request(
                "POST",
                MIGRATIONS.collection(namespace),
                query={"dryRun": "All"} if opts.dry_run else None,
                body=migration,
            )
        except ApiError as exc:
            raise internal(str(exc)) from None

    # GET virtualmachineinstances/{name}/guestosinfo
    def guestosinfo(self, namespace: str, name: str) -> Obj:
        vmi = self._vmi(namespace, name)
        if st.phase(vmi) != st.RUNNING:
            raise conflict(VMI_RESOURCE, name, VMI_NOT_RUNNING)
        if st.condition(vmi, "AgentConnected") is None:
            raise conflict(VMI_RESOURCE, name, NO_AGENT)
        guest = self._guest_of(vmi)
        try:
            info = guest.host.guest_info()
            version = guest.host.agent_command("guest-info") or {}
        except Exception as exc:
            raise internal(f"guest agent of VMI {namespace}/{name} did not answer: {exc}") from None
        return guest_agent_info(info, str(version.get("version", "")))

    def _guest_of(self, vmi: Obj) -> Any:
        """The running guest of a VMI, reached through its node (which must answer)."""
        node = vmi.get("status", {}).get("nodeName")
        state = self.nodes.state(node)
        if state is not NodeState.READY:
            raise internal(
                f"unable to reach virt-handler on node {node}: the node is {state.value}"
            )
        guest = self.guests.get(vmi["metadata"]["uid"])
        if guest is None or not guest.alive():
            raise internal(f"no domain for VMI {vmi['metadata']['name']} on node {node}")
        return guest

    # GET virtualmachineinstances/{name}/vsock: validation before the upgrade
    def vsock_target(
        self, namespace: str, name: str, port: str | None, tls: str | None
    ) -> tuple[Any, int, bool, Obj]:
        """(guest, port, tls, vmi) for a vsock stream, or the StatusError that refuses it."""
        vmi = self._vmi(namespace, name)
        if not vsock_attached(vmi):
            raise bad_request("VSOCK is not attached.")
        phase = st.phase(vmi)
        if phase != st.RUNNING:
            raise conflict(
                VMI_RESOURCE,
                name,
                "Unable to connect to VirtualMachineInstance because phase is "
                f"{phase or 'unset'} instead of Running",
            )
        number = parse_port(port)
        use_tls = parse_tls(tls)
        return self._guest_of(vmi), number, use_tls, vmi
