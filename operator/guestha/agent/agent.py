"""The agent process's parts wired together, and its main loop.

The main loop ticks ten times a second: it sends heartbeats, judges membership and
quorum, starts self-fencing when quorum has been missing for selfFenceTimeoutSeconds, and
pets the watchdog. Heartbeats and petting both come from this loop on purpose: an agent
whose loop hangs falls silent to its peers and stops petting, so its guest is reset.
A tick that comes much later than due means the agent (or the whole guest) was paused;
quorum is then re-checked before anything is acted on (DESIGN.md "Live migration"), with
the pause counted in the bound (guestha.agent.quorum).

Stopping must not defeat fencing. On stop() the loop goes on ticking while it takes the
Failover groups offline (within fencing.offlineTimeoutSeconds); the watchdog is disarmed
only when that finished, else it is closed armed and resets the guest unless an agent
opens it again in time (a restart: systemd's KillMode=process leaves the resources
running, and the new run adopts them). What a restart must not forget (when quorum was
last held, a failed self-fence, a watchdog let go) is in the boot record
(guestha.agent.store.BootRecord).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence

from guestha.agent.api import Api
from guestha.agent.bundles import BundleFiles, check_bundle
from guestha.agent.events import EventLog
from guestha.agent.heartbeat import Heartbeat, PeerSpec
from guestha.agent.http1 import HttpError, Request, Response
from guestha.agent.listener import open_listener
from guestha.agent.quorum import Quorum, recheck_seconds
from guestha.agent.server import ChannelServer, server_context
from guestha.agent.store import BootRecord, Store, StoreError
from guestha.agent.tlsfiles import TlsFiles
from guestha.agent.version import agent_version
from guestha.agent.watchdog import Watchdog
from guestha.protocol import TYPE_CHECKING
from guestha.protocol import events as kinds
from guestha.protocol.bundle import BundleInstalled, BundleStatus, BundleUpload
from guestha.protocol.commands import Command
from guestha.protocol.config import FAILOVER, GroupConfig
from guestha.protocol.constants import EPOCH_HEADER
from guestha.protocol.desired import DesiredConfig, PeerConfig
from guestha.protocol.fields import FieldError
from guestha.protocol.identity import Identity
from guestha.protocol.states import FAILED, FAULTED, FENCED, FENCING, OFFLINE
from guestha.protocol.status import (
    EventCursor,
    GroupStatus,
    Health,
    HeartbeatStatus,
    StatusReport,
)
from guestha.protocol.tls import TlsStatus, TlsUpdate

if TYPE_CHECKING:
    from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)

TICK_SECONDS = 0.1
# After PUT /v1/bundle answered, the main loop goes on this long before it exits for the
# restart, so the answer is on its way first (a lost answer is no harm: the operation's
# result is recorded, and a retry gets it from the next run).
RESTART_GRACE_SECONDS = 0.2

if TYPE_CHECKING:
    Emit = Callable[[str, dict[str, Any]], None]

    class Runner(Protocol):
        """What the agent needs of guestha.agent.groups.GroupRunner."""

        def validate(self, groups: Sequence[GroupConfig]) -> list[str]: ...
        def configure(self, groups: Sequence[GroupConfig]) -> None: ...
        def online(self, group: str) -> None: ...
        def offline(self, group: str) -> None: ...
        def clear(self, group: str) -> None: ...
        def probe(self, group: str) -> None: ...
        def snapshot(self) -> dict[str, Any]: ...
        def take_failover_groups_offline(self, reason: str, timeout: float) -> bool: ...
        def close(self) -> None: ...

    RunnerFactory = Callable[[str, Emit], Runner]


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class Agent:
    """One agent: identity, persistent state, events, groups, heartbeats, quorum, channel."""

    def __init__(self, identity: Identity, runner_factory: RunnerFactory,
                 bundle: BundleFiles | None = None) -> None:
        self.identity = identity
        self.bundle = bundle  # None: not run from a bundle (cannot install one)
        self._bundle_status = bundle.status() if bundle is not None else None
        self._restart_at: float | None = None  # when PUT /v1/bundle asked for a restart
        self.member = identity.member
        self.version = agent_version()
        self.store = Store(identity.state_dir)
        self.incarnation = self.store.next_incarnation()
        self.boot_record = BootRecord(identity.state_dir)
        self._released = ""  # why a run of this boot let the watchdog go ("": none did)
        self.events = EventLog()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.desired = DesiredConfig()
        self.config_error: str | None = None
        now = time.monotonic()
        self.started = now
        self.quorum = Quorum(now)
        self._alive: list[str] = []
        self._fence: _Offline | None = None
        self._stopping: _Offline | None = None
        self._freeze_file = os.environ.get("GUESTHA_AGENT_TEST_FREEZE_FILE", "")
        with open(identity.heartbeat_key_file, "rb") as f:
            key = f.read()
        if not key:
            raise FieldError(f"{identity.heartbeat_key_file}: the heartbeat key is empty")
        self.runner = runner_factory(identity.state_dir, self.emit)
        self.heartbeat = Heartbeat(identity.cluster, identity.member, key,
                                   identity.listen_address, identity.heartbeat_port,
                                   self.incarnation, self._heartbeat_view)
        self.watchdog = Watchdog(identity.watchdog_device, self._watchdog_stopped,
                                 hang_seconds=_env_float("GUESTHA_AGENT_TEST_HANG_SECONDS",
                                                         10.0))
        self.api = Api(self)
        self.tls = TlsFiles(identity.tls_cert, identity.tls_key, identity.tls_ca)
        context = server_context(identity.tls_cert, identity.tls_key, identity.tls_ca)
        listener, self.channel_where = open_listener(identity.transport,
                                                     identity.listen_address, identity.port)
        self.server = ChannelServer(
            identity.listen_address, identity.port, context,
            identity.operator_name, self.api.handle, self.operator_request, listener=listener)

    # -- life cycle

    def start(self) -> None:
        if self.store.config is not None:
            try:
                desired = DesiredConfig.from_dict(self.store.config, self.member,
                                                  self.store.path)
                self._configure(desired)
            except FieldError as e:
                self.config_error = f"the stored configuration was not applied: {e}"
                log.error("%s", self.config_error)
                self.emit(kinds.CONFIG_REJECTED, {"message": self.config_error})
        self._restore()
        self.heartbeat.start()
        self.heartbeat.send_now(ask=True)  # peers learn this run's incarnation at once
        if self._released:
            # An earlier run of this boot let the watchdog go: the guest is due to be reset.
            # Opening the device would start its countdown again (and petting cancel it).
            self.watchdog.keep_released(f"let go by an earlier run of the agent in this "
                                        f"boot: {self._released}")
        else:
            self.watchdog.open()
        if self.watchdog.error:
            self.emit(kinds.WATCHDOG_UNAVAILABLE, {"device": self.identity.watchdog_device,
                                                   "message": self.watchdog.error})
        self.server.start()
        self.emit(kinds.AGENT_STARTED, {"member": self.member, "agentVersion": self.version,
                                        "incarnation": self.incarnation,
                                        "groups": [g.name for g in self.desired.groups]})
        log.info("agent %s/%s %s: channel on %s, heartbeats on %s:%d",
                 self.identity.cluster, self.member, self.version, self.channel_where,
                 *self.heartbeat.address)

    def stop(self) -> None:
        """Asks the main loop to stop: it takes the Failover groups offline first."""
        self._stop.set()

    def _restore(self) -> None:
        """Continues from the runs before this one in the same boot (the boot record)."""
        try:
            saved = self.boot_record.load()
        except StoreError as e:
            log.warning("%s; starting afresh", e)
            saved = None
        if saved is None:
            self._save_boot_record()
            return
        self._released = str(saved.get("watchdogReleased") or "")
        quorum = saved.get("quorum")  # None: the last run stopped with nothing running
        if isinstance(quorum, dict) and isinstance(quorum.get("lastHeld"), (int, float)):
            self.quorum.restore(quorum, time.monotonic())
            log.info("continuing this boot's earlier run: quorum last held %.1f s ago, "
                     "self-fence %s", time.monotonic() - float(quorum["lastHeld"]),
                     self.quorum.state)
        self._save_boot_record()

    def _save_boot_record(self, stopped_clean: bool = False) -> None:
        try:
            self.boot_record.save({"quorum": None if stopped_clean else self.quorum.record(),
                                   "watchdogReleased": self._released})
        except OSError as e:  # the next change tries again; the log says why
            log.error("cannot write the boot record %s: %s", self.boot_record.path, e)

    def reload_tls(self) -> None:
        """Re-reads the certificate, key and CA files (SIGHUP), for new connections."""
        identity = self.identity
        try:
            context = server_context(identity.tls_cert, identity.tls_key, identity.tls_ca)
        except (OSError, ValueError) as e:
            log.error("TLS files not reloaded, the previous ones stay in use: %s", e)
            self.emit(kinds.TLS_RELOAD_FAILED, {"message": str(e)})
            return
        self.server.reload(context)
        served = self.tls.reread()
        log.info("TLS files reloaded")
        self.emit(kinds.TLS_RELOADED, {"source": "files", "notAfter": served.not_after
                                       if served is not None else None})

    def put_tls(self, update: TlsUpdate) -> TlsStatus:
        """PUT /v1/tls: the new certificate, key (and CA) stored in place of the
        identity's files once they load together, and served to new connections; open
        connections keep theirs, groups are not touched. ValueError (naming the body's
        fields) when they do not load: nothing changed."""
        context, served = self.tls.replace(update, server_context)
        self.server.reload(context)
        log.info("TLS certificate replaced over the channel (valid until %s)",
                 served.not_after)
        self.emit(kinds.TLS_RELOADED, {"source": "channel", "notAfter": served.not_after})
        return served

    @property
    def restarting(self) -> bool:
        """run() returned for a restart into a new bundle (not for a stop)."""
        return self._restart_at is not None and self._stopping is None

    def close(self) -> None:
        """After run() (or a failed start): disarms the watchdog only when the stop took
        the Failover groups offline and they still are once the channel is closed (no
        command can start one after that). Then nothing of this run is left to fence, and
        the next run of this boot starts its quorum bound afresh.

        A restart into a new bundle (`restarting`) leaves everything running, as a crash
        would, but on purpose: the resources for the next run to adopt, the watchdog
        armed for it to open again (its countdown, 30 s for KubeVirt's i6300esb, is far
        longer than a restart), and the boot record written last, so the next run
        continues the quorum bound from this moment."""
        self.server.close()
        stopping = self._stopping
        groups_down = (stopping is not None and stopping.result is True
                       and self._failover_groups_down())
        if groups_down:
            self._save_boot_record(stopped_clean=True)
        elif self.restarting:
            self._save_boot_record()
        self.events.close()
        self.heartbeat.close()
        try:
            self.runner.close()
        finally:
            if self.restarting:
                log.info("restarting into the new bundle: resources left running, the "
                         "watchdog left armed for the next run")
            elif not groups_down and self.watchdog.armed:
                log.critical("stopping with the Failover groups perhaps still running: the "
                             "watchdog stays armed, so the guest is reset unless an agent "
                             "opens it again in time")
            self.watchdog.close(disarm=groups_down)

    def run(self) -> None:
        """The main loop, until stop() and the Failover groups are offline (or the time to
        take them offline has run out)."""
        while True:
            now = time.monotonic()
            if self._stop.is_set() and self._stopping is None:
                self._begin_stop(now)
            self._tick(now)
            if self._restart_at is not None and self._stopping is None \
                    and now >= self._restart_at:
                return
            if self._stopping is not None and self._stopping.over(now):
                self._end_stop(now)
                return
            while self._freeze_file and os.path.exists(self._freeze_file):
                time.sleep(0.05)  # test hook: the loop hangs
            time.sleep(max(0.0, TICK_SECONDS - (time.monotonic() - now)))

    def _failover_groups_down(self) -> bool:
        try:
            groups = self.runner.snapshot().get("groups", {})
        except Exception:
            log.exception("snapshot failed")
            return False
        return all(g.get("state") in (OFFLINE, FAULTED) for g in groups.values()
                   if g.get("type") == FAILOVER)

    def _begin_stop(self, now: float) -> None:
        timeout = float(self.desired.fencing.offline_timeout_seconds)
        log.info("stopping: taking the Failover groups offline (at most %g s)", timeout)
        self.emit(kinds.AGENT_STOPPING, {"offlineTimeoutSeconds": timeout})
        self._stopping = _Offline(self.runner, "the agent is stopping", timeout, now)

    def _end_stop(self, now: float) -> None:
        stopping = self._stopping
        assert stopping is not None
        done = stopping.result is True
        took = int((now - stopping.started) * 1000)
        if done:
            log.info("Failover groups offline in %d ms", took)
        else:
            log.error("the Failover groups were not taken offline (%s) in %d ms",
                      "failed" if stopping.result is False else "not finished", took)
        self.emit(kinds.AGENT_STOPPED, {"failoverGroupsOffline": done,
                                        "durationMilliseconds": took,
                                        "watchdog": "none" if not self.watchdog.armed else
                                        ("disarmed" if done else "left armed")})

    def _tick(self, now: float) -> None:
        self.heartbeat.send_due(now)
        alive = self.heartbeat.counted(now)
        for member in sorted(set(alive) - set(self._alive)):
            self.emit(kinds.PEER_UP, {"member": member})
        gone = sorted(set(self._alive) - set(alive))
        if gone:
            # how long ago each was last heard: the operator counts a silence from then,
            # not from when this event reached it (engine/fencing.py)
            ages = {p.member: p.last_heard_milliseconds for p in self.heartbeat.status(now)}
        for member in gone:
            self.emit(kinds.PEER_DOWN, {"member": member,
                                        "lastHeardMilliseconds": ages.get(member)})
        self._alive = alive
        decision = self.quorum.observe(now, tuple(sorted([self.member,
                                                          *self.heartbeat.members()])),
                                       tuple(alive))
        if decision.resumed_after is not None:
            gap = decision.resumed_after
            log.warning("the agent did not run for %.1f s (paused?): re-checking contact", gap)
            self.heartbeat.send_now(ask=True)
            self.emit(kinds.AGENT_RESUMED, {"gapMilliseconds": int(gap * 1000)})
        if decision.persist:
            self._save_boot_record()
        if decision.quorum_changed:
            self.emit(kinds.QUORUM_GAINED if self.quorum.has_quorum else kinds.QUORUM_LOST,
                      {"votes": self.quorum.votes, "present": self.quorum.present,
                       "reason": self.quorum.describe(now)})
        if decision.cleared:
            self.emit(kinds.SELF_FENCE_CLEARED, {"reason": self.quorum.reason})
        if decision.fence:
            self._start_fence(now)
        self._check_fence(now)
        self.watchdog.tick(now)

    # -- self-fencing

    def _start_fence(self, now: float) -> None:
        reason = self.quorum.reason
        timeout = float(self.desired.fencing.offline_timeout_seconds)
        log.warning("self-fencing: %s", reason)
        self.emit(kinds.SELF_FENCING, {"reason": reason, "timeoutSeconds": timeout})
        self._fence = _Offline(self.runner, reason, timeout, now)

    def _check_fence(self, now: float) -> None:
        fence = self._fence
        if self.quorum.state != FENCING or fence is None:
            return
        result = fence.result
        took = int((now - fence.started) * 1000)
        if result is True:
            self.quorum.fence_finished(now, True, f"Failover groups taken offline in "
                                       f"{took} ms: {self.quorum.reason}")
            self._save_boot_record()
            self.emit(kinds.SELF_FENCED, {"reason": self.quorum.reason,
                                          "durationMilliseconds": took})
        elif fence.over(now):
            why = ("taking the Failover groups offline failed" if result is False else
                   "taking the Failover groups offline did not finish in time")
            self.quorum.fence_finished(now, False, f"{why}: {self.quorum.reason}")
            self._save_boot_record()
            self.emit(kinds.SELF_FENCE_FAILED, {"reason": self.quorum.reason,
                                                "durationMilliseconds": took})
            if self.watchdog.armed:
                self.watchdog.stop_petting(why)

    def _watchdog_stopped(self, reason: str) -> None:
        """The watchdog is let go for good (any thread): so it stays for this boot."""
        self._released = reason
        self._save_boot_record()
        self.emit(kinds.WATCHDOG_STOPPED, {"reason": reason,
                                           "device": self.identity.watchdog_device,
                                           "armed": self.watchdog.armed})

    # -- what the channel calls

    def emit(self, kind: str, payload: dict[str, Any]) -> None:
        self.events.emit(kind, payload)

    def operator_request(self, request: Request, arrived: float) -> None:
        """Called by the channel server for each authenticated request, before it is
        handled, with the moment (monotonic) its first byte arrived.

        The request is the operator's contact (its quorum vote) only when it carries the
        operator's epoch in the Guestha-Epoch header and that epoch is at least the
        highest this agent has recorded: an operator deposed by a newer one still holds a
        valid certificate, and must not keep an isolated agent quorate. It counts from its
        arrival, so a long-poll gives no more than the lease from when it was sent.
        """
        raw = request.headers.get(EPOCH_HEADER.lower())
        if raw is None:
            return
        if not (raw.isdigit() and raw.isascii() and len(raw) <= 19):
            raise HttpError(400, f"header {EPOCH_HEADER}: must be the operator's epoch, an "
                            f"integer >= 0, got {raw[:30]!r}", "Invalid")
        if int(raw) >= self.store.epoch:
            self.quorum.operator_contact(arrived)

    def operator_lease(self) -> float:
        return float(self.desired.fencing.operator_lease_seconds)

    def _configure(self, desired: DesiredConfig) -> None:
        with self._lock:
            self.runner.configure(desired.groups)
            self.desired = desired
            self.heartbeat.configure(
                [self._peer_spec(p) for p in desired.peers],
                desired.heartbeat.interval_milliseconds / 1000,
                desired.heartbeat.peer_timeout_milliseconds / 1000)
            interval = desired.heartbeat.interval_milliseconds / 1000
            self.quorum.configure(float(desired.fencing.operator_lease_seconds),
                                  float(desired.fencing.self_fence_timeout_seconds),
                                  recheck_seconds(interval))
            self.config_error = None

    def _peer_spec(self, peer: PeerConfig) -> PeerSpec:
        return PeerSpec(peer.member, peer.address, peer.port or self.identity.heartbeat_port,
                        peer.heartbeat_key, peer.accept_keys)

    def apply_config(self, desired: DesiredConfig, raw: dict[str, Any]) -> None:
        """Validates, saves, then applies a new desired configuration. FieldError when it
        is invalid, SaveError when it could not be saved: nothing is applied then."""
        with self._lock:
            if self._restart_at is not None:
                raise ValueError("the agent is restarting into a new bundle: put the "
                                 "configuration to its next run")
            errors = self.runner.validate(desired.groups)
            if errors:
                raise FieldError("; ".join(errors))
            self.store.set_config(raw)
            self._configure(desired)
        self.emit(kinds.CONFIG_APPLIED, {"groups": [g.name for g in desired.groups],
                                         "peers": [p.member for p in desired.peers]})

    def group_action(self, group: str, action: str, command: Command,
                     reason: str | None) -> Response:
        config = self.desired.group(group)
        if config is None:
            raise HttpError(404, f"group {group!r} is not configured on this agent "
                            f"(configured: {', '.join(g.name for g in self.desired.groups)})",
                            "GroupNotFound")
        if self._restart_at is not None:
            raise HttpError(409, "the agent is restarting into a new bundle: ask its next "
                            "run", "Restarting")
        if action == "online" and config.type == FAILOVER:
            state = self.quorum.state
            if state in (FENCING, FENCED, FAILED):
                raise HttpError(409, f"this agent has self-fenced ({state}): "
                                f"{self.quorum.reason}", "SelfFenced")
            if not self.quorum.has_quorum:
                raise HttpError(409, f"this agent has no quorum: "
                                f"{self.quorum.describe(time.monotonic())}", "NoQuorum")
            if self.desired.fencing.watchdog and not self.watchdog.status().petting:
                raise HttpError(409, self._watchdog_refusal(), "WatchdogNotArmed")
        call = {"online": self.runner.online, "offline": self.runner.offline,
                "clear": self.runner.clear, "probe": self.runner.probe}[action]
        try:
            call(group)
        except KeyError as e:
            raise HttpError(404, f"group {group!r}: {e}", "GroupNotFound") from e
        except ValueError as e:  # the runner's GroupError carries a code
            if getattr(e, "code", "") == "NotFound":
                raise HttpError(404, f"{action}: {e}", "GroupNotFound") from e
            raise HttpError(409, f"{action}: {e}", str(getattr(e, "code", "") or "Conflict")
                            ) from e
        self.emit(kinds.COMMAND_APPLIED, {"group": group, "action": action,
                                          "operationId": command.operation_id,
                                          "epoch": command.epoch, "reason": reason or ""})
        snapshot = self.runner.snapshot().get("groups", {}).get(group, {})
        return Response(200, {"group": group, "action": action, "accepted": True,
                              "operationId": command.operation_id, "epoch": command.epoch,
                              "state": snapshot.get("state")})

    def install_bundle(self, upload: BundleUpload, command: Command) -> Response:
        """PUT /v1/bundle: checks the bundle, writes it as the trial and restarts into it
        (guestha.agent.bundles). The same version as this agent's: nothing to do."""
        if upload.version == self.version:
            return Response(200, BundleInstalled(command.operation_id, command.epoch,
                                                 upload.version, self.version,
                                                 False).to_dict())
        if self.bundle is None:
            raise HttpError(409, "this agent does not run from a bundle (a source tree?): "
                            "it cannot install one", "NotFromBundle")
        try:
            check_bundle(upload.data, upload.version)
        except ValueError as e:
            raise HttpError(400, f"body.bundle: {e}", "Invalid") from e
        with self._lock:
            if self._stop.is_set() or self._restart_at is not None:
                raise HttpError(409, "the agent is stopping or restarting already",
                                "Conflict")
            try:
                self.bundle.install(upload.data, upload.version, self.version,
                                    command.operation_id)
            except ValueError as e:
                raise HttpError(409, str(e), "Conflict") from e
            # SaveError goes up: 503 StateNotSaved, nothing kept, retry allowed
            self._bundle_status = BundleStatus(self.bundle.runs, None)
            self._restart_at = time.monotonic() + RESTART_GRACE_SECONDS
        log.info("restarting into bundle %s (from %s) for operation %s", upload.version,
                 self.version, command.operation_id)
        return Response(200, BundleInstalled(command.operation_id, command.epoch,
                                             upload.version, self.version, True).to_dict())

    def _watchdog_refusal(self) -> str:
        """Why a Failover group may not go online here while fencing.watchdog is true."""
        status = self.watchdog.status()
        if not self.identity.watchdog_device:
            why = "this agent has no watchdog device (watchdogDevice in its identity file)"
        elif status.error:
            why = f"the watchdog is not armed: {status.error}"
        elif status.stopped_reason:
            why = f"the watchdog is no longer petted: {status.stopped_reason}"
        else:
            why = "the watchdog is not armed"
        return (f"fencing.watchdog is true but {why}: a Failover group goes online only "
                f"where a hung agent is reset by its watchdog")

    # -- status

    def _heartbeat_view(self) -> dict[str, Any]:
        return {"alive": list(self._alive), "hasQuorum": self.quorum.has_quorum,
                "selfFence": self.quorum.state}

    def config_document(self) -> dict[str, Any]:
        return {"epoch": self.store.epoch, "config": self.store.config,
                "error": self.config_error}

    def health(self) -> Health:
        return Health(self.member, self.version, self.quorum.state,
                      self.watchdog.status().petting)

    def _groups(self) -> tuple[dict[str, GroupStatus], str | None]:
        """The runner's groups, and why they could not be read (None: they could)."""
        try:
            groups = self.runner.snapshot().get("groups", {})
            return {name: GroupStatus.from_dict(g, f"groups[{name}]")
                    for name, g in groups.items()}, None
        except Exception as e:  # status must answer even when the runner is broken
            log.exception("snapshot failed")
            return {}, f"{type(e).__name__}: {e}"

    def status(self) -> StatusReport:
        now, wall = time.monotonic(), time.time()
        groups, groups_error = self._groups()
        quorum, self_fence = self.quorum.status(now, wall)
        heartbeat = self.desired.heartbeat
        return StatusReport(
            cluster=self.identity.cluster, member=self.member,
            agent_version=self.version, incarnation=self.incarnation,
            hostname=socket.gethostname(), uptime_seconds=round(now - self.started, 3),
            epoch=self.store.epoch, config_error=self.config_error,
            groups=groups, groups_error=groups_error,
            peers=tuple(self.heartbeat.status(now)),
            quorum=quorum, self_fence=self_fence,
            watchdog=self.watchdog.status(),
            events=EventCursor(self.events.stream, self.events.last_seq),
            heartbeat=HeartbeatStatus(heartbeat.interval_milliseconds,
                                      heartbeat.peer_timeout_milliseconds,
                                      self.heartbeat.keys, dict(self.heartbeat.counters)),
            channel={**self.server.counters, **self.server.connection_counts()},
            bundle=self._bundle_status or BundleStatus(None, None),
            tls=self.tls.served,
        )


class _Offline:
    """Taking the Failover groups offline, on a thread of its own (self-fencing, or a
    stop): the main loop goes on ticking, and petting the watchdog, meanwhile."""

    def __init__(self, runner: Runner, reason: str, timeout: float, now: float) -> None:
        self.started = now
        self.deadline = now + timeout + 1.0
        self.result: bool | None = None  # True: all offline; False: failed; None: running

        def run() -> None:
            try:
                ok = runner.take_failover_groups_offline(reason, timeout)
            except Exception:
                log.exception("taking the Failover groups offline failed")
                ok = False
            self.result = ok

        threading.Thread(target=run, name="failover-offline", daemon=True).start()

    def over(self, now: float) -> bool:
        return self.result is not None or now > self.deadline
