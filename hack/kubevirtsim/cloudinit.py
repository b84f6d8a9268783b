"""cloud-init for simulated guests: user-data parsing, merging and the run plan.

A simulated guest host has no real cloud-init, yet guestha's injection must meet the same
rules a real guest applies to its user-data: the same formats (cloud-config, scripts, MIME
multipart, gzip), the same merging of cloud-config parts (``merge_how``), the same module
order. This module does the parsing on the host side (it may use PyYAML) and produces a
JSON plan of plain steps that the guest init (``guestinit.py``, stdlib only) carries out.
It performs no I/O, so every rule here is unit-testable without root.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email
import email.message
import gzip
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

# The cloud-init release this plan imitates (Debian 12 ships 22.4.2).
CLOUD_INIT_VERSION = "22.4.2-kubevirtsim"

INSTANCE_DIR = "/var/lib/cloud/instance"
SCRIPTS_DIR = f"{INSTANCE_DIR}/scripts"
PER_FREQUENCY_DIR = "/var/lib/cloud/scripts"

GZIP_MAGIC = b"\x1f\x8b"

# First-line prefixes that name a part's type (cloud-init's "starts with" table); longer
# prefixes first so that "#cloud-config-archive" is not taken for "#cloud-config".
_STARTS_WITH: tuple[tuple[str, str], ...] = (
    ("#cloud-config-archive", "text/cloud-config-archive"),
    ("#cloud-config-jsonp", "text/cloud-config-jsonp"),
    ("#cloud-config", "text/cloud-config"),
    ("#cloud-boothook", "text/cloud-boothook"),
    ("#include-once", "text/x-include-once-url"),
    ("#include", "text/x-include-url"),
    ("#upstart-job", "text/upstart-job"),
    ("#part-handler", "text/part-handler"),
    ("## template: jinja", "text/jinja2"),
    ("#!", "text/x-shellscript"),
)

# MIME types whose real type is found from the payload, as cloud-init does.
_GUESS_TYPES = frozenset({"text/plain", "text/x-not-multipart", "application/octet-stream"})

_SCRIPT_FREQUENCIES = {
    "text/x-shellscript-per-boot": "per-boot",
    "text/x-shellscript-per-instance": "per-instance",
    "text/x-shellscript-per-once": "per-once",
}

# Cloud-config keys the simulator knows and deliberately does not carry out.
_SKIPPED_KEYS: dict[str, str] = {
    "users": "users-groups",
    "groups": "users-groups",
    "packages": "package-update-upgrade-install",
    "package_update": "package-update-upgrade-install",
    "package_upgrade": "package-update-upgrade-install",
    "package_reboot_if_required": "package-update-upgrade-install",
    "apt": "apt-configure",
    "yum_repos": "yum-add-repo",
    "snap": "snap",
    "ssh_authorized_keys": "ssh",
    "ssh_keys": "ssh",
    "ssh_pwauth": "set-passwords",
    "chpasswd": "set-passwords",
    "password": "set-passwords",
    "ntp": "ntp",
    "mounts": "mounts",
    "disk_setup": "disk_setup",
    "fs_setup": "disk_setup",
    "growpart": "growpart",
    "resize_rootfs": "resizefs",
    "ca_certs": "ca-certs",
    "ca-certs": "ca-certs",
    "rsyslog": "rsyslog",
    "locale": "locale",
    "keyboard": "keyboard",
    "phone_home": "phone-home",
    "power_state": "power-state-change",
}
_MODULE_STAGE: dict[str, str] = {
    "users-groups": "init",
    "ssh": "init",
    "growpart": "init",
    "resizefs": "init",
    "disk_setup": "init",
    "mounts": "init",
    "ca-certs": "init",
    "rsyslog": "init",
    "locale": "modules-config",
    "keyboard": "modules-config",
    "set-passwords": "modules-config",
    "apt-configure": "modules-config",
    "snap": "modules-config",
    "ntp": "modules-config",
    "yum-add-repo": "modules-config",
    "package-update-upgrade-install": "modules-final",
    "phone-home": "modules-final",
    "power-state-change": "modules-final",
}

STAGES = ("init-local", "init", "modules-config", "modules-final")


class UserDataError(ValueError):
    """User-data that cannot be used at all (not that a part of it is unsupported)."""


# --------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class Part:
    """One piece of user-data after MIME splitting and decompression."""

    content_type: str
    filename: str
    payload: bytes
    merge_type: str = ""  # the part's Merge-Type / X-Merge-Type header


def _type_from_payload(payload: bytes) -> str:
    head = payload.lstrip(b"\xef\xbb\xbf")[:64].decode("utf-8", "replace").lower()
    for prefix, ctype in _STARTS_WITH:
        if head.startswith(prefix):
            return ctype
    return "text/plain"


def _is_mime(payload: bytes) -> bool:
    head = payload[:4096].lower()
    return head.startswith((b"content-type:", b"mime-version:")) and b"multipart/" in head


def split_parts(user_data: bytes) -> list[Part]:
    """Split raw user-data into parts in document order, naming them as cloud-init does.

    Parts without a filename are named ``part-NNN`` by their position (from 001), which
    is also the name a script part gets in the instance's scripts folder.
    """
    raw: list[tuple[str, str | None, bytes, str]] = []
    _collect(user_data, raw, depth=0)
    parts: list[Part] = []
    for index, (ctype, filename, payload, merge_type) in enumerate(raw, start=1):
        parts.append(Part(ctype, filename or f"part-{index:03d}", payload, merge_type))
    return parts


def _collect(data: bytes, out: list[tuple[str, str | None, bytes, str]], depth: int) -> None:
    if depth > 5:
        raise UserDataError("user-data nests compressed or multipart content too deeply")
    if data.startswith(GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise UserDataError(f"gzip-compressed user-data does not decompress: {exc}") from exc
        _collect(data, out, depth + 1)
        return
    if not _is_mime(data):
        out.append((_type_from_payload(data), None, data, ""))
        return
    message = email.message_from_bytes(data)
    for sub in message.walk():
        if sub.is_multipart():
            continue
        payload = sub.get_payload(decode=True)
        if not isinstance(payload, bytes):
            payload = b""
        ctype = sub.get_content_type().lower()
        filename = sub.get_filename()
        merge_type = str(sub.get("Merge-Type") or sub.get("X-Merge-Type") or "")
        if payload.startswith(GZIP_MAGIC) or ctype in ("application/gzip", "application/x-gzip"):
            nested: list[tuple[str, str | None, bytes, str]] = []
            _collect(payload, nested, depth + 1)
            for n_ctype, n_name, n_payload, n_merge in nested:
                out.append((n_ctype, n_name or filename, n_payload, n_merge or merge_type))
            continue
        if ctype in _GUESS_TYPES:
            ctype = _type_from_payload(payload)
        out.append((ctype, filename, payload, merge_type))


# --------------------------------------------------------------------------- merging

Mergers = list[tuple[str, list[str]]]

_MERGER_NAME = re.compile(r"^([a-zA-Z_][A-Za-z0-9_]*)\((.*?)\)$")
DEFAULT_MERGERS: Mergers = [("dict", ["replace"]), ("list", []), ("str", [])]


def parse_mergers(spec: Any) -> Mergers:
    """Read a ``merge_how``/``merge_type`` value: ``"list(append)+dict(no_replace)"`` or a
    list of ``{name, settings}`` mappings."""
    if spec is None or spec == "":
        return []
    if isinstance(spec, str):
        mergers: Mergers = []
        for item in spec.split("+"):
            item = item.strip().lower().replace("-", "_")
            if not item:
                continue
            match = _MERGER_NAME.match(item)
            if match is None:
                raise UserDataError(f"merge_how: {item!r} is not of the form name(options)")
            opts = [o.strip().lower() for o in match.group(2).split(",") if o.strip()]
            mergers.append((match.group(1), opts))
        return _check_mergers(mergers)
    if isinstance(spec, list):
        mergers = []
        for index, item in enumerate(spec):
            if isinstance(item, dict):
                name = str(item.get("name", "")).replace("-", "_").strip().lower()
                settings = item.get("settings") or []
                if not isinstance(settings, list):
                    raise UserDataError(f"merge_how[{index}].settings: must be a list")
                opts = [str(s).strip().lower() for s in settings]
            elif isinstance(item, list) and item:
                name, opts = str(item[0]).lower(), [str(s).lower() for s in item[1:]]
            else:
                raise UserDataError(f"merge_how[{index}]: must be a mapping with name/settings")
            if name:
                mergers.append((name, opts))
        return _check_mergers(mergers)
    raise UserDataError(f"merge_how: must be a string or a list, not {type(spec).__name__}")


def _check_mergers(mergers: Mergers) -> Mergers:
    for name, _ in mergers:
        if name not in ("dict", "list", "str"):
            raise UserDataError(f"merge_how: unknown merger {name!r} (dict, list, str)")
    return mergers


class _Merger:
    """cloud-init's merger semantics: a lookup by the type of the value merged into."""

    def __init__(self, mergers: Mergers) -> None:
        self._opts: dict[str, list[str]] = {}
        for name, opts in mergers:
            self._opts.setdefault(name, opts)  # the first merger for a type wins

    def merge(self, old: Any, new: Any) -> Any:
        if isinstance(old, dict) and "dict" in self._opts:
            return self._dict(old, new, self._opts["dict"])
        if isinstance(old, list | tuple) and "list" in self._opts:
            return self._list(list(old), new, self._opts["list"])
        if isinstance(old, str) and "str" in self._opts:
            return self._str(old, new, self._opts["str"])
        return old  # no merger for this type: the old value stays

    def _dict(self, old: dict[str, Any], new: Any, opts: list[str]) -> dict[str, Any]:
        if not isinstance(new, dict):
            return old
        replace = "replace" in opts  # default is no_replace
        recurse_array = "recurse_array" in opts or "recurse_list" in opts
        recurse_str = "recurse_str" in opts
        allow_delete = "allow_delete" in opts
        merged = dict(old)
        for key, value in new.items():
            if key not in merged:
                merged[key] = value
            elif value is None and allow_delete:
                merged.pop(key)
            elif replace:
                merged[key] = value
            elif (
                (isinstance(value, list | tuple) and recurse_array)
                or (isinstance(value, str) and recurse_str)
                or isinstance(value, dict)
            ):
                merged[key] = self.merge(merged[key], value)
        return merged

    def _list(self, old: list[Any], new: Any, opts: list[str]) -> Any:
        method = "replace"
        for candidate in ("append", "prepend", "replace", "no_replace"):
            if candidate in opts:
                method = candidate
                break
        if method == "replace" and not isinstance(new, list | tuple):
            return new
        new_list = list(new) if isinstance(new, list | tuple) else list(new or [])
        if method == "append":
            return old + new_list
        if method == "prepend":
            return new_list + old
        recurse_array = "recurse_array" in opts or "recurse_list" in opts
        recurse_str = "recurse_str" in opts
        recurse_dict = "recurse_dict" in opts
        merged = list(old)
        for i in range(min(len(merged), len(new_list))):
            value = new_list[i]
            if method == "no_replace":
                continue
            if (
                (isinstance(value, list | tuple) and recurse_array)
                or (isinstance(value, str) and recurse_str)
                or (isinstance(value, dict) and recurse_dict)
            ):
                merged[i] = self.merge(merged[i], value)
            else:
                merged[i] = value
        return merged

    @staticmethod
    def _str(old: str, new: Any, opts: list[str]) -> Any:
        if "append" in opts and isinstance(new, str):
            return old + new
        return new


def merge_config(base: dict[str, Any], part: dict[str, Any], mergers: Mergers) -> dict[str, Any]:
    """Merge one cloud-config part into what the earlier parts built."""
    result = _Merger(mergers or DEFAULT_MERGERS).merge(base, part)
    assert isinstance(result, dict)
    return result


def load_cloud_config(payload: bytes, merge_header: str = "") -> tuple[dict[str, Any], Mergers]:
    """Parse one ``#cloud-config`` part; return it without its merge keys, and its mergers
    (the part's ``merge_how``/``merge_type`` first, then its Merge-Type header)."""
    try:
        loaded = yaml.safe_load(payload.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserDataError(f"cloud-config is not valid YAML: {exc}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise UserDataError(
            f"cloud-config must be a mapping at the top level, not {type(loaded).__name__}"
        )
    config: dict[str, Any] = dict(loaded)
    how = config.pop("merge_how", None)
    if how is None:
        how = config.pop("merge_type", None)
    else:
        config.pop("merge_type", None)
    mergers = parse_mergers(how) + parse_mergers(merge_header)
    return config, mergers


# --------------------------------------------------------------------------- user-data


@dataclass(frozen=True)
class Script:
    """A script part: its file name in the scripts folder, and its text."""

    name: str
    content: bytes


@dataclass
class UserData:
    """What a guest's cloud-init makes of its user-data."""

    config: dict[str, Any] = field(default_factory=dict)
    scripts: list[Script] = field(default_factory=list)  # scripts-user (instance scripts)
    per_frequency: dict[str, list[Script]] = field(default_factory=dict)
    boothooks: list[Script] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings: refused or unsupported parts
    errors: list[str] = field(default_factory=list)  # failures that make the status "error"


def clean_filename(name: str) -> str:
    """A part's filename made safe as a file name in one folder (as cloud-init does)."""
    cleaned = re.sub(r"[/\\\x00-\x1f]", "_", name).strip().lstrip(".")
    return cleaned or "part"


def parse_user_data(user_data: bytes | None) -> UserData:
    """Split, decode and merge user-data the way cloud-init's part handlers do."""
    result = UserData()
    if not user_data:
        return result
    try:
        parts = split_parts(user_data)
    except UserDataError as exc:
        result.errors.append(str(exc))
        return result
    merged: dict[str, Any] | None = None
    for part in parts:
        ctype = part.content_type
        where = f"part {part.filename!r} ({ctype})"
        if ctype == "text/cloud-config":
            try:
                config, mergers = load_cloud_config(part.payload, part.merge_type)
            except UserDataError as exc:
                result.errors.append(f"Failed at merging in cloud config {where}: {exc}")
                continue
            merged = merge_config(merged if merged is not None else {}, config, mergers)
        elif ctype == "text/x-shellscript":
            result.scripts.append(Script(clean_filename(part.filename), part.payload))
        elif ctype in _SCRIPT_FREQUENCIES:
            frequency = _SCRIPT_FREQUENCIES[ctype]
            result.per_frequency.setdefault(frequency, []).append(
                Script(clean_filename(part.filename), part.payload)
            )
        elif ctype == "text/cloud-boothook":
            body = part.payload
            first, _, rest = body.partition(b"\n")
            if first.strip().lower().startswith(b"#cloud-boothook"):
                body = rest
            result.boothooks.append(Script(clean_filename(part.filename), body))
        elif ctype in ("text/x-include-url", "text/x-include-once-url"):
            result.notes.append(
                f"{where} refused: the simulator fetches no URLs (#include needs network "
                "access outside the guest network)"
            )
        elif ctype == "text/jinja2":
            result.notes.append(f"{where} unsupported: jinja templates are not rendered")
        else:
            result.notes.append(f"{where} unsupported: no handler for this content type")
    result.config = merged or {}
    return result


# --------------------------------------------------------------------------- modules


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def shellify(commands: Any, key: str) -> bytes:
    """A list of commands as one ``/bin/sh`` script, as cloud-init writes runcmd/bootcmd:
    strings are lines as given, lists are quoted words."""
    if isinstance(commands, str):
        commands = [commands]
    if not isinstance(commands, list):
        raise UserDataError(f"{key}: must be a list, not {type(commands).__name__}")
    lines = ["#!/bin/sh"]
    for index, command in enumerate(commands):
        if isinstance(command, list | tuple):
            lines.append(" ".join(shlex.quote(str(word)) for word in command))
        elif isinstance(command, str):
            lines.append(command)
        else:
            raise UserDataError(
                f"{key}[{index}]: unable to shellify type {type(command).__name__}; "
                "expected a string or a list"
            )
    return ("\n".join(lines) + "\n").encode("utf-8")


@dataclass(frozen=True)
class FileWrite:
    """One decoded write_files entry."""

    path: str
    content: bytes
    mode: int
    append: bool
    defer: bool
    owner: str


def decode_write_file(entry: Any, index: int) -> FileWrite:
    """Decode one ``write_files`` entry (content encodings, octal permissions)."""
    where = f"write_files[{index}]"
    if not isinstance(entry, dict):
        raise UserDataError(f"{where}: must be a mapping, not {type(entry).__name__}")
    path = entry.get("path")
    if not isinstance(path, str) or not path:
        raise UserDataError(f"{where}.path: missing or not a string")
    if not path.startswith("/"):
        raise UserDataError(f"{where}.path: {path!r} is not absolute")
    if "source" in entry and "content" not in entry:
        raise UserDataError(f"{where}.source: fetching file content from a URI is not supported")
    content = entry.get("content", "")
    if content is None:
        content = ""
    raw = content if isinstance(content, bytes) else str(content).encode("utf-8")
    encoding = str(entry.get("encoding") or "text/plain").strip().lower()
    try:
        if encoding in ("b64", "base64"):
            data = base64.b64decode(raw, validate=False)
        elif encoding in ("gz", "gzip"):
            data = gzip.decompress(raw)
        elif encoding in ("gz+base64", "gzip+base64", "gz+b64", "gzip+b64"):
            data = gzip.decompress(base64.b64decode(raw, validate=False))
        elif encoding in ("text/plain", "text", "plain"):
            data = raw
        else:
            raise UserDataError(f"{where}.encoding: unknown encoding {encoding!r}")
    except (binascii.Error, OSError, EOFError) as exc:
        raise UserDataError(f"{where}.content: does not decode as {encoding}: {exc}") from exc
    mode = _decode_permissions(entry.get("permissions"), where)
    owner = str(entry.get("owner") or "root:root")
    return FileWrite(
        path, data, mode, bool(entry.get("append", False)), bool(entry.get("defer", False)), owner
    )


def _decode_permissions(value: Any, where: str) -> int:
    if value is None:
        return 0o644
    if isinstance(value, bool):
        raise UserDataError(f"{where}.permissions: {value!r} is not an octal mode")
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip().lower()
    if text.startswith("0o"):
        text = text[2:]
    try:
        return int(text, 8)
    except ValueError:
        raise UserDataError(f"{where}.permissions: {value!r} is not an octal mode") from None


def hostname_and_fqdn(config: dict[str, Any], local_hostname: str) -> tuple[str, str]:
    """The hostname cloud-init's set_hostname chooses (short name, fully qualified name)."""
    if config.get("fqdn"):
        fqdn = str(config["fqdn"])
        return str(config.get("hostname") or fqdn.split(".")[0]), fqdn
    if config.get("hostname"):
        name = str(config["hostname"])
        if "." in name:
            return name.split(".")[0], name
        return name, name
    return local_hostname.split(".")[0], local_hostname


# --------------------------------------------------------------------------- plan

Step = dict[str, Any]


@dataclass
class Module:
    """One cloud-init module of a stage and the plain steps it takes."""

    name: str
    steps: list[Step] = field(default_factory=list)


@dataclass
class Plan:
    """What the guest init carries out, stage by stage, in cloud-init's order."""

    instance_id: str
    hostname: str
    datasource: str
    stages: dict[str, list[Module]]
    notes: list[str]

    def module_names(self, stage: str) -> list[str]:
        return [m.name for m in self.stages[stage]]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": CLOUD_INIT_VERSION,
            "instance_id": self.instance_id,
            "hostname": self.hostname,
            "datasource": self.datasource,
            "notes": list(self.notes),
            "stages": [
                {"name": stage, "modules": [{"name": m.name, "steps": m.steps} for m in mods]}
                for stage, mods in self.stages.items()
            ],
        }


def _write(path: str, data: bytes, mode: int = 0o644, append: bool = False) -> Step:
    return {"op": "write", "path": path, "data": _b64(data), "mode": mode, "append": append}


def _log(message: str) -> Step:
    return {"op": "log", "message": message}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return _b64(value)
    raise TypeError(f"not serialisable: {type(value).__name__}")


def seed_files(
    datasource: str,
    instance_id: str,
    hostname: str,
    user_data: bytes | None,
    network_data: bytes | None,
) -> dict[str, bytes]:
    """The datasource's seed as the guest sees it (KubeVirt's NoCloud / ConfigDrive disk)."""
    if datasource == "NoCloud":
        meta = f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n".encode()
        files = {
            "/var/lib/cloud/seed/nocloud/meta-data": meta,
            "/var/lib/cloud/seed/nocloud/user-data": user_data or b"",
        }
        if network_data:
            files["/var/lib/cloud/seed/nocloud/network-config"] = network_data
        return files
    if datasource == "ConfigDrive":
        base = "/var/lib/cloud/seed/config_drive/openstack/latest"
        meta_json = json.dumps(
            {
                "uuid": instance_id,
                "hostname": hostname,
                "name": hostname,
                "instance_id": instance_id,
            },
            indent=1,
        ).encode()
        files = {f"{base}/meta_data.json": meta_json, f"{base}/user_data": user_data or b""}
        if network_data:
            files[f"{base}/network_data.json"] = network_data
        return files
    raise UserDataError(f"datasource: {datasource!r} is not NoCloud or ConfigDrive")


def build_plan(
    instance_id: str,
    hostname: str,
    datasource: str,
    user_data: bytes | None,
    network_data: bytes | None = None,
) -> Plan:
    """The whole cloud-init run of one guest boot, in the order cloud-init 22.4 runs it.

    init-local: the seed and the instance folder. init: boothooks (user-data consumption),
    bootcmd, write_files, set/update_hostname, update_etc_hosts, users (skipped).
    modules-config: runcmd (written as a script only), timezone. modules-final:
    package installs (skipped), write_files with ``defer``, scripts-per-once/-boot/-instance,
    scripts-user (the script parts and runcmd, by file name as run-parts sorts them),
    final-message.
    """
    if not instance_id:
        raise UserDataError("instance_id: empty")
    ud = parse_user_data(user_data)
    cfg = ud.config
    notes = list(ud.notes)
    stages: dict[str, list[Module]] = {name: [] for name in STAGES}
    instance_dir = f"/var/lib/cloud/instances/{instance_id}"

    # init-local: datasource and instance folder
    ds = Module("datasource")
    for path, data in seed_files(
        datasource, instance_id, hostname, user_data, network_data
    ).items():
        ds.steps.append(_write(path, data, 0o600 if path.endswith("user-data") else 0o644))
    ds.steps.append(_write(f"{instance_dir}/user-data.txt", user_data or b"", 0o600))
    ds.steps.append(
        _write(
            f"{instance_dir}/datasource",
            f"DataSource{datasource}: DataSource{datasource}\n".encode(),
        )
    )
    ds.steps.append(_write("/var/lib/cloud/data/instance-id", f"{instance_id}\n".encode()))
    ds.steps.append({"op": "symlink", "target": instance_dir, "path": INSTANCE_DIR})
    merged_text = "#cloud-config\n" + (
        yaml.safe_dump(json.loads(json.dumps(cfg, default=_json_default)), sort_keys=False)
        if cfg
        else ""
    )
    ds.steps.append(_write(f"{instance_dir}/cloud-config.txt", merged_text.encode(), 0o600))
    stages["init-local"].append(ds)

    errors_step: list[Step] = [{"op": "fail", "message": e} for e in ud.errors]
    consume = Module("consume-user-data", steps=[_log(n) for n in notes] + errors_step)
    for script in ud.scripts:
        consume.steps.append(_write(f"{SCRIPTS_DIR}/{script.name}", script.content, 0o700))
    for frequency, scripts in sorted(ud.per_frequency.items()):
        for script in scripts:
            consume.steps.append(
                _write(f"{PER_FREQUENCY_DIR}/{frequency}/{script.name}", script.content, 0o700)
            )
    for hook in ud.boothooks:
        path = f"{instance_dir}/boothooks/{hook.name}"
        consume.steps.append(_write(path, hook.content, 0o700))
        consume.steps.append({"op": "run", "argv": [path], "env": {"INSTANCE_ID": instance_id}})
    stages["init"].append(consume)

    if "bootcmd" in cfg:
        path = f"{instance_dir}/bootcmd.sh"
        stages["init"].append(
            _guarded(
                "bootcmd",
                lambda: [
                    _write(path, shellify(cfg["bootcmd"], "bootcmd"), 0o700),
                    {"op": "run", "argv": ["/bin/sh", path], "env": {"INSTANCE_ID": instance_id}},
                ],
            )
        )

    now_files, deferred_files = _write_files_steps(cfg)
    if now_files is not None:
        stages["init"].append(Module("write-files", now_files))

    short, fqdn = hostname_and_fqdn(cfg, hostname)
    if not cfg.get("preserve_hostname"):
        stages["init"].append(
            Module("set_hostname", [{"op": "hostname", "hostname": short, "fqdn": fqdn}])
        )
    if cfg.get("manage_etc_hosts") in (True, "true", "True", "template"):
        stages["init"].append(
            Module(
                "update_etc_hosts",
                [
                    _write(
                        "/etc/hosts",
                        f"127.0.1.1 {fqdn} {short}\n127.0.0.1 localhost\n"
                        "::1 localhost ip6-localhost ip6-loopback\n".encode(),
                    )
                ],
            )
        )

    skipped: dict[str, list[str]] = {}
    for key in cfg:
        if key in _SKIPPED_KEYS:
            skipped.setdefault(_SKIPPED_KEYS[key], []).append(key)
    for module_name, keys in skipped.items():
        stages[_MODULE_STAGE.get(module_name, "modules-final")].append(
            Module(
                module_name,
                [
                    _log(
                        f"{module_name}: skipped in the simulator ({', '.join(sorted(keys))}: "
                        "no package manager, users or disks in a simulated guest)"
                    )
                ],
            )
        )

    if cfg.get("timezone"):
        stages["modules-config"].append(
            Module("timezone", [{"op": "timezone", "zone": str(cfg["timezone"])}])
        )

    if "runcmd" in cfg:
        stages["modules-config"].append(
            _guarded(
                "runcmd",
                lambda: [_write(f"{SCRIPTS_DIR}/runcmd", shellify(cfg["runcmd"], "runcmd"), 0o700)],
            )
        )

    if deferred_files:
        stages["modules-final"].append(Module("write-files-deferred", deferred_files))
    for frequency in ("per-once", "per-boot", "per-instance"):
        scripts = ud.per_frequency.get(frequency, [])
        if scripts:
            stages["modules-final"].append(
                Module(
                    f"scripts-{frequency}",
                    [
                        {
                            "op": "runparts",
                            "paths": [
                                f"{PER_FREQUENCY_DIR}/{frequency}/{s.name}"
                                for s in sorted(scripts, key=lambda s: s.name)
                            ],
                        }
                    ],
                )
            )
    user_scripts = sorted({s.name for s in ud.scripts} | ({"runcmd"} if "runcmd" in cfg else set()))
    if user_scripts:
        stages["modules-final"].append(
            Module(
                "scripts-user",
                [{"op": "runparts", "paths": [f"{SCRIPTS_DIR}/{name}" for name in user_scripts]}],
            )
        )
    stages["modules-final"].append(Module("final-message", [{"op": "final_message"}]))

    stages = _sort_skipped(stages)
    return Plan(instance_id, short, datasource, stages, notes)


def _guarded(name: str, build: Callable[[], list[Step]]) -> Module:
    """A module whose steps cannot be built fails in the guest, naming the bad field."""
    try:
        return Module(name, build())
    except UserDataError as exc:
        return Module(name, [{"op": "fail", "message": str(exc)}])


def _write_files_steps(cfg: dict[str, Any]) -> tuple[list[Step] | None, list[Step]]:
    """Steps of write-files and write-files-deferred. Entries are written in order; the first
    entry that does not decode fails its module there, as cloud-init's module does."""
    if "write_files" not in cfg:
        return None, []
    entries = cfg["write_files"] or []
    if not isinstance(entries, list):
        return [{"op": "fail", "message": "write_files: must be a list"}], []
    now: list[Step] = []
    deferred: list[Step] = []
    for index, entry in enumerate(entries):
        try:
            f = decode_write_file(entry, index)
        except UserDataError as exc:
            now.append({"op": "fail", "message": str(exc)})
            break
        steps = deferred if f.defer else now
        if f.owner.split(":")[0] not in ("root", "0", ""):
            steps.append(
                _log(f"write_files: owner {f.owner!r} of {f.path} not supported, owned by root")
            )
        steps.append(_write(f.path, f.content, f.mode, f.append))
    return now, deferred


_ORDER: dict[str, tuple[str, ...]] = {
    "init-local": ("datasource",),
    "init": (
        "consume-user-data",
        "bootcmd",
        "write-files",
        "growpart",
        "resizefs",
        "disk_setup",
        "mounts",
        "set_hostname",
        "update_etc_hosts",
        "ca-certs",
        "rsyslog",
        "users-groups",
        "ssh",
    ),
    "modules-config": (
        "snap",
        "keyboard",
        "locale",
        "set-passwords",
        "apt-configure",
        "yum-add-repo",
        "ntp",
        "timezone",
        "runcmd",
    ),
    "modules-final": (
        "package-update-upgrade-install",
        "write-files-deferred",
        "scripts-per-once",
        "scripts-per-boot",
        "scripts-per-instance",
        "scripts-user",
        "phone-home",
        "final-message",
        "power-state-change",
    ),
}


def _sort_skipped(stages: dict[str, list[Module]]) -> dict[str, list[Module]]:
    """Modules in each stage in the order of Debian's cloud.cfg module lists."""

    def rank(stage: str, module: Module) -> int:
        order = _ORDER[stage]
        return order.index(module.name) if module.name in order else len(order)

    return {stage: sorted(mods, key=lambda m: rank(stage, m)) for stage, mods in stages.items()}
