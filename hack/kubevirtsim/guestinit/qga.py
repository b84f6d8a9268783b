"""The guest's qemu-guest-agent: its JSON protocol on the guest folder's socket.

KubeVirt learns a guest's hostname, OS, timezone and interfaces (the VMI's guestOSInfo and
status.interfaces, the AgentConnected condition) from qemu-guest-agent over a virtio
serial port; the simulator's virt-handler asks this socket the same questions with the same
commands (guest-sync, guest-get-osinfo, guest-network-get-interfaces, guest-exec, ...) and
gets answers in qemu-guest-agent's shapes. The host end is GuestHost's agent methods.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

from kubevirtsim.guestinit.client import RUN_DIR
from kubevirtsim.guestinit.env import guest_env, resolve_executable, serve_each
from kubevirtsim.guestinit.processes import Child, Reaper


def os_release() -> dict[str, str]:
    info: dict[str, str] = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path) as f:
                for line in f:
                    key, sep, value = line.strip().partition("=")
                    if sep:
                        info[key] = value.strip().strip('"')
            break
        except OSError:
            continue
    return info


def qga_osinfo() -> dict[str, str]:
    release = os_release()
    uname = os.uname()
    return {
        "id": release.get("ID", ""),
        "name": release.get("NAME", ""),
        "pretty-name": release.get("PRETTY_NAME", ""),
        "version": release.get("VERSION", ""),
        "version-id": release.get("VERSION_ID", ""),
        "kernel-release": uname.release,
        "kernel-version": uname.version,
        "machine": uname.machine,
    }


def qga_timezone() -> dict[str, Any]:
    zone = ""
    try:
        with open("/etc/timezone") as f:
            zone = f.read().strip()
    except OSError:
        pass
    if not zone and os.path.islink("/etc/localtime"):
        zone = os.readlink("/etc/localtime").split("zoneinfo/", 1)[-1]
    return {"zone": zone or "UTC", "offset": -time.timezone}


def qga_interfaces() -> list[dict[str, Any]]:
    result = subprocess.run(
        ["ip", "-j", "addr", "show"], capture_output=True, text=True, env=guest_env()
    )
    interfaces = []
    for link in json.loads(result.stdout or "[]"):
        addresses = [
            {
                "ip-address-type": "ipv4" if a.get("family") == "inet" else "ipv6",
                "ip-address": a.get("local"),
                "prefix": a.get("prefixlen"),
            }
            for a in link.get("addr_info", [])
        ]
        interfaces.append(
            {
                "name": link.get("ifname"),
                "hardware-address": link.get("address", ""),
                "ip-addresses": addresses,
            }
        )
    return interfaces


class GuestAgent:
    """qemu-guest-agent's JSON line protocol on the guest folder's QGA_SOCKET."""

    def __init__(
        self, listener: socket.socket, reaper: Reaper, shutdown: Callable[[], None]
    ) -> None:
        self.listener = listener
        self.reaper = reaper
        self.shutdown = shutdown
        self.execs: dict[int, tuple[Child, str, str]] = {}

    def start(self) -> None:
        serve_each(self.listener, self._serve, "qga")

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            for line in stream:
                if not line.strip():
                    continue
                try:
                    request = json.loads(line)
                    reply = self.handle(request)
                except Exception as exc:
                    reply = {"error": {"class": "GenericError", "desc": str(exc)}}
                if reply is None:
                    continue
                stream.write(json.dumps(reply).encode() + b"\n")
                stream.flush()

    def handle(self, request: dict[str, Any]) -> dict[str, Any] | None:
        command = request.get("execute", "")
        args = request.get("arguments") or {}
        if command == "guest-ping":
            return {"return": {}}
        if command in ("guest-sync", "guest-sync-delimited"):
            return {"return": args.get("id")}
        if command == "guest-info":
            return {"return": {"version": "7.2.0-kubevirtsim", "supported_commands": []}}
        if command == "guest-get-host-name":
            return {"return": {"host-name": socket.gethostname()}}
        if command == "guest-get-osinfo":
            return {"return": qga_osinfo()}
        if command == "guest-get-timezone":
            return {"return": qga_timezone()}
        if command == "guest-network-get-interfaces":
            return {"return": qga_interfaces()}
        if command == "guest-shutdown":
            self.shutdown()
            return None  # qemu-guest-agent does not answer a successful shutdown
        if command == "guest-exec":
            return {"return": {"pid": self._exec(args)}}
        if command == "guest-exec-status":
            return {"return": self._exec_status(int(args["pid"]))}
        return {
            "error": {
                "class": "CommandNotFound",
                "desc": f"The command {command} has not been found",
            }
        }

    def _exec(self, args: dict[str, Any]) -> int:
        os.makedirs(f"{RUN_DIR}/exec", exist_ok=True)
        token = os.urandom(6).hex()
        out_path, err_path = f"{RUN_DIR}/exec/{token}.out", f"{RUN_DIR}/exec/{token}.err"
        env = guest_env(dict(e.split("=", 1) for e in args.get("env", []) if "=" in e))
        in_path = "/dev/null"
        if args.get("input-data"):
            in_path = f"{RUN_DIR}/exec/{token}.in"
            with open(in_path, "wb") as data:
                data.write(base64.b64decode(args["input-data"]))
        with open(in_path, "rb") as stdin, open(out_path, "wb") as out, open(err_path, "wb") as err:
            child = self.reaper.spawn(
                [args["path"], *args.get("arg", [])],
                env=env,
                stdin=stdin,
                stdout=out,
                stderr=err,
                executable=resolve_executable(args["path"]),
            )
        self.execs[child.pid] = (child, out_path, err_path)
        return child.pid

    def _exec_status(self, pid: int) -> dict[str, Any]:
        child, out_path, err_path = self.execs[pid]
        if child.returncode is None:
            return {"exited": False}
        del self.execs[pid]
        status: dict[str, Any] = {"exited": True}
        if child.returncode < 0:
            status["signal"] = -child.returncode
        else:
            status["exitcode"] = child.returncode
        for key, path in (("out-data", out_path), ("err-data", err_path)):
            with open(path, "rb") as f:
                data = f.read()
            os.unlink(path)
            if data:
                status[key] = base64.b64encode(data).decode()
        return status
