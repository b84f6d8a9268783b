"""The VMI mutation that injects guestha into a member's guest, as pure functions.

`cloud_init(vmi)` finds the guest's own user-data as virt-launcher does: the first volume
with `cloudInitNoCloud` or `cloudInitConfigDrive`, whose user-data is exactly one of
`userData`, `userDataBase64` or `secretRef` (a Secret with key `userdata` or `userData`,
read by the caller: `secret_user_data`). `json_patch(vmi, plan)` is the RFC 6902 patch the
webhook returns:

- the cloud-init volume keeps its place, name, datasource and network data (`networkData`,
  `networkDataBase64`, `networkDataSecretRef`); only its user-data source becomes
  `secretRef` to the per-member Secret (never inline: KubeVirt refuses inline user-data
  over 2048 bytes, and the agent alone is larger);
- a VMI without one gets a `cloudInitNoCloud` volume and its disk;
- `spec.domain.devices.watchdog` an i6300esb with action reset when the cluster's
  fencing.watchdog is set (a watchdog the VMI has already is kept when it is an i6300esb
  that resets or powers off the guest: both end a hung guest);
- `spec.domain.devices.autoattachVSOCK: true` when the channel's transport is VSOCK;
- the annotation INJECTED_ANNOTATION naming the Secret, so a second call on an injected
  VMI (webhook reinvocation) changes nothing.

What cannot be injected raises InjectionError naming the field; the webhook refuses the
VMI with that message (fail closed: a member never starts unprotected).
"""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DATASOURCES = ("cloudInitNoCloud", "cloudInitConfigDrive")
USER_SOURCES = ("userData", "userDataBase64", "secretRef")
SECRET_KEYS = ("userdata", "userData")  # the keys virt-launcher reads, in its order
INJECTED_ANNOTATION = "guestha.io/userdata-secret"
VOLUME = "guestha-cloudinit"  # the volume and disk added to a VMI without cloud-init
WATCHDOG = "guestha-watchdog"
WATCHDOG_ACTIONS = ("reset", "poweroff")  # actions that end a hung guest (unset: reset)
WATCHDOG_DEVICE = {"name": WATCHDOG, "i6300esb": {"action": "reset"}}  # the one guestha adds


class InjectionError(ValueError):
    """The VMI cannot be injected; `field` names the VMI field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class CloudInit:
    """The VMI's cloud-init volume and where its user-data is."""

    index: int  # in spec.volumes
    datasource: str  # cloudInitNoCloud | cloudInitConfigDrive
    inline: bytes | None  # userData / userDataBase64, decoded
    secret: str | None  # secretRef's Secret name (its content: secret_user_data)

    @property
    def field(self) -> str:
        return f"spec.volumes[{self.index}].{self.datasource}"

    @property
    def secret_field(self) -> str:
        return f"{self.field}.secretRef"


@dataclass(frozen=True)
class Plan:
    """What the cluster asks of a member's VMI."""

    secret: str  # the per-member user-data Secret
    watchdog: bool  # fencing.watchdog
    vsock: bool  # channel.transport == VSOCK


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _spec(vmi: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = vmi.get("spec")
    if not isinstance(spec, Mapping):
        raise InjectionError("spec", "missing")
    return spec


def _volumes(spec: Mapping[str, Any]) -> list[Any]:
    volumes = spec.get("volumes") or []
    if not isinstance(volumes, list):
        raise InjectionError("spec.volumes", "must be a list")
    return volumes


def cloud_init(vmi: Mapping[str, Any]) -> CloudInit | None:
    """The VMI's cloud-init volume (the first, as KubeVirt takes it), or None."""
    for index, volume in enumerate(_volumes(_spec(vmi))):
        if not isinstance(volume, Mapping):
            raise InjectionError(f"spec.volumes[{index}]", "must be an object")
        for datasource in DATASOURCES:
            if datasource not in volume:
                continue
            source = volume[datasource]
            field = f"spec.volumes[{index}].{datasource}"
            if not isinstance(source, Mapping):
                raise InjectionError(field, "must be an object")
            given = [k for k in USER_SOURCES if source.get(k) not in (None, "")]
            if len(given) > 1:
                raise InjectionError(field, f"has {' and '.join(given)}; KubeVirt takes "
                                            f"exactly one user-data source")
            inline: bytes | None = None
            secret: str | None = None
            if "userData" in given:
                if not isinstance(source["userData"], str):
                    raise InjectionError(f"{field}.userData", "must be a string")
                inline = source["userData"].encode()
            elif "userDataBase64" in given:
                inline = _b64(f"{field}.userDataBase64", source["userDataBase64"])
            elif "secretRef" in given:
                ref = source["secretRef"]
                if not isinstance(ref, Mapping) or not ref.get("name"):
                    raise InjectionError(f"{field}.secretRef", "must name a Secret ({name: ...})")
                secret = str(ref["name"])
            return CloudInit(index, datasource, inline, secret)
    return None


def _b64(field: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise InjectionError(field, "must be a base64 string")
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise InjectionError(field, f"is not valid base64 ({e})") from None


def secret_user_data(found: CloudInit, secret: Mapping[str, Any] | None) -> bytes:
    """The user-data in the Secret `found.secret` (None: it does not exist), as virt-launcher
    reads it: key `userdata`, else `userData`."""
    field = found.secret_field
    if secret is None:
        raise InjectionError(field, f"Secret {found.secret!r} not found in the VMI's namespace")
    data = secret.get("data") or {}
    for key in SECRET_KEYS:
        if key in data:
            return _b64(f"{field} (Secret {found.secret!r} data.{key})", data[key])
    raise InjectionError(field, f"Secret {found.secret!r} has no key "
                                f"{' or '.join(SECRET_KEYS)}")


def already_injected(vmi: Mapping[str, Any], plan: Plan) -> bool:
    """The VMI carries this plan's Secret already (the webhook was called on it before)."""
    annotations = (vmi.get("metadata") or {}).get("annotations") or {}
    found = cloud_init(vmi)
    return (annotations.get(INJECTED_ANNOTATION) == plan.secret and found is not None
            and found.secret == plan.secret)


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _devices(spec: Mapping[str, Any], ops: list[dict[str, Any]]) -> Mapping[str, Any]:
    domain = spec.get("domain")
    if not isinstance(domain, Mapping):
        raise InjectionError("spec.domain", "missing")
    devices = domain.get("devices")
    if devices is None:
        ops.append({"op": "add", "path": "/spec/domain/devices", "value": {}})
        return {}
    if not isinstance(devices, Mapping):
        raise InjectionError("spec.domain.devices", "must be an object")
    return devices


def _cloud_init_ops(spec: Mapping[str, Any], devices: Mapping[str, Any], plan: Plan,
                    found: CloudInit | None, ops: list[dict[str, Any]]) -> None:
    ref = {"name": plan.secret}
    if found is not None:
        if found.secret == plan.secret:
            raise InjectionError(found.secret_field, f"names guestha's own Secret "
                                 f"{plan.secret!r}; the VM must carry the guest's own "
                                 f"cloud-init, guestha adds its part to it")
        source = dict(_volumes(spec)[found.index][found.datasource])
        for key in USER_SOURCES:
            source.pop(key, None)
        source["secretRef"] = ref
        ops.append({"op": "replace", "path": f"/spec/volumes/{found.index}/{found.datasource}",
                    "value": source})
        return
    volumes = _volumes(spec)
    disks = devices.get("disks") or []
    if not isinstance(disks, list):
        raise InjectionError("spec.domain.devices.disks", "must be a list")
    taken = {str(v.get("name")) for v in volumes if isinstance(v, Mapping)}
    taken |= {str(d.get("name")) for d in disks if isinstance(d, Mapping)}
    name = _unique(VOLUME, taken)
    volume = {"name": name, "cloudInitNoCloud": {"secretRef": ref}}
    disk = {"name": name, "disk": {"bus": "virtio"}}
    if "volumes" in spec and isinstance(spec.get("volumes"), list):
        ops.append({"op": "add", "path": "/spec/volumes/-", "value": volume})
    else:
        ops.append({"op": "add", "path": "/spec/volumes", "value": [volume]})
    if isinstance(devices.get("disks"), list):
        ops.append({"op": "add", "path": "/spec/domain/devices/disks/-", "value": disk})
    else:
        ops.append({"op": "add", "path": "/spec/domain/devices/disks", "value": [disk]})


def _watchdog_ops(devices: Mapping[str, Any], ops: list[dict[str, Any]]) -> None:
    field = "spec.domain.devices.watchdog"
    existing = devices.get("watchdog")
    if existing is None:
        ops.append({"op": "add", "path": "/spec/domain/devices/watchdog",
                    "value": copy.deepcopy(WATCHDOG_DEVICE)})
        return
    if not isinstance(existing, Mapping):
        raise InjectionError(field, "must be an object")
    model = existing.get("i6300esb")
    if not isinstance(model, Mapping):
        others = ", ".join(sorted(k for k in existing if k != "name")) or "no model"
        raise InjectionError(field, f"is {others}; the cluster's fencing.watchdog needs an "
                                    f"i6300esb watchdog (the VM may have only one)")
    action = model.get("action") or "reset"
    if action not in WATCHDOG_ACTIONS:
        raise InjectionError(f"{field}.i6300esb.action",
                             f"is {action!r}; the cluster's fencing.watchdog needs a watchdog "
                             f"that ends a hung guest ({' or '.join(WATCHDOG_ACTIONS)})")


def _vsock_ops(devices: Mapping[str, Any], ops: list[dict[str, Any]]) -> None:
    value = devices.get("autoattachVSOCK")
    if value is False:
        raise InjectionError("spec.domain.devices.autoattachVSOCK",
                             "is false, but the cluster's channel transport is VSOCK")
    if value is not True:
        ops.append({"op": "add", "path": "/spec/domain/devices/autoattachVSOCK",
                    "value": True})


def json_patch(vmi: Mapping[str, Any], plan: Plan) -> list[dict[str, Any]]:
    """The RFC 6902 patch that injects `plan` into the VMI ([] when it is injected already).
    Raises InjectionError naming the field that prevents it."""
    if already_injected(vmi, plan):
        return []
    spec = _spec(vmi)
    ops: list[dict[str, Any]] = []
    devices = _devices(spec, ops)
    _cloud_init_ops(spec, devices, plan, cloud_init(vmi), ops)
    if plan.watchdog:
        _watchdog_ops(devices, ops)
    if plan.vsock:
        _vsock_ops(devices, ops)
    metadata = vmi.get("metadata") or {}
    if isinstance(metadata.get("annotations"), Mapping):
        ops.append({"op": "add", "path": f"/metadata/annotations/{_escape(INJECTED_ANNOTATION)}",
                    "value": plan.secret})
    else:
        ops.append({"op": "add", "path": "/metadata/annotations",
                    "value": {INJECTED_ANNOTATION: plan.secret}})
    return ops


def apply(vmi: Mapping[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """The VMI with `ops` applied (a copy): the add and replace operations json_patch makes,
    on object members and list ends; for callers that need the result, not the patch."""
    result: dict[str, Any] = copy.deepcopy(dict(vmi))
    for op in ops:
        if op["op"] not in ("add", "replace"):
            raise ValueError(f"apply: unsupported operation {op['op']!r}")
        keys = [k.replace("~1", "/").replace("~0", "~") for k in op["path"].split("/")[1:]]
        target: Any = result
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        last = keys[-1]
        value = copy.deepcopy(op["value"])
        if isinstance(target, list):
            if last == "-":
                target.append(value)
            elif op["op"] == "add":
                target.insert(int(last), value)
            else:
                target[int(last)] = value
        else:
            target[last] = value
    return result
