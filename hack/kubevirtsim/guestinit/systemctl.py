"""systemctl: the verbs a cloud-init script or guestha's agent uses, answered as systemd does.

guestha's agent and the users' scripts read systemctl's output and exit codes (is-active's
LSB code 3, start's 5 for a missing unit, show's Key=Value lines, is-enabled's states), so
these are systemd's, byte for byte where a script could depend on them. Runs in PID 1 (on
the control socket's thread); the guest's ``systemctl`` command is only ``client``.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import time
from collections.abc import Callable, Collection

from kubevirtsim.guestinit.client import Reply
from kubevirtsim.guestinit.services import JobFailed, ServiceManager
from kubevirtsim.guestinit.units import (
    find_unit_file,
    is_masked,
    load_unit,
    normalize_unit,
    parse_signal,
)

ACTIVE_EXIT = {"active": 0, "reloading": 0}


def unit_file_state(name: str) -> str | None:
    """systemctl is-enabled's answer for a unit file; None when there is none."""
    if is_masked(name):
        return "masked"
    path = find_unit_file(name)
    if path is None:
        return None
    if path.startswith("/run/systemd/transient/"):
        return "transient"
    for directory in ("/etc/systemd/system", "/run/systemd/system"):
        if not os.path.isdir(directory):
            continue
        for entry in os.listdir(directory):
            if entry.endswith((".wants", ".requires")) and os.path.lexists(
                f"{directory}/{entry}/{name}"
            ):
                return "enabled"
    cfg = load_unit(name)
    if cfg is not None and not (cfg.wanted_by or cfg.required_by):
        return "static"
    return "disabled"


def split_options(
    argv: list[str], with_value: Collection[str]
) -> tuple[dict[str, list[str]], list[str]]:
    """GNU-style options (--x=v, --x v, -x v) and the positional arguments."""
    opts: dict[str, list[str]] = {}
    args: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            args.extend(argv[i + 1 :])
            break
        if arg.startswith("--"):
            key, sep, value = arg.partition("=")
            if not sep and key in with_value and i + 1 < len(argv):
                value = argv[i + 1]
                i += 1
            opts.setdefault(key, []).append(value)
        elif arg.startswith("-") and len(arg) > 1:
            key = arg[:2]
            if key in with_value:
                value = arg[2:]
                if not value and i + 1 < len(argv):
                    value = argv[i + 1]
                    i += 1
                opts.setdefault(key, []).append(value)
            else:
                for letter in arg[1:]:
                    opts.setdefault(f"-{letter}", []).append("")
        else:
            args.append(arg)
        i += 1
    return opts, args


def systemctl(manager: ServiceManager, argv: list[str]) -> Reply:
    """The systemctl verbs a cloud-init script or guestha's agent uses."""
    opts, args = split_options(
        argv,
        {
            "-p",
            "--property",
            "-P",
            "-s",
            "--signal",
            "--kill-whom",
            "--kill-who",
            "-n",
            "--lines",
            "-t",
            "--type",
            "--state",
            "-o",
            "--output",
        },
    )
    reply = Reply()
    if "--user" in opts:
        return Reply(1, [], ["Failed to connect to bus: user services are not simulated"])
    if not args:
        args = ["list-units"]
    verb, names = args[0], [normalize_unit(n) for n in args[1:]]
    quiet = "--quiet" in opts or "-q" in opts
    now = "--now" in opts

    def need_units() -> bool:
        if not names:
            reply.rc = 1
            reply.err.append(f"Too few arguments for {verb}.")
            return False
        return True

    def run_job(job: Callable[[str], None], name: str) -> None:
        try:
            job(name)
        except JobFailed as exc:
            reply.rc = 1 if "not found" not in str(exc) else 5
            reply.err.append(str(exc))

    if verb in ("daemon-reload", "daemon-reexec", "reset-failed"):
        if verb == "reset-failed":
            for svc in list(manager.services.values()):
                if (not names or svc.name in names) and svc.active_state == "failed":
                    manager._set(svc, "inactive", "dead", "success")
                    svc.starts.clear()
        return reply
    if verb in (
        "start",
        "stop",
        "restart",
        "try-restart",
        "reload",
        "reload-or-restart",
        "force-reload",
    ):
        if not need_units():
            return reply
        for name in names:
            svc = manager.get(name)
            if verb == "start":
                run_job(manager.start, name)
            elif verb == "stop":
                run_job(manager.stop, name)
            elif verb in ("restart", "force-reload") or (
                verb == "reload-or-restart" and not (svc.cfg and svc.cfg.exec_reload)
            ):
                run_job(manager.restart, name)
            elif verb == "try-restart":
                if svc.active_state == "active":
                    run_job(manager.restart, name)
            else:
                run_job(manager.reload, name)
        return reply
    if verb in ("enable", "disable", "reenable", "mask", "unmask"):
        if not need_units():
            return reply
        for name in names:
            _unit_file_verb(manager, verb, name, now, reply, run_job)
        return reply
    if verb in ("is-active", "is-failed"):
        if not need_units():
            return reply
        states = [manager.get(n).active_state for n in names]
        for state in states:
            if not quiet:
                reply.out.append(state)
        if verb == "is-active":
            reply.rc = 0 if any(s in ACTIVE_EXIT for s in states) else 3
        else:
            reply.rc = 0 if any(s == "failed" for s in states) else 1
        return reply
    if verb == "is-enabled":
        if not need_units():
            return reply
        found = False
        for name in names:
            file_state = unit_file_state(name)
            if file_state is None:
                reply.err.append(
                    f"Failed to get unit file state for {name}: No such file or directory"
                )
                reply.rc = 1
                continue
            if not quiet:
                reply.out.append(file_state)
            found = found or file_state in ("enabled", "static", "transient", "alias")
        if reply.rc == 0:
            reply.rc = 0 if found else 1
        return reply
    if verb == "status":
        return _status(manager, names, reply)
    if verb == "show":
        return _show(manager, names or [], opts, reply)
    if verb == "cat":
        for name in names:
            path = find_unit_file(name)
            if path is None:
                reply.rc = 1
                reply.err.append(f"No files found for {name}.")
                continue
            with open(path) as f:
                reply.out.append(f"# {path}")
                reply.out.extend(f.read().rstrip("\n").splitlines())
        return reply
    if verb == "kill":
        if not need_units():
            return reply
        sig_names = opts.get("--signal", []) + opts.get("-s", [])
        try:
            sig = parse_signal(sig_names[-1]) if sig_names else int(signal.SIGTERM)
        except ValueError as exc:
            return Reply(1, [], [str(exc)])
        whom = (opts.get("--kill-whom", []) + opts.get("--kill-who", []) or ["all"])[-1]
        for name in names:
            run_job(lambda n: manager.kill(n, sig, whom), name)
        return reply
    if verb in ("list-units", "list-unit-files"):
        with manager.lock:
            services = sorted(manager.services.values(), key=lambda s: s.name)
        reply.out.append("UNIT LOAD ACTIVE SUB DESCRIPTION")
        for svc in services:
            if svc.cfg is None:
                continue
            reply.out.append(
                f"{svc.name} loaded {svc.active_state} {svc.sub_state} {svc.cfg.description}"
            )
        return reply
    if verb == "is-system-running":
        reply.out.append("stopping" if manager.shutting_down else "running")
        return reply
    if verb in ("poweroff", "halt", "reboot", "kexec"):
        os.kill(1, signal.SIGTERM)
        if verb == "reboot":
            reply.err.append("reboot: the simulated guest powers off (a reboot is a new guest)")
        return reply
    return Reply(1, [], [f"Unknown command verb {verb} (not simulated)."])


def _unit_file_verb(
    manager: ServiceManager,
    verb: str,
    name: str,
    now: bool,
    reply: Reply,
    run_job: Callable[[Callable[[str], None], str], None],
) -> None:
    etc = "/etc/systemd/system"
    if verb == "mask":
        os.makedirs(etc, exist_ok=True)
        if os.path.lexists(f"{etc}/{name}"):
            os.unlink(f"{etc}/{name}")
        os.symlink("/dev/null", f"{etc}/{name}")
        reply.err.append(f"Created symlink {etc}/{name} \u2192 /dev/null.")
        if now:
            run_job(manager.stop, name)
        return
    if verb == "unmask":
        if is_masked(name):
            os.unlink(f"{etc}/{name}")
            reply.err.append(f'Removed "{etc}/{name}".')
        return
    if verb in ("disable", "reenable"):
        if find_unit_file(name) is None:
            reply.rc = 1
            reply.err.append(f"Failed to disable unit: Unit file {name} does not exist.")
            return
        if os.path.isdir(etc):
            for entry in sorted(os.listdir(etc)):
                link = f"{etc}/{entry}/{name}"
                if entry.endswith((".wants", ".requires")) and os.path.lexists(link):
                    os.unlink(link)
                    reply.err.append(f'Removed "{link}".')
        if verb == "disable":
            if now:
                run_job(manager.stop, name)
            return
    cfg = load_unit(name)
    if cfg is None:
        reply.rc = 1
        reply.err.append(
            f"Failed to enable unit: Unit file {name} does not exist."
            if not is_masked(name)
            else f"Failed to enable unit: Unit file {etc}/{name} is masked."
        )
        return
    targets = [f"{t}.wants" for t in cfg.wanted_by] + [f"{t}.requires" for t in cfg.required_by]
    if not targets:
        reply.err.append(
            "The unit files have no installation config (WantedBy=, RequiredBy=, Also=,\n"
            "Alias= settings in the [Install] section, and DefaultInstance= for template\n"
            "units). This means they are not meant to be enabled or disabled using systemctl."
        )
    for target in targets:
        os.makedirs(f"{etc}/{target}", exist_ok=True)
        link = f"{etc}/{target}/{name}"
        if not os.path.lexists(link):
            os.symlink(cfg.path, link)
            reply.err.append(f"Created symlink {link} \u2192 {cfg.path}.")
    if now or (verb == "reenable" and manager.get(name).active_state == "active"):
        run_job(manager.start if verb == "enable" else manager.restart, name)


def _ago(since: float) -> str:
    if not since:
        return "n/a"
    stamp = datetime.datetime.fromtimestamp(since).strftime("%a %Y-%m-%d %H:%M:%S")
    return f"{stamp}; {max(0.0, time.time() - since):.0f}s ago"


def _status(manager: ServiceManager, names: list[str], reply: Reply) -> Reply:
    if not names:
        reply.out.append(f"\u25cf {socket.gethostname()}")
        reply.out.append("    State: " + ("stopping" if manager.shutting_down else "running"))
        return reply
    worst = 0
    for name in names:
        svc = manager.get(name)
        cfg = svc.cfg or load_unit(name)
        if cfg is None and svc.cfg is None:
            reply.err.append(f"Unit {name} could not be found.")
            worst = max(worst, 4)
            continue
        assert cfg is not None
        file_state = unit_file_state(name) or "disabled"
        dot = (
            "\u25cf"
            if svc.active_state == "active"
            else ("\u00d7" if svc.active_state == "failed" else "\u25cb")
        )
        reply.out.append(f"{dot} {name} - {cfg.description or name}")
        reply.out.append(f"     Loaded: loaded ({cfg.path}; {file_state})")
        state = f"{svc.active_state} ({svc.sub_state})"
        if svc.active_state == "failed":
            state += f" Result: {svc.result}"
        reply.out.append(f"     Active: {state} since {_ago(svc.since)}")
        if svc.main_pid:
            comm = ""
            try:
                with open(f"/proc/{svc.main_pid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                pass
            reply.out.append(f"   Main PID: {svc.main_pid} ({comm})")
        pids = manager._unit_pids(svc)
        if pids:
            reply.out.append(f"      Tasks: {len(pids)}")
        try:
            with open(manager.log_path(name), errors="replace") as f:
                tail = f.read().splitlines()[-10:]
            reply.out.append("")
            reply.out.extend(tail)
        except OSError:
            pass
        worst = max(worst, 0 if svc.active_state in ACTIVE_EXIT else 3)
    reply.rc = worst
    return reply


def _show(
    manager: ServiceManager, names: list[str], opts: dict[str, list[str]], reply: Reply
) -> Reply:
    wanted: list[str] = []
    for value in opts.get("-p", []) + opts.get("--property", []) + opts.get("-P", []):
        wanted.extend(p.strip() for p in value.split(",") if p.strip())
    value_only = "--value" in opts or "-P" in opts
    for index, name in enumerate(names):
        svc = manager.get(name)
        cfg = svc.cfg or load_unit(name)
        load_state = "masked" if is_masked(name) else ("loaded" if cfg else "not-found")
        props: dict[str, str] = {
            "Id": name,
            "Names": name,
            "Description": cfg.description if cfg else "",
            "LoadState": load_state,
            "ActiveState": svc.active_state,
            "SubState": svc.sub_state,
            "Result": svc.result,
            "MainPID": str(svc.main_pid),
            "ExecMainPID": str(svc.main_pid),
            "ExecMainStatus": str(svc.exec_main_status),
            "ExecMainCode": svc.exec_main_code,
            "NRestarts": str(svc.n_restarts),
            "UnitFileState": unit_file_state(name) or "",
            "FragmentPath": cfg.path if cfg else "",
            "Type": cfg.type if cfg else "",
            "Restart": cfg.restart if cfg else "",
            "CanStart": "yes" if cfg else "no",
        }
        if index:
            reply.out.append("")
        for key in wanted or list(props):
            if key in props:
                reply.out.append(props[key] if value_only else f"{key}={props[key]}")
            elif not value_only:
                reply.out.append(f"{key}=")
    return reply
