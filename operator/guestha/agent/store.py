"""What the agent keeps on local disk so it survives a restart: the desired configuration
the operator sent, the highest operator epoch seen, the results of recent operations (so a
repeated operation id is answered, not applied again), and the agent's incarnation number
(Store); and each faulted resource's fault, in its own folder (FaultRecord).

Every write goes to a temporary file that is fsynced and renamed over the old one, and the
folder is fsynced after, so a crash leaves either the old state or the new, never half.
Saved first, then set: each change is written before the agent's memory takes it, so a
write that fails (a full disk) leaves memory as the disk is, and the caller gets a
SaveError that names the file and the cause (nothing half-done stays in memory).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
import time

from guestha.protocol import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

STATE_FILE = "channel-state.json"
FAULT_FILE = "fault.json"  # in a resource's folder while it is faulted (FaultRecord)
FORMAT = 1


class StoreError(Exception):
    """The state file exists but cannot be used; the message says why and where."""


class SaveError(Exception):
    """The state could not be written (the disk is full, read-only, failing...); nothing
    of the change was kept. The message names the file and the cause."""


def remove_folder(path: str) -> None:
    """Removes one of the agent's own folders with everything in it (a removed group's or
    resource's files), quietly: a folder that is not there, or a file that will not go, is
    left as it is.

    shutil is imported here, when a folder goes (rarely), not with the agent: it brings
    bz2 and lzma, and their libraries, into the agent's memory for the rest of its run."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def write_atomically(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replaces `path` with `data`: tmp + fsync + rename + fsync of the folder. On failure
    the temporary file is removed (a full disk must not fill up further) and `path` is
    unchanged; the OSError is raised."""
    folder = os.path.dirname(path) or "."
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class FaultRecord:
    """A resource's fault kept in its folder (FAULT_FILE), so that a fault outlives the
    agent's restart until it is cleared (hagrp -clear), as the rules' faulted mark does in
    memory (agent/verdicts.py: Seen.faulted). Written with write_atomically when the mark
    is set, removed when it ends. A record that cannot be read back (damaged) still counts
    as a fault: the safe side is a resource that must be cleared before it starts here."""

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, FAULT_FILE)

    def load(self) -> str | None:
        """The recorded fault's message; None when there is no record."""
        try:
            with open(self.path, "rb") as f:
                raw = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            return f"(its record {self.path} cannot be read: {e})"
        message = raw.get("message") if isinstance(raw, dict) else None
        return message if isinstance(message, str) else ""

    def save(self, message: str, when: str) -> None:
        """Records the fault (OSError when it cannot be written)."""
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        data = json.dumps({"format": FORMAT, "message": message, "since": when})
        write_atomically(self.path, data.encode("utf-8"))

    def drop(self) -> None:
        """Forgets the fault (OSError when the record cannot be removed)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        dfd = os.open(os.path.dirname(self.path), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class Store:
    """The channel's persistent state under the agent's state folder; thread-safe."""

    def __init__(self, state_dir: str, max_operations: int = 1024) -> None:
        self.path = os.path.join(state_dir, STATE_FILE)
        self._lock = threading.Lock()
        self._max_operations = max_operations
        self.epoch = 0
        self.incarnation = 0
        self.config: dict[str, Any] | None = None
        self._operations: collections.deque[dict[str, Any]] = collections.deque()
        self._by_id: dict[str, dict[str, Any]] = {}
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self._load()

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                raw = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise StoreError(f"{self.path}: cannot read the agent's state: {e}") from e
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise StoreError(f"{self.path}: not a format-{FORMAT} agent state file")
        epoch, incarnation = raw.get("epoch", 0), raw.get("incarnation", 0)
        config, operations = raw.get("config"), raw.get("operations", [])
        if not isinstance(epoch, int) or not isinstance(incarnation, int):
            raise StoreError(f"{self.path}: epoch and incarnation must be integers")
        if config is not None and not isinstance(config, dict):
            raise StoreError(f"{self.path}: config must be an object")
        if not isinstance(operations, list) or not all(
                isinstance(o, dict) and isinstance(o.get("id"), str) for o in operations):
            raise StoreError(f"{self.path}: operations must be a list of objects with an id")
        self.epoch, self.incarnation, self.config = epoch, incarnation, config
        for op in operations[-self._max_operations:]:
            self._operations.append(op)
            self._by_id[op["id"]] = op

    def _save(self, **change: Any) -> None:
        """Write the state with `change` applied, then apply it to memory (lock held)."""
        state = {"format": FORMAT, "epoch": self.epoch, "incarnation": self.incarnation,
                 "config": self.config, "operations": list(self._operations)}
        state.update(change)
        try:
            write_atomically(self.path, json.dumps(state, sort_keys=True).encode("utf-8"))
        except OSError as e:
            raise SaveError(f"{self.path}: the agent's state could not be saved: "
                            f"{e.strerror or e}") from e
        for key, value in change.items():
            if key == "operations":
                self._operations = collections.deque(value)
                self._by_id = {op["id"]: op for op in value}
            else:
                setattr(self, key, value)

    def next_incarnation(self) -> int:
        """A number larger than every earlier run's, persisted before it is used.

        Milliseconds of wall-clock time when the clock is sane, the previous number + 1
        when it is not (stepped back, or the state was lost and the clock is behind).
        """
        with self._lock:
            self._save(incarnation=max(self.incarnation + 1, int(time.time() * 1000)))
            return self.incarnation

    def record_epoch(self, epoch: int) -> bool:
        """Records a higher epoch; False (and nothing written) when it is not higher.
        SaveError when it could not be saved: then the epoch stays as it was."""
        with self._lock:
            if epoch <= self.epoch:
                return False
            self._save(epoch=epoch)
            return True

    def set_config(self, config: dict[str, Any]) -> None:
        """Saves a new desired configuration (SaveError: it was not saved, nor taken)."""
        with self._lock:
            self._save(config=config)

    def operation(self, operation_id: str) -> dict[str, Any] | None:
        """The recorded result of an operation id, if it was applied."""
        with self._lock:
            op = self._by_id.get(operation_id)
            return dict(op) if op is not None else None

    def record_operation(self, operation_id: str, command: str, epoch: int, status: int,
                         body: Any) -> None:
        """Keeps an operation's result (the newest `max_operations` are kept); SaveError
        when it could not be saved (then it is not kept either)."""
        with self._lock:
            op = {"id": operation_id, "command": command, "epoch": epoch, "status": status,
                  "body": body, "time": time.time()}
            kept = [o for o in self._operations if o["id"] != operation_id]
            kept.append(op)
            self._save(operations=kept[-self._max_operations:])


BOOT_RECORD_FILE = "boot-record.json"
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


def boot_id(path: str = BOOT_ID_FILE) -> str:
    """The kernel's id of this boot ("" when it cannot be read: then no record is ever
    taken for this boot's, which starts every run afresh)."""
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, ValueError):
        return ""


class BootRecord:
    """What a restarted agent needs from the runs before it in the same boot: when quorum
    was last held (CLOCK_MONOTONIC seconds, which count from this boot), a self-fence
    that finished or failed, a watchdog that was let go (guestha.agent.quorum).

    Kept beside the boot id, and read back only under the same boot id: a monotonic time
    means nothing in another boot, and after a reboot nothing of the last one runs.
    Written atomically (tmp + rename) but not fsynced, often (about once a second while
    quorum holds): the process's writes outlive its crash in the page cache, and what a
    kernel crash loses belongs to a boot that is over. A record that cannot be read is
    dropped (the run starts afresh) and said so in the log by the caller.
    """

    def __init__(self, state_dir: str, boot: str | None = None) -> None:
        self.path = os.path.join(state_dir, BOOT_RECORD_FILE)
        self.boot = boot_id() if boot is None else boot
        self._lock = threading.Lock()

    def load(self) -> dict[str, Any] | None:
        """The record of this boot; None when there is none (or not of this boot).
        Raises StoreError for a file that exists but cannot be used."""
        try:
            with open(self.path, "rb") as f:
                raw = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise StoreError(f"{self.path}: cannot read the boot record: {e}") from e
        if not isinstance(raw, dict) or not isinstance(raw.get("record"), dict):
            raise StoreError(f"{self.path}: not a boot record")
        if not self.boot or raw.get("bootId") != self.boot:
            return None
        return dict(raw["record"])

    def save(self, record: dict[str, Any]) -> None:
        if not self.boot:
            return
        data = json.dumps({"bootId": self.boot, "record": record},
                          sort_keys=True).encode("utf-8")
        with self._lock:
            tmp = f"{self.path}.tmp.{os.getpid()}"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.path)
            except OSError:
                # A full disk must not also fill it with half-written copies.
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
