"""The agent's own bundle in the guest: installing a newer one, trying it, rolling it back.

The unit's ExecStart names one path, the *stable* bundle (recipe.GuestPaths.bundle). An
upgrade never overwrites it first. PUT /v1/bundle writes the new zipapp beside it as a
*trial* (`STABLE.trial-VERSION`, atomically) and a trial marker in the state folder,
then the agent exits with RESTART_EXIT_CODE; its service manager starts the stable bundle
again (Restart=always), whose first step is `launch` (before any socket or the watchdog
is opened):

- a marker whose trial was started fewer than MAX_TRIAL_STARTS times: the count is
  raised (saved first) and the process execs the trial (same pid, same unit);
- a marker whose trial was started that often and never came up: *rollback*. The trial
  and the marker are removed, the rollback is recorded (ROLLBACK_FILE: the operator reads
  it in status.bundle.rollback) and the stable bundle runs on;
- no marker: leftover trial files are removed and the stable bundle runs.

A trial has *come up* once its agent started (identity and state read, resources
adopted, channel listening, heartbeats sent: `Agent.start` returned); it then commits
itself: the stable bundle is copied to `STABLE.previous`, the trial's bytes replace the
stable bundle (atomically), the marker goes. So whatever the trial does before that (a
crash at import, a bad identity parser, a port it cannot bind), the stable bundle
restores the previous agent after at most MAX_TRIAL_STARTS starts, and the code that
decides it is the previous agent's, never the trial's. A running process's zipapp is
never replaced under it: zipimport reopens its archive by path for lazy reads, so the
trial runs from its own file and the stable path is rewritten only by a process that
does not run from it.

KillMode=process keeps the resources running across all these starts; each run adopts
them (guestha.agent.groups). The unit must not give up restarting a crashing trial:
StartLimitIntervalSec=0 (recipe.unit).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import time
from dataclasses import dataclass

import guestha.agent
from guestha.agent.store import SaveError, write_atomically
from guestha.agent.version import VERSION_FILE
from guestha.protocol import TYPE_CHECKING
from guestha.protocol.bundle import BundleStatus, Rollback

if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger(__name__)

TRIAL_INFIX = ".trial-"
PREVIOUS_SUFFIX = ".previous"
TRIAL_FILE = "bundle-trial.json"
ROLLBACK_FILE = "bundle-rollback.json"
MAX_TRIAL_STARTS = 2  # starts of a trial before it is rolled back
RESTART_EXIT_CODE = 75  # the agent exits with this to be started again (EX_TEMPFAIL)

# What `launch` does (a pure function of what it finds: `launch_step`).
RUN = "run"  # run this bundle
TRY = "try"  # count a start of the trial and exec it
ROLLBACK = "rollback"  # the trial never came up: remove it, record why, run this bundle
ABANDON = "abandon"  # a marker whose trial file is gone: drop it, run this bundle


def launch_step(marker: dict[str, Any] | None, trial_exists: bool, running_trial: bool,
                max_starts: int = MAX_TRIAL_STARTS) -> str:
    """What a starting agent does with the trial marker it finds. `running_trial`: this
    process is the trial (the launcher exec'd it): it runs, and commits once it is up."""
    if running_trial or marker is None:
        return RUN
    if not trial_exists:
        return ABANDON
    starts = marker.get("starts")
    if not isinstance(starts, int) or starts < 0 or starts >= max_starts:
        return ROLLBACK
    return TRY


def running_archive() -> str | None:
    """The zipapp this agent was imported from (None: a source tree)."""
    archive = getattr(getattr(guestha.agent, "__loader__", None), "archive", None)
    return os.path.abspath(archive) if isinstance(archive, str) else None


def check_bundle(data: bytes, version: str) -> None:
    """ValueError unless `data` is an agent zipapp of `version`: a zip whose entries
    read back intact, with __main__.py, the agent's main module, and
    guestha/agent/VERSION saying `version`."""
    import zipfile  # with shutil, bz2, lzma: loaded only for an upload (memory)

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            for needed in ("__main__.py", "guestha/agent/main.py",
                           f"guestha/agent/{VERSION_FILE}"):
                if needed not in names:
                    raise ValueError(f"not an agent bundle: {needed} is missing")
            bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"damaged bundle: {bad} does not read back")
            inside = archive.read(f"guestha/agent/{VERSION_FILE}").decode("ascii").strip()
    except (zipfile.BadZipFile, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"not an agent bundle: {e}") from e
    if inside != version:
        raise ValueError(f"the bundle is version {inside!r}, not {version!r}")


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            raw = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.error("%s: unreadable, ignored: %s", path, e)
        return {}
    return raw if isinstance(raw, dict) else {}


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class BundleFiles:
    """The bundle files of one guest: `stable` (the unit's ExecStart path), the one this
    process `runs` from (stable, or a trial of it), and the state folder's markers."""

    stable: str
    runs: str
    state_dir: str

    @classmethod
    def of_running(cls, state_dir: str) -> BundleFiles | None:
        """This process's bundle files; None when it does not run from a bundle."""
        runs = running_archive()
        if runs is None:
            return None
        base = os.path.basename(runs)
        stable = runs
        if TRIAL_INFIX in base:
            stable = os.path.join(os.path.dirname(runs), base.split(TRIAL_INFIX, 1)[0])
        return cls(stable, runs, state_dir)

    @property
    def is_trial(self) -> bool:
        return self.runs != self.stable

    @property
    def marker_path(self) -> str:
        return os.path.join(self.state_dir, TRIAL_FILE)

    @property
    def rollback_path(self) -> str:
        return os.path.join(self.state_dir, ROLLBACK_FILE)

    def trial_path(self, version: str) -> str:
        return f"{self.stable}{TRIAL_INFIX}{version}"

    # -- installing (PUT /v1/bundle)

    def install(self, data: bytes, version: str, running_version: str,
                operation_id: str) -> None:
        """Writes the trial and its marker (SaveError: nothing is kept). The caller then
        restarts the agent. The rollback of an earlier trial is forgotten: this is a new
        try, and its outcome is what status will tell."""
        trial = self.trial_path(version)
        if trial == self.runs:
            raise ValueError(f"this agent runs from {trial} already, as a trial not yet "
                             f"committed")
        marker = {"version": version, "sha256": hashlib.sha256(data).hexdigest(),
                  "path": trial, "previousVersion": running_version, "starts": 0,
                  "operationId": operation_id, "time": _now_iso()}
        try:
            write_atomically(trial, data, 0o755)
            write_atomically(self.marker_path,
                             json.dumps(marker, sort_keys=True).encode("utf-8"))
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(trial)
            raise SaveError(f"the bundle could not be installed as {trial}: "
                            f"{e.strerror or e}") from e
        with contextlib.suppress(OSError):
            os.unlink(self.rollback_path)
        log.info("bundle %s written as %s; restarting into it", version, trial)

    # -- starting (before anything else runs)

    def launch(self, argv: list[str]) -> None:
        """The first step of a start (see the module docstring): may exec the trial (and
        not return), roll it back, or do nothing."""
        marker = _read_json(self.marker_path)
        trial = str((marker or {}).get("path") or "")
        step = launch_step(marker, bool(trial) and os.path.isfile(trial), self.is_trial)
        if step == RUN:
            if not self.is_trial:
                self._remove_leftovers(keep=None)
            return
        assert marker is not None
        if step == ABANDON:
            log.warning("trial marker without its bundle %s: dropped", trial or "(none)")
            self._drop(self.marker_path)
            return
        version = str(marker.get("version"))
        if step == ROLLBACK:
            reason = (f"the trial bundle {version} did not come up in "
                      f"{marker.get('starts')} start(s); {marker.get('previousVersion')} "
                      f"restored")
            log.error("%s", reason)
            try:
                write_atomically(self.rollback_path, json.dumps(
                    Rollback(version, reason, _now_iso()).to_dict()).encode("utf-8"))
            except OSError as e:
                log.error("cannot record the rollback in %s: %s", self.rollback_path, e)
            self._drop(self.marker_path)
            self._remove_leftovers(keep=None)
            return
        marker["starts"] = int(marker["starts"]) + 1
        try:
            write_atomically(self.marker_path,
                             json.dumps(marker, sort_keys=True).encode("utf-8"))
        except OSError as e:  # not counted means it could be tried for ever: do not
            log.error("cannot count the trial's start in %s (%s): running %s", self.marker_path,
                      e, self.runs)
            return
        log.info("starting the trial bundle %s (start %d of %d)", trial, marker["starts"],
                 MAX_TRIAL_STARTS)
        logging.shutdown()
        os.execv(sys.executable, [sys.executable, trial, *argv])

    def commit(self, version: str) -> None:
        """The trial came up: it becomes the stable bundle (the old one kept as
        STABLE.previous) and its marker goes. A failure is logged: the trial keeps
        running, and the next start rolls it back or tries it again."""
        if not self.is_trial:
            return
        marker = _read_json(self.marker_path)
        if not marker or marker.get("path") != self.runs:
            log.warning("running the trial %s without its marker: not committed", self.runs)
            return
        try:
            with open(self.stable, "rb") as f:
                old = f.read()
            with open(self.runs, "rb") as f:
                new = f.read()
            write_atomically(self.stable + PREVIOUS_SUFFIX, old, 0o755)
            write_atomically(self.stable, new, 0o755)
        except OSError as e:
            log.error("the trial %s could not be made the stable bundle: %s", self.runs, e)
            return
        self._drop(self.marker_path)
        log.info("bundle %s committed: %s (the previous one kept as %s)", version,
                 self.stable, self.stable + PREVIOUS_SUFFIX)

    def _remove_leftovers(self, keep: str | None) -> None:
        # os.listdir, not glob: glob (with fnmatch) would stay in the agent's memory.
        folder, base = os.path.split(self.stable)
        try:
            names = os.listdir(folder or ".")
        except OSError:
            return
        for name in names:
            path = os.path.join(folder, name)
            if name.startswith(base + TRIAL_INFIX) and path not in (keep, self.runs):
                self._drop(path)

    @staticmethod
    def _drop(path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            try:
                os.unlink(path)
            except OSError as e:
                log.error("cannot remove %s: %s", path, e)

    # -- status

    def status(self) -> BundleStatus:
        raw = _read_json(self.rollback_path)
        rollback = None
        if raw:
            try:
                rollback = Rollback.from_dict(raw, self.rollback_path)
            except ValueError as e:
                log.error("%s", e)
        return BundleStatus(self.runs, rollback)
