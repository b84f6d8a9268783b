"""Mount: a file system mounted on a directory (VCS Mount agent).

online = mount(8) (creating the mount point when createMountPoint is set), monitor = the
agent's /proc/self/mountinfo shows `device` mounted on `mountPoint` (compared by device
number for block devices, by name otherwise), offline = umount(8). clean kills the
processes that use the file system (found through /proc, without psmisc's fuser), then
unmounts, lazily if nothing else works: after clean the mount is gone from this namespace.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import procfs
from .base import ActionError, ActionTimeout, Attr, MonitorResult, Resource, ResourceContext
from .programs import run

MOUNTINFO = "/proc/self/mountinfo"
_BY_TAG = {"LABEL": "by-label", "UUID": "by-uuid", "PARTUUID": "by-partuuid",
           "PARTLABEL": "by-partlabel"}


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo."""

    device_number: str  # "major:minor"
    mount_point: str
    fs_type: str
    source: str


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """The entries of a mountinfo file, in mount order (the last one on a path is on top)."""
    entries: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        if len(fields) < dash + 3:
            continue
        entries.append(MountEntry(fields[2], _unescape(fields[4]), fields[dash + 1],
                                  _unescape(fields[dash + 2])))
    return entries


def read_mounts() -> list[MountEntry]:
    with open(MOUNTINFO, encoding="utf-8", errors="replace") as f:
        return parse_mountinfo(f.read())


def device_path(device: str) -> str:
    """The /dev path of LABEL=, UUID=, PARTUUID=, PARTLABEL= devices; others unchanged."""
    tag, sep, value = device.partition("=")
    if sep and tag in _BY_TAG:
        return f"/dev/disk/{_BY_TAG[tag]}/{value}"
    return device


def device_number(device: str) -> str | None:
    """"major:minor" of a block device, or None when `device` is not one."""
    try:
        info = os.stat(device_path(device))
    except OSError:
        return None
    if not stat.S_ISBLK(info.st_mode):
        return None
    return f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"


def is_device(entry: MountEntry, device: str) -> bool:
    """Whether the mount entry is `device` (by device number for block devices)."""
    if entry.source == device:
        return True
    number = device_number(device)
    if number is not None:
        return entry.device_number == number
    return os.path.realpath(device_path(device)) == os.path.realpath(entry.source)


def _no_dash(value: Any) -> str | None:
    return f"must not start with '-', got {value!r}" if value.startswith("-") else None


def _mount_point(value: Any) -> str | None:
    if not value.startswith("/") or value.rstrip("/") == "" or "\0" in value:
        return f"must be an absolute path other than /, got {value!r}"
    return None


class Mount(Resource):
    """A mounted file system."""

    type_name = "Mount"
    schema = {
        "device": Attr("string", required=True, check=_no_dash),
        "mountPoint": Attr("string", required=True, check=_mount_point),
        "fsType": Attr("string", check=_no_dash),
        "options": Attr("string", check=_no_dash),
        "createMountPoint": Attr("bool"),
    }

    def __init__(self, context: ResourceContext, attributes: Mapping[str, Any]) -> None:
        super().__init__(context, attributes)
        self.device: str = attributes["device"]
        self.mount_point: str = os.path.normpath(attributes["mountPoint"])
        self.fs_type: str | None = attributes.get("fsType")
        self.options: str | None = attributes.get("options")
        self.create: bool = bool(attributes.get("createMountPoint", False))

    def _top(self) -> MountEntry | None:
        """What is mounted on the mount point now (the topmost mount), if anything."""
        target = os.path.realpath(self.mount_point)
        found = None
        for entry in read_mounts():
            if entry.mount_point == target:
                found = entry
        return found

    def _ours(self, entry: MountEntry | None) -> bool:
        return entry is not None and is_device(entry, self.device)

    def monitor(self, timeout: float) -> MonitorResult:
        top = self._top()
        if top is None:
            return MonitorResult.offline(f"nothing mounted on {self.mount_point}")
        if self._ours(top):
            return MonitorResult.online(f"{top.source} on {self.mount_point} ({top.fs_type})")
        return MonitorResult.offline(f"{self.mount_point} has {top.source} mounted, "
                                     f"not {self.device}")

    def online(self, timeout: float) -> None:
        top = self._top()
        if self._ours(top):
            return
        if top is not None:
            raise ActionError(f"attributes.mountPoint: {self.mount_point} already has "
                              f"{top.source} mounted")
        if not os.path.isdir(self.mount_point):
            if not self.create:
                raise ActionError(f"attributes.mountPoint: {self.mount_point} does not exist "
                                  "(set createMountPoint to create it)")
            try:
                os.makedirs(self.mount_point, exist_ok=True)
            except OSError as e:
                raise ActionError(f"attributes.mountPoint: cannot create {self.mount_point}: "
                                  f"{e.strerror}") from None
        argv = ["mount"]
        if self.fs_type:
            argv += ["-t", self.fs_type]
        if self.options:
            argv += ["-o", self.options]
        done = run([*argv, self.device, self.mount_point], timeout,
                   f"mount {self.device}", owner=self)
        if done.returncode != 0:
            raise ActionError(f"mount {self.device} on {self.mount_point} failed "
                              f"({done.returncode}): {done.tail()}")

    def _umount(self, timeout: float, *flags: str) -> tuple[bool, str]:
        done = run(["umount", *flags, self.mount_point], timeout,
                   f"umount {self.mount_point}", owner=self)
        return done.returncode == 0, done.tail()

    def offline(self, timeout: float) -> None:
        if not self._ours(self._top()):
            return
        ok, output = self._umount(timeout)
        if not ok:
            raise ActionError(f"umount {self.mount_point} failed: {output}")

    def clean(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if not self._ours(self._top()):
            return
        for pid in procfs.pids_using(os.path.realpath(self.mount_point)):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        ok, output = self._umount(max(deadline - time.monotonic(), 1.0))
        if not ok and self._ours(self._top()):
            ok, output = self._umount(max(deadline - time.monotonic(), 1.0), "-l")
        if self._ours(self._top()):
            raise ActionTimeout(f"cannot unmount {self.mount_point}: {output}")
