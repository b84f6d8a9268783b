"""Mount: a file system mounted on a directory (VCS Mount agent).

online = mount(8) (creating the mount point when createMountPoint is set), monitor = the
agent's /proc/self/mountinfo shows `device` mounted on `mountPoint` (compared by device
number for block devices, by name otherwise), offline = umount(8). clean kills the
processes that use the file system (found through /proc, without psmisc's fuser), then
unmounts, lazily if nothing else works: after clean the mount is gone from this namespace.

The agent never looks at the mount point or the device itself: resolving a path on a
file system whose server is gone (hard NFS, a hung FUSE server) blocks for ever. A child
process does (fsprobe.py), within the action's timeout. When even that child cannot
resolve the mount point, clean still works from /proc alone: it kills the processes
under the mount point's path and detaches the mount (umount --no-canonicalize --lazy,
which the kernel does without asking the file system), so a dead server cannot keep a
member from fencing itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass

from guestha.protocol import TYPE_CHECKING

from . import fsprobe, procfs
from .base import ActionError, ActionTimeout, Attr, MonitorResult, Resource, ResourceContext
from .programs import run

if TYPE_CHECKING:
    from typing import Any

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


def same_source(entry: MountEntry, device: str, facts: fsprobe.PathFacts,
                source: fsprobe.PathFacts | None = None) -> bool:
    """Whether the mount entry is `device`: by name, by device number for block devices,
    else by real path (`facts` of the device, `source` of the entry's source path)."""
    if entry.source == device:
        return True
    if facts.rdev is not None:
        return entry.device_number == facts.rdev
    if source is not None:
        return facts.real == source.real
    return os.path.normpath(device_path(device)) == os.path.normpath(entry.source)


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

    def _look(self, timeout: float) -> tuple[str, fsprobe.PathFacts]:
        """The mount point's real path and what the device is, looked at by a child."""
        point, device = fsprobe.look([self.mount_point, device_path(self.device)], timeout,
                                     f"mount {self.device} on {self.mount_point}", owner=self)
        return point.real, device

    def _top(self, target: str) -> MountEntry | None:
        """What is mounted on `target` now (the topmost mount), if anything."""
        found = None
        for entry in read_mounts():
            if entry.mount_point == target:
                found = entry
        return found

    def _state(self, timeout: float) -> tuple[str, MountEntry | None, bool]:
        """(the mount point's real path, what is mounted there, whether that is ours)."""
        deadline = time.monotonic() + timeout
        target, device = self._look(timeout)
        top = self._top(target)
        if top is None:
            return target, None, False
        source = None
        if top.source != self.device and device.rdev is None and top.source.startswith("/"):
            source = fsprobe.look([top.source], max(deadline - time.monotonic(), 0.5),
                                  f"mount source {top.source}", owner=self)[0]
        return target, top, same_source(top, self.device, device, source)

    def monitor(self, timeout: float) -> MonitorResult:
        _, top, ours = self._state(timeout)
        if top is None:
            return MonitorResult.offline(f"nothing mounted on {self.mount_point}")
        if ours:
            return MonitorResult.online(f"{top.source} on {self.mount_point} ({top.fs_type})")
        return MonitorResult.offline(f"{self.mount_point} has {top.source} mounted, "
                                     f"not {self.device}")

    def online(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        _, top, ours = self._state(timeout)
        if ours:
            return
        if top is not None:
            raise ActionError(f"attributes.mountPoint: {self.mount_point} already has "
                              f"{top.source} mounted")
        point = fsprobe.look([self.mount_point], max(deadline - time.monotonic(), 0.5),
                             f"mount point {self.mount_point}", owner=self)[0]
        if not point.is_dir:
            if not self.create:
                raise ActionError(f"attributes.mountPoint: {self.mount_point} does not exist "
                                  "(set createMountPoint to create it)")
            problem = fsprobe.makedirs(self.mount_point, max(deadline - time.monotonic(), 0.5),
                                       f"mkdir {self.mount_point}", owner=self)
            if problem:
                raise ActionError(f"attributes.mountPoint: cannot create {self.mount_point}: "
                                  f"{problem}")
        argv = ["mount"]
        if self.fs_type:
            argv += ["-t", self.fs_type]
        if self.options:
            argv += ["-o", self.options]
        done = run([*argv, self.device, self.mount_point],
                   max(deadline - time.monotonic(), 0.5), f"mount {self.device}", owner=self)
        if done.returncode != 0:
            raise ActionError(f"mount {self.device} on {self.mount_point} failed "
                              f"({done.returncode}): {done.tail()}")

    def _umount(self, target: str, timeout: float, *flags: str) -> tuple[bool, str]:
        # --no-canonicalize: `target` is already the real path, and umount(8) must not
        # look at it again (that would block on a dead file system).
        done = run(["umount", "--no-canonicalize", *flags, target], timeout,
                   f"umount {self.mount_point}", owner=self)
        return done.returncode == 0, done.tail()

    def offline(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        target, _, ours = self._state(timeout)
        if not ours:
            return
        ok, output = self._umount(target, max(deadline - time.monotonic(), 0.5))
        if not ok:
            raise ActionError(f"umount {self.mount_point} failed: {output}")

    def clean(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(deadline - time.monotonic(), 1.0)

        try:
            target, _, ours = self._state(min(timeout / 3, 10.0))
        except ActionTimeout as e:
            # The file system does not answer: work from /proc alone, with the path as
            # configured (normalized) as the mount point's real path. Whatever is mounted
            # there goes: the file system cannot even be asked whether it is ours.
            target, ours = self.mount_point, True
            if self._top(target) is None:
                raise ActionTimeout(f"{e}; and /proc shows no mount on {target} to detach "
                                    f"(a path through a symbolic link?)") from None
        if not ours:
            return
        for pid in procfs.pids_using(target):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        ok, output = self._umount(target, left())
        if not ok and self._top(target) is not None:
            ok, output = self._umount(target, left(), "--lazy")
        if self._top(target) is not None:
            raise ActionTimeout(f"cannot unmount {self.mount_point}: {output}")
