"""Template mode: a member VirtualMachine's template gets the injection the webhook gives a
VMI, and loses exactly that again when the VM leaves the cluster. Pure functions.

For clusters without admission webhooks (spec.injection.mode Template) the operator patches
`spec.template` of each member VM instead of each VMI at its creation. The change itself is
the webhook's, computed by the same function (guestha.kubevirt.injection.json_patch over the
template as if it were a VMI): the cloud-init volume's user-data source becomes `secretRef`
to the per-member Secret (a NoCloud volume and disk are added when there is none), the
watchdog and `autoattachVSOCK` as the cluster asks, and the template's annotation
INJECTED_ANNOTATION naming the Secret. KubeVirt copies the template's annotations to the
VMI, so the webhook finds an instance of a template-injected VM injected already and
leaves it alone (no double injection).

What was added is recorded on the VM itself (RECORD_ANNOTATION, JSON: `Record`), so it can
be taken back without any other memory: the guest's own user-data source (`userData`,
`userDataBase64` or `secretRef`, exactly as it was), or the names of the volume and disk
added, whether the watchdog, `autoattachVSOCK` and the containers that held them were
added. `restore` takes back only what is still guestha's (a user who changed the volume's
source or the watchdog since keeps the change) and nothing of the user's.

Every computation starts from the user's template, `restore(vm)` (the template as it was
before guestha, or as the user changed it since): `inject` patches that, and the
result is compared with what the VM holds. So a second call changes nothing, a cluster that
switches the watchdog or the transport gets the template re-injected, and a template the
user reverted (a GitOps tool syncing it back) is injected again from the user's version.
`json_patch` writes a result with a resourceVersion test, so a concurrent change of the VM
fails the write instead of being overwritten.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from guestha.kubevirt import injection

RECORD_ANNOTATION = "guestha.io/template-injection"  # on the VM's metadata: a Record (JSON)
# the containers `inject` may have to create, as Record.created names them
TEMPLATE_METADATA, ANNOTATIONS, DEVICES, VOLUMES, DISKS = (
    "metadata", "annotations", "devices", "volumes", "disks")


@dataclass(frozen=True)
class Record:
    """What Template mode added to one VM's template (RECORD_ANNOTATION)."""

    cluster: str  # the InGuestCluster that injected it
    secret: str  # the per-member Secret the cloud-init volume names
    inputs: str  # what the Secret was rendered from (a digest; the caller's business)
    volume: str  # the cloud-init volume that names the Secret
    datasource: str  # cloudInitNoCloud | cloudInitConfigDrive
    # the volume's user-data source before ({"userData": ...}, {"secretRef": ...}, ...);
    # None: the template had no cloud-init, guestha added the volume and the disk `disk`
    source: dict[str, Any] | None = None
    disk: str | None = None
    watchdog: bool = False  # guestha added spec.domain.devices.watchdog
    vsock: bool = False  # guestha added spec.domain.devices.autoattachVSOCK
    created: tuple[str, ...] = ()  # containers guestha created (TEMPLATE_METADATA, ...)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "created": list(self.created)}, sort_keys=True,
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Record:
        """Parse RECORD_ANNOTATION; anything else raises ValueError naming it."""
        where = f"metadata.annotations[{RECORD_ANNOTATION!r}]"
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            source = raw.get("source")
            if source is not None and not isinstance(source, dict):
                raise ValueError("source: not an object")
            return cls(str(raw["cluster"]), str(raw["secret"]), str(raw["inputs"]),
                       str(raw["volume"]), str(raw["datasource"]), source,
                       None if raw.get("disk") is None else str(raw["disk"]),
                       bool(raw.get("watchdog")), bool(raw.get("vsock")),
                       tuple(str(c) for c in raw.get("created") or ()))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: not guestha's record of a template injection "
                             f"({e})") from None


def record_of(vm: Mapping[str, Any]) -> Record | None:
    """The VM's record (None: not injected by Template mode). A broken record raises
    ValueError naming the annotation."""
    text = ((vm.get("metadata") or {}).get("annotations") or {}).get(RECORD_ANNOTATION)
    return None if text is None else Record.from_json(str(text))


def _template(vm: Mapping[str, Any]) -> dict[str, Any]:
    template = (vm.get("spec") or {}).get("template")
    if not isinstance(template, Mapping):
        raise injection.InjectionError("spec.template", "missing")
    return copy.deepcopy(dict(template))


def as_vmi(template: Mapping[str, Any]) -> dict[str, Any]:
    """A template in the shape of the VMI that KubeVirt makes of it (metadata and spec)."""
    return {"metadata": dict(template.get("metadata") or {}),
            "spec": template.get("spec") if template.get("spec") is not None else {}}


def template_injected(vm: Mapping[str, Any], secret: str) -> bool:
    """The VM's template carries the injection of `secret` (the webhook's test, on it)."""
    try:
        return injection.already_injected(as_vmi(_template(vm)),
                                          injection.Plan(secret, False, False))
    except injection.InjectionError:
        return False


def _drop_if_empty(container: dict[str, Any], key: str, created: bool) -> None:
    if created and key in container and container[key] in ({}, []):
        del container[key]


def restore(vm: Mapping[str, Any]) -> dict[str, Any]:
    """The VM's template without what Template mode added (a copy; the template itself
    when there is no record). What the user changed since is kept: only the parts that
    are still guestha's go."""
    template = _template(vm)
    record = record_of(vm)
    if record is None:
        return template
    created = set(record.created)
    spec = template.get("spec")
    if isinstance(spec, dict):
        volumes = spec.get("volumes")
        devices = (spec.get("domain") or {}).get("devices")
        ours = {"name": record.secret}
        if isinstance(volumes, list):
            for index, volume in enumerate(volumes):
                if not (isinstance(volume, dict) and volume.get("name") == record.volume):
                    continue
                source = volume.get(record.datasource)
                if not (isinstance(source, dict) and source.get("secretRef") == ours):
                    break  # the user changed it: theirs now
                if record.source is None:
                    del volumes[index]
                    if isinstance(devices, dict) and isinstance(devices.get("disks"), list):
                        devices["disks"] = [d for d in devices["disks"] if not (
                            isinstance(d, dict) and d.get("name") == record.disk)]
                else:
                    kept = {k: v for k, v in source.items() if k not in injection.USER_SOURCES}
                    volume[record.datasource] = {**kept, **copy.deepcopy(record.source)}
                break
            _drop_if_empty(spec, VOLUMES, VOLUMES in created)
        if isinstance(devices, dict):
            _drop_if_empty(devices, DISKS, DISKS in created)
            if record.watchdog and devices.get("watchdog") == injection.WATCHDOG_DEVICE:
                del devices["watchdog"]
            if record.vsock and devices.get("autoattachVSOCK") is True:
                del devices["autoattachVSOCK"]
            domain = spec.get("domain")
            if isinstance(domain, dict):
                _drop_if_empty(domain, DEVICES, DEVICES in created)
    metadata = template.get("metadata")
    if isinstance(metadata, dict):
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict) and \
                annotations.get(injection.INJECTED_ANNOTATION) == record.secret:
            del annotations[injection.INJECTED_ANNOTATION]
        _drop_if_empty(metadata, ANNOTATIONS, ANNOTATIONS in created)
        _drop_if_empty(template, TEMPLATE_METADATA, TEMPLATE_METADATA in created)
    return template


@dataclass(frozen=True)
class Injected:
    """A template with the injection, the record of it, and where the user's user-data
    is in the template it was made from (None: it has none)."""

    template: dict[str, Any]
    record: Record
    user_cloud_init: injection.CloudInit | None


def inject(vm: Mapping[str, Any], plan: injection.Plan, cluster: str,
           inputs: str) -> Injected:
    """The VM's template injected for `plan` by `cluster`, made from the user's template
    (`restore(vm)`). Raises InjectionError naming the field that prevents it (in the
    template: `spec.template.spec...`)."""
    base = restore(vm)
    vmi = as_vmi(base)
    try:
        found = injection.cloud_init(vmi)
        ops = injection.json_patch(vmi, plan)
    except injection.InjectionError as e:
        raise injection.InjectionError(f"spec.template.{e.field}", e.message) from None
    if not ops:  # injected, but not by a record this VM holds: no way to know the user's
        raise injection.InjectionError(
            "spec.template", f"carries guestha's injection ({injection.INJECTED_ANNOTATION}) "
            f"without the VM's record of it ({RECORD_ANNOTATION}); take the injection out "
            f"of the template or put the record back")
    after = injection.apply(vmi, ops)
    template = copy.deepcopy(base)
    template["metadata"] = after["metadata"]
    template["spec"] = after["spec"]
    created: list[str] = []
    if "metadata" not in base:
        created.append(TEMPLATE_METADATA)
    source: dict[str, Any] | None = None
    volume = datasource = ""
    disk: str | None = None
    watchdog = vsock = False
    for op in ops:
        path, value = op["path"], op["value"]
        if path == "/metadata/annotations":
            created.append(ANNOTATIONS)
        elif path == "/spec/domain/devices":
            created.append(DEVICES)
        elif path in ("/spec/volumes", "/spec/volumes/-"):
            if path == "/spec/volumes":
                created.append(VOLUMES)
            added = value[0] if isinstance(value, list) else value
            volume, datasource = added["name"], "cloudInitNoCloud"
        elif path in ("/spec/domain/devices/disks", "/spec/domain/devices/disks/-"):
            if path == "/spec/domain/devices/disks":
                created.append(DISKS)
            disk = (value[0] if isinstance(value, list) else value)["name"]
        elif path == "/spec/domain/devices/watchdog":
            watchdog = True
        elif path == "/spec/domain/devices/autoattachVSOCK":
            vsock = True
    if found is not None:
        original = vmi["spec"]["volumes"][found.index]
        volume, datasource = str(original["name"]), found.datasource
        source = {k: copy.deepcopy(v) for k, v in original[found.datasource].items()
                  if k in injection.USER_SOURCES and v not in (None, "")}
    record = Record(cluster, plan.secret, inputs, volume, datasource, source, disk,
                    watchdog, vsock, tuple(created))
    return Injected(template, record, found)


def _annotation_ops(vm: Mapping[str, Any], value: str | None) -> list[dict[str, Any]]:
    annotations = (vm.get("metadata") or {}).get("annotations")
    path = "/metadata/annotations/" + RECORD_ANNOTATION.replace("~", "~0").replace("/", "~1")
    if value is None:
        if RECORD_ANNOTATION not in (annotations or {}):
            return []
        # the record alone: the annotations go with it (an empty map is no annotation)
        return [{"op": "remove", "path": "/metadata/annotations" if len(annotations or {}) == 1
                 else path}]
    if isinstance(annotations, Mapping):
        return [{"op": "add", "path": path, "value": value}]
    return [{"op": "add", "path": "/metadata/annotations", "value": {RECORD_ANNOTATION: value}}]


def json_patch(vm: Mapping[str, Any], template: Mapping[str, Any],
               record: Record | None) -> list[dict[str, Any]]:
    """The RFC 6902 patch that gives the VM `template` and `record` (None: no record), with
    a test of the VM's resourceVersion first; [] when the VM has both already."""
    current = (vm.get("spec") or {}).get("template")
    old = ((vm.get("metadata") or {}).get("annotations") or {}).get(RECORD_ANNOTATION)
    new = None if record is None else record.to_json()
    ops: list[dict[str, Any]] = []
    if current != template:
        ops.append({"op": "replace", "path": "/spec/template", "value": dict(template)})
    if old != new:
        ops.extend(_annotation_ops(vm, new))
    if not ops:
        return []
    version = (vm.get("metadata") or {}).get("resourceVersion")
    if version:
        ops.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": version})
    return ops


def undo_patch(vm: Mapping[str, Any], cluster: str | None = None) -> list[dict[str, Any]]:
    """The patch that takes back what Template mode added to the VM ([] when there is no
    record, or it is another cluster's than `cluster` when given)."""
    record = record_of(vm)
    if record is None or (cluster is not None and record.cluster != cluster):
        return []
    return json_patch(vm, restore(vm), None)
