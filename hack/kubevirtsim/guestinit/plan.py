"""The contract between the host and a simulated guest: the guest folder's files and the
cloud-init plan, each defined once.

The host (``kubevirtsim.cloudinit`` builds the plan, ``guesthost`` boots the guest) and the
guest's PID 1 (``pid1``, ``cloudinit_runner``) run in different processes with different
imports: the host may use PyYAML, the guest only the standard library. What crosses between
them is written here: the names of the files in a guest's folder, the plan's step types and
their JSON form, and the cloud-init state the guest reports back. ``Plan.from_json`` checks
what it reads and names the field at fault, so a host and a guest that disagree fail at
boot with a clear error, not halfway through a cloud-init run.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kubevirtsim.guestinit.client import RUN_DIR

# Files in a guest's folder on the host (GuestHost.root), and who writes them.
PLAN_FILE = "plan.json"  # host: the cloud-init plan (Plan.to_json)
STATUS_FILE = "cloud-init-status.json"  # guest: cloud-init's state (encode_status)
QGA_SOCKET = "qga.sock"  # guest listens, host connects: the qemu-guest-agent-like socket
CONSOLE_LOG = "console.log"  # guest: PID 1's output
BUNDLE_FILE = "guestinit.pyz"  # host: the zipapp PID 1 runs from (bundle.py)
UPPER_DIR = "upper"  # guest: overlay upper dirs (its writes), one per overlay_name()
WORK_DIR = "work"  # guest: overlay work dirs

# PID 1's copy of the zipapp inside the guest: what the shims run (and the file name the
# bundle's bytecode carries, for tracebacks).
GUEST_BUNDLE = f"{RUN_DIR}/{BUNDLE_FILE}"

# The cloud-init release this plan imitates (Debian 12 ships 22.4.2).
CLOUD_INIT_VERSION = "22.4.2-kubevirtsim"
STAGES = ("init-local", "init", "modules-config", "modules-final")
# Datasources and the seed folder each writes in the guest.
SEED_DIRS = {
    "NoCloud": "/var/lib/cloud/seed/nocloud",
    "ConfigDrive": "/var/lib/cloud/seed/config_drive",
}
INSTANCE_LINK = "/var/lib/cloud/instance"  # -> instance_dir() of the current instance
STATES = ("running", "done", "error")  # cloud-init's states as the guest reports them


class PlanError(ValueError):
    """A plan or status that does not follow this contract; the message names the field."""


def instance_dir(instance_id: str) -> str:
    return f"/var/lib/cloud/instances/{instance_id}"


def overlay_name(path: str) -> str:
    """The name of a guest folder's upper/work directory ("/var/lib" -> "var_lib")."""
    return path.strip("/").replace("/", "_") or "root"


def encode_status(state: str, when: float) -> bytes:
    if state not in STATES:
        raise PlanError(f"status: {state!r} is not one of {', '.join(STATES)}")
    return json.dumps({"status": state, "time": when}).encode()


def decode_status(data: bytes | str) -> str:
    """The state in a STATUS_FILE's content."""
    try:
        state = json.loads(data).get("status")
    except (ValueError, AttributeError):
        raise PlanError(f"{STATUS_FILE}: not a JSON object") from None
    if state not in STATES:
        raise PlanError(f"{STATUS_FILE}.status: {state!r} is not one of {', '.join(STATES)}")
    return str(state)


# --------------------------------------------------------------------------- reading JSON


class _Object:
    """A JSON object being read; every error names the field (`where` is its path)."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise PlanError(f"{where or 'plan'}: must be an object, not {type(value).__name__}")
        self.value: dict[str, Any] = value
        self.where = where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(
        self, key: str, kind: type | tuple[type, ...], default: Any = dataclasses.MISSING
    ) -> Any:
        if key not in self.value:
            if default is dataclasses.MISSING:
                raise PlanError(f"{self.at(key)}: missing")
            return default
        value = self.value[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise PlanError(f"{self.at(key)}: must be {names}, not {type(value).__name__}")
        return value

    def text(self, key: str, default: Any = dataclasses.MISSING) -> str:
        return str(self.get(key, str, default))

    def strings(self, key: str, default: Any = dataclasses.MISSING) -> tuple[str, ...]:
        items = self.get(key, list, default)
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise PlanError(f"{self.at(key)}[{index}]: must be str")
        return tuple(items)

    def mapping(self, key: str, default: Any = dataclasses.MISSING) -> dict[str, str]:
        items = self.get(key, dict, default)
        for name, item in items.items():
            if not isinstance(item, str):
                raise PlanError(f"{self.at(key)}.{name}: must be str")
        return dict(items)

    def data(self, key: str, default: Any = dataclasses.MISSING) -> bytes:
        text = self.get(key, str, default)
        if isinstance(text, bytes):
            return text
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error:
            raise PlanError(f"{self.at(key)}: not base64") from None

    def objects(self, key: str) -> list[_Object]:
        return [_Object(v, f"{self.at(key)}[{i}]") for i, v in enumerate(self.get(key, list))]


# Reader and writer of each field type a step may have, by its annotation.
_FIELD_TYPES: dict[str, tuple[Callable[[_Object, str, Any], Any], Callable[[Any], Any]]] = {
    "str": (_Object.text, str),
    "int": (lambda o, k, d: int(o.get(k, int, d)), int),
    "bool": (lambda o, k, d: bool(o.get(k, bool, d)), bool),
    "bytes": (_Object.data, lambda v: base64.b64encode(v).decode("ascii")),
    "tuple[str, ...]": (_Object.strings, list),
    "dict[str, str]": (_Object.mapping, dict),
}


# --------------------------------------------------------------------------- steps


class _Step:
    """A step's JSON form: {"op": OP, field: value, ...}, bytes as base64."""

    op: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _FIELD_TYPES[str(f.type)][1](getattr(self, f.name))
        return out


@dataclass(frozen=True)
class Write(_Step):
    """Write (or append) a file, its folders made 0755."""

    op: ClassVar[str] = "write"
    path: str
    data: bytes
    mode: int = 0o644
    append: bool = False


@dataclass(frozen=True)
class Symlink(_Step):
    """Make `path` a symlink to `target`, replacing what is there."""

    op: ClassVar[str] = "symlink"
    path: str
    target: str


@dataclass(frozen=True)
class Log(_Step):
    """A warning in cloud-init.log (the module goes on)."""

    op: ClassVar[str] = "log"
    message: str


@dataclass(frozen=True)
class Fail(_Step):
    """The module fails with this message (cloud-init's status becomes "error")."""

    op: ClassVar[str] = "fail"
    message: str


@dataclass(frozen=True)
class Run(_Step):
    """Run a command to its end, output to cloud-init-output.log; non-zero fails the module."""

    op: ClassVar[str] = "run"
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunParts(_Step):
    """run-parts over these files (the executable ones), in this order; the module fails
    naming those that failed."""

    op: ClassVar[str] = "runparts"
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Hostname(_Step):
    """Set the hostname, /etc/hostname and /etc/hosts' 127.0.1.1 line."""

    op: ClassVar[str] = "hostname"
    hostname: str
    fqdn: str


@dataclass(frozen=True)
class Timezone(_Step):
    """/etc/timezone and /etc/localtime; fails if the zone is not in /usr/share/zoneinfo."""

    op: ClassVar[str] = "timezone"
    zone: str


@dataclass(frozen=True)
class FinalMessage(_Step):
    """cloud-init's "finished" line and the instance's boot-finished file."""

    op: ClassVar[str] = "final_message"


Step = Write | Symlink | Log | Fail | Run | RunParts | Hostname | Timezone | FinalMessage
STEP_TYPES: dict[str, type[Step]] = {
    t.op: t for t in (Write, Symlink, Log, Fail, Run, RunParts, Hostname, Timezone, FinalMessage)
}


def step_from_json(obj: _Object) -> Step:
    op = obj.text("op")
    kind = STEP_TYPES.get(op)
    if kind is None:
        raise PlanError(f"{obj.at('op')}: unknown step {op!r} ({', '.join(STEP_TYPES)})")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(kind):
        default: Any = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        values[f.name] = _FIELD_TYPES[str(f.type)][0](obj, f.name, default)
    return kind(**values)


# --------------------------------------------------------------------------- plan


@dataclass
class Module:
    """One cloud-init module of a stage and the plain steps it takes."""

    name: str
    steps: list[Step] = field(default_factory=list)


@dataclass
class Plan:
    """What the guest's cloud-init carries out, stage by stage, in cloud-init's order."""

    instance_id: str
    hostname: str
    datasource: str  # a key of SEED_DIRS
    stages: dict[str, list[Module]]  # STAGES, in order
    notes: list[str]  # warnings printed on the console (refused or unsupported parts)
    version: str = CLOUD_INIT_VERSION

    def module_names(self, stage: str) -> list[str]:
        return [m.name for m in self.stages[stage]]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "instance_id": self.instance_id,
            "hostname": self.hostname,
            "datasource": self.datasource,
            "notes": list(self.notes),
            "stages": [
                {
                    "name": stage,
                    "modules": [
                        {"name": m.name, "steps": [s.to_json() for s in m.steps]} for m in mods
                    ],
                }
                for stage, mods in self.stages.items()
            ],
        }

    @classmethod
    def from_json(cls, value: Any) -> Plan:
        """The plan in `value` (Plan.to_json's form); PlanError naming the field if not."""
        obj = _Object(value, "")
        datasource = obj.text("datasource")
        if datasource not in SEED_DIRS:
            raise PlanError(f"datasource: {datasource!r} is not one of {', '.join(SEED_DIRS)}")
        stages: dict[str, list[Module]] = {}
        for stage in obj.objects("stages"):
            name = stage.text("name")
            if name not in STAGES or name in stages:
                raise PlanError(f"{stage.at('name')}: {name!r} is not a stage or comes twice")
            stages[name] = [
                Module(m.text("name"), [step_from_json(s) for s in m.objects("steps")])
                for m in stage.objects("modules")
            ]
        if list(stages) != [s for s in STAGES if s in stages]:
            raise PlanError(f"stages: {list(stages)} are not in cloud-init's order")
        return cls(
            instance_id=obj.text("instance_id"),
            hostname=obj.text("hostname"),
            datasource=datasource,
            stages=stages,
            notes=list(obj.strings("notes", ())),
            version=obj.text("version"),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json())

    @classmethod
    def loads(cls, text: str | bytes) -> Plan:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise PlanError(f"{PLAN_FILE}: not JSON: {exc}") from None
        return cls.from_json(value)
