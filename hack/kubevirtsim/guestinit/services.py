"""The guest's service manager: start, stop, restart and supervise units as systemd does.

guestha's agent runs as a systemd service, and its Systemd resources start, stop and watch
units; a simulated guest must give them systemd's behaviour where it shows: the states
(active/activating/deactivating/failed and their sub-states), Restart= with RestartSec= and
the start limit, Type=simple/exec/oneshot/forking, ExecStartPre/Post/Stop/StopPost, the
KillMode/KillSignal/TimeoutStopSec escalation, and a shutdown that stops services in
reverse start order.

Locks: each Service's ``job_lock`` serialises its jobs (start, stop, restart, reload) and
is taken before ``ServiceManager.lock``, never the other way round. ``lock`` guards every
Service's state; it is not held while a command runs or a process is waited for (waits on
``changed`` release it), and exit callbacks reach the manager with no reaper lock held.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

from kubevirtsim.guestinit.env import console, guest_env, now_iso, resolve_executable
from kubevirtsim.guestinit.processes import Child, Reaper, kill_session, pid_exists, process_table
from kubevirtsim.guestinit.units import (
    Command,
    UnitConfig,
    expand_words,
    is_masked,
    load_unit,
    read_environment_file,
)


@dataclass
class Service:
    """The runtime state of one unit, as systemd tracks it."""

    name: str
    cfg: UnitConfig | None = None
    active_state: str = "inactive"
    sub_state: str = "dead"
    result: str = "success"
    main: Child | None = None
    main_pid: int = 0
    exec_main_status: int = 0
    exec_main_code: str = ""
    sessions: set[int] = field(default_factory=set)
    n_restarts: int = 0
    starts: collections.deque[float] = field(default_factory=collections.deque)
    generation: int = 0
    stopping: bool = False
    since: float = 0.0
    job_lock: threading.Lock = field(default_factory=threading.Lock)


class JobFailed(Exception):
    """A start/stop job that failed; the message is what systemctl prints."""


class ServiceManager:
    """Starts, stops and restarts services the way systemd's service units behave."""

    def __init__(self, reaper: Reaper) -> None:
        self.reaper = reaper
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.services: dict[str, Service] = {}
        self.start_order: list[str] = []
        self.shutting_down = False

    def get(self, name: str) -> Service:
        with self.lock:
            svc = self.services.get(name)
            if svc is None:
                svc = self.services[name] = Service(name)
            return svc

    def log_path(self, name: str) -> str:
        return f"/var/log/{name}.log"

    def _log(self, name: str, message: str) -> None:
        try:
            with open(self.log_path(name), "a") as f:
                f.write(f"{now_iso()} guestinit: {message}\n")
        except OSError:
            pass
        console(f"{name}: {message}")

    def _set(self, svc: Service, active: str, sub: str, result: str | None = None) -> None:
        with self.lock:
            if svc.active_state != active:
                svc.since = time.time()
            svc.active_state, svc.sub_state = active, sub
            if result is not None:
                svc.result = result
            self.changed.notify_all()

    def _environment(self, cfg: UnitConfig, svc: Service) -> dict[str, str]:
        env = guest_env({"INVOCATION_ID": os.urandom(16).hex()})
        for path, optional in cfg.environment_files:
            try:
                env.update(read_environment_file(path))
            except OSError as exc:
                if not optional:
                    raise JobFailed(
                        f"Failed to load environment files: {path}: {exc.strerror}"
                    ) from None
        env.update(cfg.environment)
        if svc.main_pid:
            env["MAINPID"] = str(svc.main_pid)
        return env

    def _spawn(self, cfg: UnitConfig, command: Command, env: dict[str, str]) -> Child:
        words = expand_words(command.words, env)
        if not words:
            raise FileNotFoundError(2, f"empty command line: {command.line}")
        executable = resolve_executable(words[0])
        cwd = cfg.working_directory if os.path.isdir(cfg.working_directory) else "/"
        with open(self.log_path(cfg.name), "ab") as log:
            return self.reaper.spawn(
                words, executable=executable, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
            )

    def _run_control(
        self, svc: Service, cfg: UnitConfig, commands: list[Command], timeout: float, what: str
    ) -> None:
        for command in commands:
            env = self._environment(cfg, svc)
            try:
                child = self._spawn(cfg, command, env)
            except OSError as exc:
                if command.ignore_failure:
                    continue
                raise JobFailed(f"{what} {command.line!r} could not run: {exc}") from None
            svc.sessions.add(child.pid)
            code = child.wait(None if timeout == float("inf") else timeout)
            if code is None:
                kill_session(child.pid, signal.SIGKILL)
                child.wait(5.0)
                raise JobFailed(f"{what} timed out") from None
            if code != 0 and not command.ignore_failure:
                raise JobFailed(f"{what} {command.line!r} exited with status {code}")

    # ---- start

    def start(self, name: str) -> None:
        svc = self.get(name)
        with svc.job_lock:
            self._start_locked(svc, auto=False)

    def _start_locked(self, svc: Service, auto: bool) -> None:
        with self.lock:
            if self.shutting_down:
                raise JobFailed("Transaction is destructive: the guest is shutting down.")
            if svc.active_state in ("active", "reloading") or (
                svc.active_state == "activating" and svc.sub_state != "auto-restart"
            ):
                return
            if not auto:
                svc.generation += 1
        if svc.name.endswith(".target"):
            self._set(svc, "active", "active", "success")
            return
        if is_masked(svc.name):
            raise JobFailed(f"Failed to start {svc.name}: Unit {svc.name} is masked.")
        cfg = load_unit(svc.name)
        if cfg is None:
            raise JobFailed(f"Failed to start {svc.name}: Unit {svc.name} not found.")
        if not svc.name.endswith(".service"):
            raise JobFailed(f"Failed to start {svc.name}: only service units are simulated.")
        for warning in cfg.warnings:
            self._log(svc.name, f"warning: {warning}")
        now = time.monotonic()
        while svc.starts and now - svc.starts[0] > cfg.start_limit_interval:
            svc.starts.popleft()
        if cfg.start_limit_burst > 0 and len(svc.starts) >= cfg.start_limit_burst:
            self._set(svc, "failed", "failed", "start-limit-hit")
            raise JobFailed(f"Job for {svc.name} failed: start request repeated too quickly.")
        svc.starts.append(now)
        with self.lock:
            svc.cfg = cfg
            svc.sessions = set()
            if svc.name in self.start_order:
                self.start_order.remove(svc.name)
            self.start_order.append(svc.name)
        self._set(svc, "activating", "start-pre", "success")
        try:
            self._run_control(svc, cfg, cfg.exec_start_pre, cfg.timeout_start, "ExecStartPre")
            if cfg.type == "oneshot":
                self._set(svc, "activating", "start")
                self._run_control(svc, cfg, cfg.exec_start, cfg.timeout_start, "ExecStart")
                self._run_control(svc, cfg, cfg.exec_start_post, cfg.timeout_start, "ExecStartPost")
                if cfg.remain_after_exit:
                    self._set(svc, "active", "exited", "success")
                else:
                    self._set(svc, "inactive", "dead", "success")
                return
            if not cfg.exec_start:
                raise JobFailed(f"Unit {svc.name} has no ExecStart= setting.")
            if cfg.type == "forking":
                self._start_forking(svc, cfg)
            else:
                env = self._environment(cfg, svc)
                try:
                    child = self._spawn(cfg, cfg.exec_start[0], env)
                except OSError as exc:
                    with self.lock:
                        svc.exec_main_status, svc.exec_main_code = 203, "exited"
                    self._log(svc.name, f"Failed to execute {cfg.exec_start[0].line}: {exc}")
                    self._set(svc, "failed", "failed", "exit-code")
                    if cfg.type == "exec":
                        raise JobFailed(
                            f"Job for {svc.name} failed because the service "
                            "process could not be executed."
                        ) from None
                    return
                # Running first: a main process that exits at once (ExecStart=/bin/false)
                # must leave its exit's state (auto-restart, failed), not be overwritten.
                self._set(svc, "active", "running", "success")
                self._track_main(svc, child)
            self._run_control(svc, cfg, cfg.exec_start_post, cfg.timeout_start, "ExecStartPost")
        except JobFailed as exc:
            self._log(svc.name, str(exc))
            self._kill_all(svc, signal.SIGKILL)
            with self.lock:
                svc.main, svc.main_pid = None, 0
            self._set(svc, "failed", "failed", "exit-code")
            raise JobFailed(
                f"Job for {svc.name} failed because the control process exited "
                f"with error code. ({exc})"
            ) from None

    def _start_forking(self, svc: Service, cfg: UnitConfig) -> None:
        before = {pid for pid, _, _, _ in process_table()}
        env = self._environment(cfg, svc)
        try:
            starter = self._spawn(cfg, cfg.exec_start[0], env)
        except OSError as exc:
            raise JobFailed(f"ExecStart could not run: {exc}") from None
        svc.sessions.add(starter.pid)
        code = starter.wait(None if cfg.timeout_start == float("inf") else cfg.timeout_start)
        if code != 0:
            raise JobFailed(f"ExecStart exited with status {code}")
        pid = 0
        if cfg.pid_file:
            for _ in range(50):
                try:
                    with open(cfg.pid_file) as f:
                        pid = int(f.read().split()[0])
                    break
                except (OSError, ValueError, IndexError):
                    time.sleep(0.02)
        if not pid:
            orphans = sorted(
                p for p, ppid, _, _ in process_table() if ppid == 1 and p not in before and p != 1
            )
            pid = orphans[0] if orphans else 0
        if not pid:
            raise JobFailed("could not find the main process of the forking service")
        child = self.reaper.adopt(pid)
        self._set(svc, "active", "running", "success")  # before: see the simple case
        self._track_main(svc, child)

    def _track_main(self, svc: Service, child: Child) -> None:
        with self.lock:
            svc.main, svc.main_pid = child, child.pid
            svc.sessions.add(child.pid)
            with contextlib.suppress(OSError):
                svc.sessions.add(os.getsid(child.pid))
        child.on_exit(lambda c: self._main_exited(svc, c))

    def _main_exited(self, svc: Service, child: Child) -> None:
        code = child.returncode if child.returncode is not None else 0
        with self.lock:
            if svc.main is not child:
                return
            svc.main, svc.main_pid = None, 0
            svc.exec_main_status = -code if code < 0 else code
            svc.exec_main_code = "killed" if code < 0 else "exited"
            if svc.stopping:
                self.changed.notify_all()
                return
            cfg = svc.cfg
            assert cfg is not None
            clean = (
                code == 0
                or code in cfg.success_exit_status
                or code in (-signal.SIGHUP, -signal.SIGINT, -signal.SIGTERM, -signal.SIGPIPE)
            )
            result = "success" if clean else ("signal" if code < 0 else "exit-code")
            restart = {
                "always": True,
                "on-success": clean,
                "on-failure": not clean,
                "on-abnormal": code < 0 and not clean,
                "on-abort": code < 0 and not clean,
                "on-watchdog": False,
            }.get(cfg.restart, False)
            self._log(
                svc.name,
                f"main process exited, status {code} ({result})"
                + ("; scheduling restart" if restart and not self.shutting_down else ""),
            )
            if restart and not self.shutting_down:
                self._set(svc, "activating", "auto-restart", result)
                generation = svc.generation
                timer = threading.Timer(cfg.restart_sec, self._auto_restart, (svc, generation))
                timer.daemon = True
                timer.start()
            else:
                self._set(
                    svc, "inactive" if clean else "failed", "dead" if clean else "failed", result
                )
                threading.Thread(target=self._stop_leftovers, args=(svc, cfg), daemon=True).start()

    def _stop_leftovers(self, svc: Service, cfg: UnitConfig) -> None:
        """What the main process left behind when it exited: killed as KillMode says.
        KillMode=process (or none) leaves it running, as systemd does (guestha's agent
        relies on it: its resources outlive a crash or a restart of the agent)."""
        if cfg.kill_mode in ("none", "process") or not self._unit_pids(svc):
            return
        self._kill_all(svc, cfg.kill_signal)
        self._wait_gone(svc, min(cfg.timeout_stop, 10.0))
        if cfg.send_sigkill:
            self._kill_all(svc, signal.SIGKILL)

    def _auto_restart(self, svc: Service, generation: int) -> None:
        with svc.job_lock:
            with self.lock:
                if svc.generation != generation or svc.sub_state != "auto-restart":
                    return
                svc.n_restarts += 1
            cfg = svc.cfg
            if cfg is not None and cfg.kill_mode not in ("none", "process"):
                self._kill_all(svc, signal.SIGKILL)  # leftovers of the run before
            try:
                self._start_locked(svc, auto=True)
            except JobFailed as exc:
                self._log(svc.name, f"automatic restart failed: {exc}")

    # ---- stop

    def _unit_pids(self, svc: Service) -> list[int]:
        with self.lock:
            sessions = set(svc.sessions)
            main = svc.main_pid
        pids = [pid for pid, _, sid, _ in process_table() if sid in sessions and pid != 1]
        if main and main not in pids and pid_exists(main):
            pids.append(main)
        return pids

    def _kill_all(self, svc: Service, sig: int, main_only: bool = False) -> list[int]:
        pids = [svc.main_pid] if main_only and svc.main_pid else self._unit_pids(svc)
        for pid in pids:
            try:
                os.kill(pid, sig)
                if sig not in (signal.SIGKILL, signal.SIGCONT):
                    os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        return pids

    def _wait_gone(self, svc: Service, timeout: float, main_only: bool = False) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                main_alive = svc.main is not None
            if not main_alive and (main_only or not self._unit_pids(svc)):
                return True
            if time.monotonic() >= deadline:
                return False
            with self.lock:
                self.changed.wait(0.05)

    def stop(self, name: str) -> None:
        svc = self.get(name)
        with svc.job_lock:
            self._stop_locked(svc)

    def _stop_locked(self, svc: Service, timeout_cap: float | None = None) -> None:
        with self.lock:
            svc.generation += 1
            cfg = svc.cfg
            if (
                cfg is None
                or svc.active_state in ("inactive", "failed")
                or (svc.sub_state == "auto-restart")
            ):
                if svc.sub_state == "auto-restart":
                    self._set(svc, "inactive", "dead")
                return
            svc.stopping = True
        timeout = cfg.timeout_stop if timeout_cap is None else min(cfg.timeout_stop, timeout_cap)
        self._set(svc, "deactivating", "stop")
        try:
            try:
                self._run_control(svc, cfg, cfg.exec_stop, timeout, "ExecStop")
            except JobFailed as exc:
                self._log(svc.name, str(exc))
            if cfg.kill_mode != "none":
                self._kill_all(
                    svc, cfg.kill_signal, main_only=cfg.kill_mode in ("process", "mixed")
                )
            # KillMode=process and none: only the main process is waited for (and killed
            # at the timeout); what it started is left running, as systemd leaves it
            keep = cfg.kill_mode in ("process", "none")
            if not self._wait_gone(svc, timeout, keep) and cfg.send_sigkill:
                self._log(svc.name, "stop timed out, killing")
                self._kill_all(svc, signal.SIGKILL, main_only=keep)
                self._wait_gone(svc, 5.0, keep)
            elif cfg.kill_mode == "mixed":
                self._kill_all(svc, signal.SIGKILL)
            try:
                self._run_control(svc, cfg, cfg.exec_stop_post, timeout, "ExecStopPost")
            except JobFailed as exc:
                self._log(svc.name, str(exc))
        finally:
            with self.lock:
                svc.stopping = False
                svc.main, svc.main_pid = None, 0
            self._set(svc, "inactive", "dead", "success")

    def restart(self, name: str) -> None:
        svc = self.get(name)
        with svc.job_lock:
            self._stop_locked(svc)
            self._start_locked(svc, auto=False)

    def reload(self, name: str) -> None:
        svc = self.get(name)
        with svc.job_lock:
            cfg = svc.cfg
            if cfg is None or svc.active_state != "active":
                raise JobFailed(f"Failed to reload {name}: unit not active.")
            if not cfg.exec_reload:
                raise JobFailed(
                    f"Failed to reload {name}: Job type reload is not applicable for unit."
                )
            self._run_control(svc, cfg, cfg.exec_reload, cfg.timeout_start, "ExecReload")

    def kill(self, name: str, sig: int, whom: str) -> None:
        svc = self.get(name)
        pids = self._kill_all(svc, sig, main_only=whom == "main")
        if not pids:
            raise JobFailed(f"Failed to kill unit {name}: No process to kill")

    def shutdown(self, deadline: float) -> None:
        """Stop every service in reverse start order, within the deadline."""
        with self.lock:
            self.shutting_down = True
            order = list(reversed(self.start_order))
        for name in order:
            svc = self.get(name)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not svc.job_lock.acquire(timeout=remaining):
                console(f"stopping {name}: a job on it did not finish in time")
                continue
            try:
                self._stop_locked(svc, timeout_cap=remaining)
            except Exception as exc:
                console(f"stopping {name} failed: {exc!r}")
            finally:
                svc.job_lock.release()
