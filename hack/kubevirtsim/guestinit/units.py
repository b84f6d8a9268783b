"""Unit files as systemd reads them: the search path, drop-ins, specifiers, Exec lines.

guestha's agent is installed as a systemd service, and its Systemd resource type drives
units the user wrote: the simulated guest must read those files the way systemd does (the
same keys, defaults, prefixes, time spans and signal names, the same search path and
drop-in order), or a unit that works on a real guest would behave differently here. Pure
parsing, apart from ``load_unit`` and ``find_unit_file`` reading the guest's files.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

# Where systemd looks for units, first match wins.
UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/transient",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
)


def parse_timespan(value: str, default: float) -> float:
    """A systemd time span ("90", "5s", "100ms", "1min 30s", "infinity") in seconds."""
    text = value.strip().lower()
    if not text:
        return default
    if text == "infinity":
        return float("inf")
    units = {
        "us": 1e-6,
        "usec": 1e-6,
        "ms": 1e-3,
        "msec": 1e-3,
        "s": 1.0,
        "sec": 1.0,
        "second": 1.0,
        "seconds": 1.0,
        "m": 60.0,
        "min": 60.0,
        "minute": 60.0,
        "minutes": 60.0,
        "h": 3600.0,
        "hr": 3600.0,
        "hour": 3600.0,
        "hours": 3600.0,
        "d": 86400.0,
        "day": 86400.0,
        "days": 86400.0,
    }
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)\s*([a-z]*)", text):
        factor = units.get(unit or "s")
        if factor is None:
            raise ValueError(f"unknown time unit {unit!r} in {value!r}")
        total += float(number) * factor
    return total


def parse_signal(value: str) -> int:
    text = value.strip().upper()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(signal.Signals[text])
    except KeyError:
        raise ValueError(f"unknown signal {value!r}") from None


@dataclass
class Command:
    """One Exec*= line: its words (unexpanded) and its prefixes."""

    words: list[str]
    ignore_failure: bool
    line: str


@dataclass
class UnitConfig:
    """The parts of a service unit file the simulator understands."""

    name: str
    path: str
    description: str = ""
    type: str = "simple"
    exec_start: list[Command] = field(default_factory=list)
    exec_start_pre: list[Command] = field(default_factory=list)
    exec_start_post: list[Command] = field(default_factory=list)
    exec_stop: list[Command] = field(default_factory=list)
    exec_stop_post: list[Command] = field(default_factory=list)
    exec_reload: list[Command] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    environment_files: list[tuple[str, bool]] = field(default_factory=list)
    working_directory: str = "/"
    user: str = ""
    restart: str = "no"
    restart_sec: float = 0.1
    timeout_start: float = 90.0
    timeout_stop: float = 90.0
    kill_signal: int = int(signal.SIGTERM)
    kill_mode: str = "control-group"
    send_sigkill: bool = True
    remain_after_exit: bool = False
    pid_file: str = ""
    start_limit_interval: float = 10.0
    start_limit_burst: int = 5
    success_exit_status: set[int] = field(default_factory=set)
    wanted_by: list[str] = field(default_factory=list)
    required_by: list[str] = field(default_factory=list)
    has_install: bool = False
    warnings: list[str] = field(default_factory=list)


def read_unit_sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """An INI-like unit file: sections of (key, value) in order, continuation lines joined."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if pending:
            line = pending + " " + line
            pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), [])
            continue
        if current is None or "=" not in line:
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def parse_command(value: str, specifiers: Callable[[str], str]) -> Command | None:
    """An Exec*= value: prefixes (-@+!:), then shell-like words; '' resets the list."""
    line = value.strip()
    if not line:
        return None
    ignore = False
    while line and line[0] in "-@+!:":
        if line[0] == "-":
            ignore = True
        line = line[1:]
    words = shlex.split(specifiers(line))
    if not words:
        return None
    return Command(words, ignore, value)


def unit_specifiers(name: str, hostname: str) -> Callable[[str], str]:
    prefix, _, rest = name.rpartition(".")[0].partition("@")
    instance = rest
    table = {
        "n": name,
        "N": name.rpartition(".")[0],
        "p": prefix,
        "i": instance,
        "I": instance,
        "t": "/run",
        "h": "/root",
        "u": "root",
        "U": "0",
        "H": hostname,
        "%": "%",
    }

    def expand(text: str) -> str:
        return re.sub(r"%(.)", lambda m: table.get(m.group(1), m.group(0)), text)

    return expand


def parse_unit(name: str, path: str, text: str, dropins: list[str]) -> UnitConfig:
    """Read a service unit (and its drop-ins, in order) into a UnitConfig."""
    cfg = UnitConfig(name=name, path=path)
    spec = unit_specifiers(name, socket.gethostname())
    lists = {
        "ExecStart": cfg.exec_start,
        "ExecStartPre": cfg.exec_start_pre,
        "ExecStartPost": cfg.exec_start_post,
        "ExecStop": cfg.exec_stop,
        "ExecStopPost": cfg.exec_stop_post,
        "ExecReload": cfg.exec_reload,
    }
    for source in [text, *dropins]:
        sections = read_unit_sections(source)
        for key, value in sections.get("Unit", []):
            if key == "Description":
                cfg.description = value
            elif key in ("StartLimitIntervalSec", "StartLimitInterval"):
                cfg.start_limit_interval = parse_timespan(value, 10.0)
            elif key == "StartLimitBurst":
                cfg.start_limit_burst = int(value)
        if "Install" in sections:
            cfg.has_install = True
        for key, value in sections.get("Install", []):
            if key == "WantedBy":
                cfg.wanted_by.extend(value.split())
            elif key == "RequiredBy":
                cfg.required_by.extend(value.split())
        for key, value in sections.get("Service", []):
            if key in lists:
                target = lists[key]
                command = parse_command(value, spec)
                if command is None:
                    target.clear()
                else:
                    target.append(command)
            elif key == "Type":
                cfg.type = value.lower()
            elif key == "Environment":
                for item in shlex.split(spec(value)):
                    k, sep, v = item.partition("=")
                    if sep:
                        cfg.environment[k] = v
            elif key == "EnvironmentFile":
                optional = value.startswith("-")
                cfg.environment_files.append((spec(value.lstrip("-")), optional))
            elif key == "WorkingDirectory":
                cfg.working_directory = spec(value.lstrip("-")).replace("~", "/root") or "/"
            elif key == "User":
                cfg.user = spec(value)
            elif key == "Restart":
                cfg.restart = value.lower()
            elif key == "RestartSec":
                cfg.restart_sec = parse_timespan(value, 0.1)
            elif key == "TimeoutStartSec":
                cfg.timeout_start = parse_timespan(value, 90.0)
            elif key == "TimeoutStopSec":
                cfg.timeout_stop = parse_timespan(value, 90.0)
            elif key == "TimeoutSec":
                cfg.timeout_start = cfg.timeout_stop = parse_timespan(value, 90.0)
            elif key == "KillSignal":
                cfg.kill_signal = parse_signal(value)
            elif key == "KillMode":
                cfg.kill_mode = value.lower()
            elif key == "SendSIGKILL":
                cfg.send_sigkill = value.lower() in ("yes", "true", "1", "on")
            elif key == "RemainAfterExit":
                cfg.remain_after_exit = value.lower() in ("yes", "true", "1", "on")
            elif key == "PIDFile":
                cfg.pid_file = spec(value)
            elif key == "SuccessExitStatus":
                for word in value.split():
                    if word.isdigit():
                        cfg.success_exit_status.add(int(word))
                    else:
                        with contextlib.suppress(ValueError):
                            cfg.success_exit_status.add(-parse_signal(word))
            elif key in ("StartLimitIntervalSec", "StartLimitInterval"):
                cfg.start_limit_interval = parse_timespan(value, 10.0)
            elif key == "StartLimitBurst":
                cfg.start_limit_burst = int(value)
    if cfg.type not in ("simple", "exec", "oneshot", "notify", "forking", "idle", "dbus"):
        cfg.warnings.append(f"Type={cfg.type} unknown, treated as simple")
        cfg.type = "simple"
    if cfg.user not in ("", "root", "0"):
        cfg.warnings.append(f"User={cfg.user} not supported in the simulator: runs as root")
    if not cfg.exec_start and cfg.type != "oneshot":
        cfg.warnings.append("no ExecStart=")
    return cfg


def normalize_unit(name: str) -> str:
    if "." not in name.rsplit("/", 1)[-1] or not re.search(
        r"\.(service|target|socket|timer|path|mount|scope|slice)$", name
    ):
        return name + ".service"
    return name


def find_unit_file(name: str) -> str | None:
    """The unit's file in the search path (a template for foo@bar), or None."""
    candidates = [name]
    if "@" in name:
        prefix, _, rest = name.partition("@")
        candidates.append(f"{prefix}@.{rest.rpartition('.')[2]}")
    for candidate in candidates:
        for directory in UNIT_DIRS:
            path = f"{directory}/{candidate}"
            if os.path.lexists(path):
                return path
    return None


def is_masked(name: str) -> bool:
    for directory in ("/etc/systemd/system", "/run/systemd/system"):
        path = f"{directory}/{name}"
        if os.path.islink(path) and os.readlink(path) == "/dev/null":
            return True
    return False


def load_unit(name: str) -> UnitConfig | None:
    path = find_unit_file(name)
    if path is None or is_masked(name):
        return None
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    dropins: list[str] = []
    base = path.rsplit("/", 1)[1]
    for directory in UNIT_DIRS:
        for dname in dict.fromkeys([f"{directory}/{name}.d", f"{directory}/{base}.d"]):
            if os.path.isdir(dname):
                for conf in sorted(os.listdir(dname)):
                    if conf.endswith(".conf"):
                        with open(f"{dname}/{conf}") as f:
                            dropins.append(f.read())
    return parse_unit(name, path, text, dropins)


def expand_words(words: list[str], env: dict[str, str]) -> list[str]:
    """systemd's $VAR (split into words) and ${VAR} (one word) expansion; $$ is '$'."""
    out: list[str] = []
    for word in words:
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            out.extend(env.get(whole.group(1), "").split())
            continue
        expanded = re.sub(
            r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)",
            lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1) or m.group(2), ""),
            word,
        )
        out.append(expanded)
    return out


def read_environment_file(path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            key, _, value = line.partition("=")
            key = key.strip()
            if key.startswith("export "):
                key = key[7:].strip()
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            env[key] = value
    return env
