"""The guest's cloud-init run: the host's plan carried out, reported as cloud-init reports.

The host reads the user-data (``kubevirtsim.cloudinit``, with PyYAML) and hands the guest a
plan of plain steps (``plan``); this module carries them out inside the guest, stage by
stage, and leaves what cloud-init leaves: /run/cloud-init/status.json during the run,
result.json at its end, cloud-init.log and cloud-init-output.log, the instance's
boot-finished file, and `cloud-init status` answers (``tools``). A failing module makes
the state "error" and the run goes on, as cloud-init does. The state also goes to the
host through the guest folder's STATUS_FILE (the ``mirror`` callback).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from kubevirtsim.guestinit import plan
from kubevirtsim.guestinit.env import console, guest_env, now_iso, uptime
from kubevirtsim.guestinit.processes import Reaper

CLOUD_INIT_OUTPUT = "/var/log/cloud-init-output.log"
CLOUD_INIT_LOG = "/var/log/cloud-init.log"
STATUS_JSON = "/run/cloud-init/status.json"
RESULT_JSON = "/run/cloud-init/result.json"
_STAGE_LABELS = {"modules-config": "modules:config", "modules-final": "modules:final"}


def set_hosts_entry(names: str) -> None:
    """Debian's "127.0.1.1 NAMES" line in the guest's /etc/hosts, so that the guest's own
    name resolves (without DNS) as it does on a Debian install."""
    try:
        with open("/etc/hosts") as f:
            lines = [line for line in f.read().splitlines() if not line.startswith("127.0.1.1")]
    except OSError:
        lines = ["127.0.0.1 localhost"]
    lines.append(f"127.0.1.1 {names}")
    with open("/etc/hosts", "w") as f:
        f.write("\n".join(lines) + "\n")


def _stamp() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())


class CloudInitRunner:
    """Carries out one plan; `done` is set and `state` is "done" or "error" at its end."""

    def __init__(self, the_plan: plan.Plan, reaper: Reaper, mirror: Callable[[str], None]) -> None:
        self.plan = the_plan
        self.reaper = reaper
        self.mirror = mirror
        seed = plan.SEED_DIRS[the_plan.datasource]
        self.datasource_long = f"DataSource{the_plan.datasource} [seed={seed}]"
        self.status: dict[str, Any] = {"v1": {"datasource": None, "stage": None}}
        for stage in the_plan.stages:
            self.status["v1"][stage] = {"errors": [], "start": None, "finished": None}
        self.errors: list[str] = []
        self.done = threading.Event()
        self.state = "running"

    def log(self, level: str, message: str) -> None:
        with open(CLOUD_INIT_LOG, "a") as f:
            f.write(f"{now_iso()} - guestinit[{level}]: {message}\n")

    def output(self, message: str) -> None:
        with open(CLOUD_INIT_OUTPUT, "a") as f:
            f.write(message + "\n")

    def _write_status(self) -> None:
        os.makedirs(os.path.dirname(STATUS_JSON), exist_ok=True)
        with open(f"{STATUS_JSON}.tmp", "w") as f:
            json.dump(self.status, f, indent=1)
        os.replace(f"{STATUS_JSON}.tmp", STATUS_JSON)

    def run(self) -> None:
        version = self.plan.version
        self.mirror("running")
        self.log("INFO", f"Cloud-init v. {version} running (simulated guest)")
        for note in self.plan.notes:
            console(f"cloud-init: {note}")
        for name, modules in self.plan.stages.items():
            record = self.status["v1"][name]
            self.status["v1"]["stage"] = name
            record["start"] = time.time()
            if name != "init-local":
                self.status["v1"]["datasource"] = self.datasource_long
            self._write_status()
            self.output(
                f"Cloud-init v. {version} running '{_STAGE_LABELS.get(name, name)}' at "
                f"{_stamp()}. Up {uptime():.2f} seconds."
            )
            for module in modules:
                error = self._run_module(module)
                if error:
                    text = f"('{module.name}', RuntimeError({error!r}))"
                    record["errors"].append(text)
                    self.errors.append(text)
                    self.log("WARNING", f"Running module {module.name} failed: {error}")
            record["finished"] = time.time()
            self._write_status()
        self.status["v1"]["stage"] = None
        self._write_status()
        with open(RESULT_JSON, "w") as f:
            json.dump(
                {"v1": {"datasource": self.datasource_long, "errors": self.errors}}, f, indent=1
            )
        self.state = "error" if self.errors else "done"
        self.mirror(self.state)
        self.done.set()
        console(f"cloud-init {self.state} after {uptime():.3f}s")

    def _run_module(self, module: plan.Module) -> str | None:
        self.log("DEBUG", f"Running module {module.name}")
        try:
            for step in module.steps:
                error = self.step(module.name, step)
                if error:
                    return error
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def _command(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        with open(CLOUD_INIT_OUTPUT, "ab") as out:
            try:
                return self.reaper.run(
                    argv, env=guest_env(env), stdout=out, stderr=subprocess.STDOUT
                )
            except OSError as exc:
                out.write(f"{argv[0]}: {exc}\n".encode())
                return 126

    def step(self, module: str, step: plan.Step) -> str | None:
        """Carry out one step of `module`; the module's error message, or None."""
        match step:
            case plan.Write():
                os.makedirs(os.path.dirname(step.path) or "/", mode=0o755, exist_ok=True)
                with open(step.path, "ab" if step.append else "wb") as f:
                    f.write(step.data)
                os.chmod(step.path, step.mode)
            case plan.Symlink():
                os.makedirs(os.path.dirname(step.path), exist_ok=True)
                if os.path.lexists(step.path):
                    if os.path.isdir(step.path) and not os.path.islink(step.path):
                        shutil.rmtree(step.path)
                    else:
                        os.unlink(step.path)
                os.symlink(step.target, step.path)
            case plan.Log():
                self.log("WARNING", step.message)
            case plan.Fail():
                self.log("ERROR", step.message)
                self.output(f"{module}: {step.message}")
                return step.message
            case plan.Run():
                code = self._command(list(step.argv), step.env)
                if code != 0:
                    return (
                        f"Unexpected error while running command. Command: {list(step.argv)} "
                        f"Exit code: {code}"
                    )
            case plan.RunParts():
                return self._run_parts(step.paths)
            case plan.Hostname():
                self._hostname(step.hostname, step.fqdn)
            case plan.Timezone():
                zone_file = f"/usr/share/zoneinfo/{step.zone}"
                if not os.path.isfile(zone_file):
                    return f"Invalid timezone {step.zone!r}: {zone_file} does not exist"
                with open("/etc/timezone", "w") as f:
                    f.write(step.zone + "\n")
                if os.path.lexists("/etc/localtime"):
                    os.unlink("/etc/localtime")
                os.symlink(zone_file, "/etc/localtime")
            case plan.FinalMessage():
                self._final_message()
        return None

    def _run_parts(self, paths: tuple[str, ...]) -> str | None:
        failed: list[str] = []
        attempted = 0
        for path in paths:
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                continue
            attempted += 1
            if self._command([path], {"INSTANCE_ID": self.plan.instance_id}) != 0:
                failed.append(os.path.basename(path))
        if failed:
            return (
                f"Runparts: {len(failed)} failures ({','.join(failed)}) in "
                f"{attempted} attempted commands"
            )
        return None

    def _hostname(self, hostname: str, fqdn: str) -> None:
        socket.sethostname(hostname)
        with open("/etc/hostname", "w") as f:
            f.write(hostname + "\n")
        set_hosts_entry(hostname if fqdn == hostname else f"{fqdn} {hostname}")
        os.makedirs("/var/lib/cloud/data", exist_ok=True)
        with open("/var/lib/cloud/data/previous-hostname", "w") as f:
            f.write(fqdn + "\n")

    def _final_message(self) -> None:
        version = self.plan.version
        self.output(
            f"Cloud-init v. {version} finished at {_stamp()}. "
            f"Datasource {self.datasource_long}.  Up {uptime():.2f} seconds"
        )
        with open(f"{plan.instance_dir(self.plan.instance_id)}/boot-finished", "w") as f:
            f.write(f"{uptime():.2f} - {time.ctime()} - v. {version}\n")


def cloud_init_state() -> tuple[str, dict[str, Any]]:
    """`cloud-init status` from the files cloud-init leaves in /run/cloud-init."""
    try:
        with open(RESULT_JSON) as f:
            result = json.load(f)
        errors = result["v1"]["errors"]
        return ("error" if errors else "done"), result
    except (OSError, ValueError, KeyError):
        pass
    if os.path.exists(STATUS_JSON):
        return "running", {}
    return "not run", {}
