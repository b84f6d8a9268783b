"""The guest's systemd-run, journalctl and cloud-init commands, and PID 1's control socket.

The guest's commands (``client``) send their argv to the control socket; ``ControlServer``
answers each with the verb's Reply (``systemctl`` for systemctl, the functions here for
the others), in the wire format that ``client`` defines for both ends.
"""

from __future__ import annotations

import itertools
import json
import os
import socket

from kubevirtsim.guestinit import client
from kubevirtsim.guestinit.client import Reply
from kubevirtsim.guestinit.cloudinit_runner import (
    CLOUD_INIT_OUTPUT,
    CloudInitRunner,
    cloud_init_state,
)
from kubevirtsim.guestinit.env import serve_each
from kubevirtsim.guestinit.services import JobFailed, ServiceManager
from kubevirtsim.guestinit.systemctl import split_options, systemctl
from kubevirtsim.guestinit.units import find_unit_file, normalize_unit

_TRANSIENT_IDS = itertools.count(1)


def systemd_run(manager: ServiceManager, argv: list[str], cwd: str) -> Reply:
    """A transient service, as `systemd-run --unit=NAME CMD...` makes one."""
    start = client.command_start(argv)
    opts, args = split_options(argv[:start], client.SYSTEMD_RUN_VALUED_OPTIONS)
    command = argv[start:] or args
    if "--user" in opts or "--scope" in opts or "--pty" in opts or "-t" in opts:
        return Reply(1, [], ["systemd-run: --user, --scope and --pty are not simulated"])
    if not command:
        return Reply(1, [], ["Command line to execute required."])
    unit = (opts.get("--unit", []) + opts.get("-u", []) or [f"run-u{next(_TRANSIENT_IDS)}"])[-1]
    unit = normalize_unit(unit)
    if find_unit_file(unit) is not None or manager.get(unit).active_state in (
        "active",
        "activating",
    ):
        return Reply(
            1,
            [],
            [
                f"Failed to start transient service unit: Unit {unit} was "
                "already loaded or has a fragment file."
            ],
        )
    lines = [
        "[Unit]",
        f"Description={(opts.get('--description') or ['/'.join(command)])[-1]}",
        "",
        "[Service]",
    ]
    service_type = (opts.get("--service-type") or ["simple"])[-1]
    lines.append(f"Type={service_type}")
    if "--remain-after-exit" in opts or "-r" in opts:
        lines.append("RemainAfterExit=yes")
    for item in opts.get("-E", []) + opts.get("--setenv", []):
        lines.append(f"Environment={_systemd_quote(item)}")
    workdir = (opts.get("--working-directory") or [""])[-1]
    if "--same-dir" in opts or "-d" in opts:
        workdir = cwd
    if workdir:
        lines.append(f"WorkingDirectory={workdir}")
    for prop in opts.get("-p", []) + opts.get("--property", []):
        lines.append(prop)
    lines.append("ExecStart=" + " ".join(_systemd_quote(word) for word in command))
    os.makedirs("/run/systemd/transient", exist_ok=True)
    with open(f"/run/systemd/transient/{unit}", "w") as f:
        f.write("\n".join(lines) + "\n")
    reply = Reply()
    try:
        manager.start(unit)
    except JobFailed as exc:
        return Reply(1, [], [str(exc)])
    if "--quiet" not in opts and "-q" not in opts:
        reply.err.append(f"Running as unit: {unit}")
    if "--wait" in opts:
        svc = manager.get(unit)
        with manager.lock:
            while svc.active_state in ("active", "activating", "deactivating"):
                manager.changed.wait(1.0)
        reply.rc = svc.exec_main_status
    return reply


def _systemd_quote(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$")
    return '"' + escaped.replace("%", "%%") + '"'


def journalctl(manager: ServiceManager, argv: list[str]) -> Reply:
    """A unit's log (-u, -n); without -u, cloud-init's output log."""
    opts, _ = split_options(argv, {"-u", "--unit", "-n", "--lines", "-o", "--output"})
    units = [normalize_unit(u) for u in opts.get("-u", []) + opts.get("--unit", [])]
    count = (opts.get("-n", []) + opts.get("--lines", []) or [""])[-1]
    paths = [manager.log_path(u) for u in units] or [CLOUD_INIT_OUTPUT]
    lines: list[str] = []
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                lines.extend(f.read().splitlines())
        except OSError:
            pass
    if count.isdigit():
        lines = lines[-int(count) :] if int(count) else []
    if not lines:
        return Reply(0, ["-- No entries --"], [])
    return Reply(0, lines, [])


def cloud_init_command(argv: list[str], runner: CloudInitRunner | None) -> Reply:
    """`cloud-init status` [--wait] [--long] [--format json]."""
    opts, args = split_options(argv, {"--format"})
    if not args or args[0] != "status":
        return Reply(1, [], ["cloud-init: only `cloud-init status` is simulated"])
    if "--wait" in opts or "-w" in opts:
        while runner is not None and not runner.done.wait(0.2):
            pass
    state, result = cloud_init_state()
    reply = Reply(1 if state == "error" else 0)
    if (opts.get("--format") or [""])[-1] == "json":
        reply.out.append(
            json.dumps({"status": state, "errors": result.get("v1", {}).get("errors", [])})
        )
        return reply
    reply.out.append(f"status: {state}")
    if "--long" in opts or "-l" in opts:
        reply.out.append(f"detail:\n{result.get('v1', {}).get('datasource', '')}")
        for error in result.get("v1", {}).get("errors", []):
            reply.out.append(f"errors: {error}")
    return reply


class ControlServer:
    """PID 1's end of the guest commands' wire: one request and one reply per connection."""

    def __init__(self, manager: ServiceManager, runner: CloudInitRunner, path: str) -> None:
        self.manager = manager
        self.runner = runner
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(64)

    def start(self) -> None:
        serve_each(self.listener, self._serve, "control")

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                tool, argv, cwd = client.decode_request(client.read_all(conn))
                reply = self.handle(tool, argv, cwd)
            except Exception as exc:
                reply = Reply(1, [], [f"guestinit: {type(exc).__name__}: {exc}"])
            conn.sendall(client.encode_reply(reply))

    def handle(self, tool: str, argv: list[str], cwd: str) -> Reply:
        if tool == "systemctl":
            return systemctl(self.manager, argv)
        if tool == "systemd-run":
            return systemd_run(self.manager, argv, cwd)
        if tool == "journalctl":
            return journalctl(self.manager, argv)
        if tool == "cloud-init":
            return cloud_init_command(argv, self.runner)
        return Reply(1, [], [f"unknown tool {tool}"])
