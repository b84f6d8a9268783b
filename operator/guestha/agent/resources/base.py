"""What every resource type offers: a schema of attributes and the four VCS entry points.

A resource type (Process, Mount, OCF, ...) validates its attributes against a small
declarative schema, then implements online, offline, monitor and clean, each bounded by a
timeout. Entry points report failure by raising ActionError (ActionTimeout when the time
ran out) with a message a person can act on; monitor returns Online, Offline or Unknown
with a message, and returns Offline only when it knows nothing of the resource runs.
The monitor loop (agent/monitor.py) adds the VCS policy on top.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from guestha.protocol import TYPE_CHECKING
from guestha.protocol.states import OFFLINE, ONLINE, UNKNOWN

from .watcher import ExitWatcher

if TYPE_CHECKING:
    from typing import Any, ClassVar


class ActionError(Exception):
    """An entry point failed; the message says why (and names the attribute if one is bad)."""


class ActionTimeout(ActionError):
    """An entry point did not finish within its timeout."""


class ActionAborted(ActionError):
    """An entry point's program was killed by abort() (self-fencing): it gave no answer."""


@dataclass(frozen=True)
class MonitorResult:
    """What one monitor found, and why: Online (it runs), Offline (confirmed stopped), or
    Unknown (anything else: the monitor failed, the resource failed or is in transition;
    it may be running, so it must never be read as stopped)."""

    state: str
    message: str = ""

    @classmethod
    def online(cls, message: str = "") -> MonitorResult:
        return cls(ONLINE, message)

    @classmethod
    def offline(cls, message: str = "") -> MonitorResult:
        return cls(OFFLINE, message)

    @classmethod
    def unknown(cls, message: str) -> MonitorResult:
        return cls(UNKNOWN, message)


if TYPE_CHECKING:
    Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Attr:
    """One attribute of a resource type: its JSON kind, whether it is required, extra checks.

    kind: "string", "strings" (a list of strings), "map" (string to string), "bool", "int",
    "scalars" (string to string or integer, as OCF parameters).
    """

    kind: str
    required: bool = False
    check: Check | None = None
    non_empty: bool = True


_KIND_TEXT = {
    "string": "a string",
    "strings": "a list of strings",
    "map": "an object of strings",
    "scalars": "an object of strings or integers",
    "bool": "true or false",
    "int": "an integer",
}


def _kind_ok(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "strings":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "map":
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    if kind == "scalars":
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, (str, int)) and not isinstance(v, bool)
            for k, v in value.items())
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    raise AssertionError(f"unknown attribute kind {kind}")


def check_schema(type_name: str, schema: Mapping[str, Attr],
                 attributes: Mapping[str, Any]) -> list[str]:
    """Errors of `attributes` against `schema`, each starting with "attributes.NAME: "."""
    errors: list[str] = []
    for name in attributes:
        if name not in schema:
            errors.append(f"attributes.{name}: not an attribute of {type_name} (it has: "
                          f"{', '.join(schema)})")
    for name, attr in schema.items():
        if name not in attributes or attributes[name] is None:
            if attr.required:
                errors.append(f"attributes.{name}: required for {type_name}, "
                              f"{_KIND_TEXT[attr.kind]}")
            continue
        value = attributes[name]
        if not _kind_ok(attr.kind, value):
            errors.append(f"attributes.{name}: must be {_KIND_TEXT[attr.kind]}, got {value!r}")
            continue
        if attr.non_empty and attr.kind in ("string", "strings") and not value:
            errors.append(f"attributes.{name}: must not be empty")
            continue
        if attr.check is not None:
            problem = attr.check(value)
            if problem:
                errors.append(f"attributes.{name}: {problem}")
    return errors


def absolute_path(value: Any) -> str | None:
    """A check: an absolute path without NUL bytes."""
    if not value.startswith("/") or "\0" in value:
        return f"must be an absolute path, got {value!r}"
    return None


def env_names(value: Any) -> str | None:
    """A check: environment variable names (no '=' or NUL, not empty)."""
    bad = [k for k in value if not k or "=" in k or "\0" in k]
    if bad:
        return f"invalid environment variable name(s): {', '.join(map(repr, bad))}"
    if any("\0" in v for v in value.values()):
        return "values must not contain NUL bytes"
    return None


def signal_number(value: str) -> int | None:
    """The number of a signal given as "SIGTERM", "TERM" or "15", or None if it is none."""
    text = value.strip().upper()
    if text.isdigit():
        number = int(text)
        return number if number in {s.value for s in signal.Signals} else None
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(signal.Signals[text])
    except KeyError:
        return None


def signal_name(value: Any) -> str | None:
    """A check: a signal name or number."""
    if signal_number(value) is None:
        return f"not a signal name or number: {value!r} (e.g. SIGTERM, SIGINT, 15)"
    return None


@dataclass
class ResourceContext:
    """Where a resource lives: its group and name, a private directory, and hooks.

    `notify` asks the monitor loop for an immediate monitor (a Process calls it the moment
    its process exits); `watcher` waits for processes to end.
    """

    group: str
    name: str
    state_dir: str
    watcher: ExitWatcher
    notify: Callable[[], None]


class Resource(ABC):
    """A resource of one type with its attributes; the four entry points act on the guest."""

    type_name: ClassVar[str] = ""
    schema: ClassVar[Mapping[str, Attr]] = {}

    def __init__(self, context: ResourceContext, attributes: Mapping[str, Any]) -> None:
        self.context = context
        self.attributes = dict(attributes)
        self._running: set[int] = set()  # process groups of entry point programs now running
        self._aborted: set[int] = set()
        self._running_lock = threading.Lock()

    @classmethod
    def validate(cls, attributes: Mapping[str, Any]) -> list[str]:
        """Errors in `attributes`, each naming the attribute ("attributes.NAME: ...")."""
        return check_schema(cls.type_name, cls.schema, attributes)

    @abstractmethod
    def online(self, timeout: float) -> None:
        """Start the resource; returns when started (monitor then confirms it)."""

    @abstractmethod
    def offline(self, timeout: float) -> None:
        """Stop the resource in the orderly way."""

    @abstractmethod
    def monitor(self, timeout: float) -> MonitorResult:
        """Find out whether the resource is online."""

    @abstractmethod
    def clean(self, timeout: float) -> None:
        """Stop the resource by force after a fault or a failed offline."""

    def close(self) -> None:  # noqa: B027 (optional: only types that watch something)
        """Stop watching (never stops the resource itself)."""

    # Entry point programs register here while they run, so abort() can end them.
    def track(self, pgid: int) -> None:
        with self._running_lock:
            self._running.add(pgid)

    def untrack(self, pgid: int) -> bool:
        """Forget a finished program; True if abort() killed it."""
        with self._running_lock:
            self._running.discard(pgid)
            if pgid in self._aborted:
                self._aborted.discard(pgid)
                return True
            return False

    def abort(self) -> None:
        """Kill the entry point programs running now (self-fencing cannot wait for them)."""
        with self._running_lock:
            groups = list(self._running)
            self._aborted.update(groups)
        for pgid in groups:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)

    def program_dir(self) -> str:
        """The resource's private directory (created on first use)."""
        os.makedirs(self.context.state_dir, mode=0o700, exist_ok=True)
        return self.context.state_dir
