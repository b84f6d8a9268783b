"""What cloud-init's modules do with their cloud-config keys, decoded on the host.

runcmd/bootcmd become shell scripts (``shellify``), write_files entries are decoded
(encodings, permissions, defer), the hostname is chosen as set_hostname chooses it, the
datasource's seed is laid out as KubeVirt's NoCloud/ConfigDrive disk shows it, and keys of
modules the simulator does not carry out (users, packages, disks) are named so the plan
can log that they were skipped. Every error names the key and index at fault.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import shlex
from dataclasses import dataclass
from typing import Any

from kubevirtsim.cloudinit.parts import UserDataError
from kubevirtsim.guestinit import plan

SCRIPTS_DIR = f"{plan.INSTANCE_LINK}/scripts"
PER_FREQUENCY_DIR = "/var/lib/cloud/scripts"

# Cloud-config keys the simulator knows and deliberately does not carry out, by module.
SKIPPED_KEYS: dict[str, str] = {
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
# The stage of each skipped module (the rest go to modules-final).
MODULE_STAGE: dict[str, str] = {
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


def seed_files(
    datasource: str,
    instance_id: str,
    hostname: str,
    user_data: bytes | None,
    network_data: bytes | None,
) -> dict[str, bytes]:
    """The datasource's seed as the guest sees it (KubeVirt's NoCloud / ConfigDrive disk)."""
    if datasource == "NoCloud":
        seed = plan.SEED_DIRS[datasource]
        meta = f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n".encode()
        files = {f"{seed}/meta-data": meta, f"{seed}/user-data": user_data or b""}
        if network_data:
            files[f"{seed}/network-config"] = network_data
        return files
    if datasource == "ConfigDrive":
        base = f"{plan.SEED_DIRS[datasource]}/openstack/latest"
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
