"""The agent process's parts wired together, and its main loop.

The main loop ticks ten times a second: it sends heartbeats, judges membership and
quorum, starts self-fencing when quorum has been missing for selfFenceTimeoutSeconds, and
pets the watchdog. Heartbeats and petting both come from this loop on purpose: an agent
whose loop hangs falls silent to its peers and stops petting, so its guest is reset.
A tick that comes much later than due means the agent (or the whole guest) was paused;
quorum is then re-checked before anything is acted on (DESIGN.md "Live migration").
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable, Protocol

from guestha.agent.api import Api
from guestha.agent.config import ConfigError, GroupConfig, Identity
from guestha.agent.desired import Command, DesiredConfig, PeerConfig
from guestha.agent.events import EventLog
from guestha.agent.heartbeat import Heartbeat, PeerSpec
from guestha.agent.http1 import HttpError, Request, Response
from guestha.agent.listener import open_listener
from guestha.agent.quorum import FAILED, FENCED, FENCING, Quorum
from guestha.agent.server import ChannelServer, server_context
from guestha.agent.store import Store
from guestha.agent.version import agent_version
from guestha.agent.watchdog import Watchdog

log = logging.getLogger(__name__)

EPOCH_HEADER = "Guestha-Epoch"  # the operator's epoch on every request (its vote)
TICK_SECONDS = 0.1
GAP_SECONDS = 1.5  # a tick this late means the agent was paused
Emit = Callable[[str, dict[str, Any]], None]


class Runner(Protocol):
    """What the agent needs of guestha.agent.groups.GroupRunner."""

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

    def __init__(self, identity: Identity, runner_factory: RunnerFactory) -> None:
        self.identity = identity
        self.member = identity.member
        self.version = agent_version()
        self.store = Store(identity.state_dir)
        self.incarnation = self.store.next_incarnation()
        self.events = EventLog()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.desired = DesiredConfig()
        self.config_error: str | None = None
        now = time.monotonic()
        self.started = now
        self.quorum = Quorum(now)
        self._alive: list[str] = []
        self._fence_thread: threading.Thread | None = None
        self._fence_deadline = 0.0
        self._fence_started = 0.0
        self._fence_result: bool | None = None
        self._freeze_file = os.environ.get("GUESTHA_AGENT_TEST_FREEZE_FILE", "")
        with open(identity.heartbeat_key_file, "rb") as f:
            key = f.read()
        if not key:
            raise ConfigError(f"{identity.heartbeat_key_file}: the heartbeat key is empty")
        self.runner = runner_factory(identity.state_dir, self.emit)
        self.heartbeat = Heartbeat(identity.cluster, identity.member, key,
                                   identity.listen_address, identity.heartbeat_port,
                                   self.incarnation, self._heartbeat_view)
        self.watchdog = Watchdog(identity.watchdog_device, self._watchdog_stopped,
                                 hang_seconds=_env_float("GUESTHA_AGENT_TEST_HANG_SECONDS",
                                                         10.0))
        self.api = Api(self)
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
            except ConfigError as e:
                self.config_error = f"the stored configuration was not applied: {e}"
                log.error("%s", self.config_error)
                self.emit("ConfigRejected", {"message": self.config_error})
        self.heartbeat.start()
        self.watchdog.open()
        if self.watchdog.error:
            self.emit("WatchdogUnavailable", {"device": self.identity.watchdog_device,
                                              "message": self.watchdog.error})
        self.server.start()
        self.emit("AgentStarted", {"member": self.member, "agentVersion": self.version,
                                   "incarnation": self.incarnation,
                                   "groups": [g.name for g in self.desired.groups]})
        log.info("agent %s/%s %s: channel on %s, heartbeats on %s:%d",
                 self.identity.cluster, self.member, self.version, self.channel_where,
                 *self.heartbeat.address)

    def stop(self) -> None:
        self._stop.set()

    def reload_tls(self) -> None:
        """Re-reads the certificate, key and CA files (SIGHUP), for new connections."""
        identity = self.identity
        try:
            context = server_context(identity.tls_cert, identity.tls_key, identity.tls_ca)
        except (OSError, ValueError) as e:
            log.error("TLS files not reloaded, the previous ones stay in use: %s", e)
            self.emit("TLSReloadFailed", {"message": str(e)})
            return
        self.server.reload(context)
        log.info("TLS files reloaded")
        self.emit("TLSReloaded", {})

    def close(self) -> None:
        self.server.close()
        self.events.close()
        self.heartbeat.close()
        try:
            self.runner.close()
        finally:
            self.watchdog.close(disarm=True)

    def run(self) -> None:
        """The main loop, until stop()."""
        last = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last > GAP_SECONDS:
                self._resumed(now, now - last)
            self._tick(now)
            last = time.monotonic()
            while self._freeze_file and os.path.exists(self._freeze_file):
                time.sleep(0.05)  # test hook: the loop hangs
            self._stop.wait(max(0.0, TICK_SECONDS - (time.monotonic() - now)))

    def _resumed(self, now: float, gap: float) -> None:
        log.warning("the agent did not run for %.1f s (paused?): re-checking contact", gap)
        self.quorum.resumed(now, gap)
        self.heartbeat.send_now(ask=True)
        self.emit("AgentResumed", {"gapMilliseconds": int(gap * 1000)})

    def _tick(self, now: float) -> None:
        self.heartbeat.send_due(now)
        alive = self.heartbeat.alive(now)
        for member in sorted(set(alive) - set(self._alive)):
            self.emit("PeerUp", {"member": member})
        for member in sorted(set(self._alive) - set(alive)):
            self.emit("PeerDown", {"member": member})
        self._alive = alive
        decision = self.quorum.observe(now, sorted([self.member, *self.heartbeat.members()]),
                                       alive)
        if decision.quorum_changed:
            self.emit("QuorumGained" if self.quorum.has_quorum else "QuorumLost",
                      {"votes": self.quorum.votes, "present": self.quorum.present,
                       "reason": self.quorum.describe(now)})
        if decision.cleared:
            self.emit("SelfFenceCleared", {"reason": self.quorum.reason})
        if decision.fence:
            self._start_fence(now)
        self._check_fence(now)
        self.watchdog.tick(now)

    # -- self-fencing

    def _start_fence(self, now: float) -> None:
        reason = self.quorum.reason
        timeout = float(self.desired.fencing.offline_timeout_seconds)
        log.warning("self-fencing: %s", reason)
        self.emit("SelfFencing", {"reason": reason, "timeoutSeconds": timeout})
        self._fence_started = now
        self._fence_deadline = now + timeout + 1.0
        self._fence_result = None

        def fence() -> None:
            try:
                ok = self.runner.take_failover_groups_offline(reason, timeout)
            except Exception:
                log.exception("self-fencing failed")
                ok = False
            self._fence_result = ok

        self._fence_thread = threading.Thread(target=fence, name="self-fence", daemon=True)
        self._fence_thread.start()

    def _check_fence(self, now: float) -> None:
        if self.quorum.state != FENCING:
            return
        result = self._fence_result
        took = int((now - self._fence_started) * 1000)
        if result is True:
            self.quorum.fence_finished(now, True, f"Failover groups taken offline in "
                                       f"{took} ms: {self.quorum.reason}")
            self.emit("SelfFenced", {"reason": self.quorum.reason, "durationMilliseconds": took})
        elif result is False or now > self._fence_deadline:
            why = ("taking the Failover groups offline failed" if result is False else
                   "taking the Failover groups offline did not finish in time")
            self.quorum.fence_finished(now, False, f"{why}: {self.quorum.reason}")
            self.emit("SelfFenceFailed", {"reason": self.quorum.reason,
                                          "durationMilliseconds": took})
            if self.watchdog.armed:
                self.watchdog.stop_petting(why)

    def _watchdog_stopped(self, reason: str) -> None:
        self.emit("WatchdogStopped", {"reason": reason, "device": self.identity.watchdog_device,
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
                                  max(1.0, 3 * interval))
            self.config_error = None

    def _peer_spec(self, peer: PeerConfig) -> PeerSpec:
        return PeerSpec(peer.member, peer.address, peer.port or self.identity.heartbeat_port)

    def apply_config(self, desired: DesiredConfig, raw: dict[str, Any]) -> None:
        """Applies and persists a new desired configuration (ConfigError when invalid)."""
        with self._lock:
            self._configure(desired)
            self.store.set_config(raw)
        self.emit("ConfigApplied", {"groups": [g.name for g in desired.groups],
                                    "peers": [p.member for p in desired.peers]})

    def group_action(self, group: str, action: str, command: Command,
                     reason: str | None) -> Response:
        config = self.desired.group(group)
        if config is None:
            raise HttpError(404, f"group {group!r} is not configured on this agent "
                            f"(configured: {', '.join(g.name for g in self.desired.groups)})",
                            "GroupNotFound")
        if action == "online" and config.type == "Failover":
            state = self.quorum.state
            if state in (FENCING, FENCED, FAILED):
                raise HttpError(409, f"this agent has self-fenced ({state}): "
                                f"{self.quorum.reason}", "SelfFenced")
            if not self.quorum.has_quorum:
                raise HttpError(409, f"this agent has no quorum: "
                                f"{self.quorum.describe(time.monotonic())}", "NoQuorum")
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
        self.emit("CommandApplied", {"group": group, "action": action,
                                     "operationId": command.operation_id,
                                     "epoch": command.epoch, "reason": reason or ""})
        snapshot = self.runner.snapshot().get("groups", {}).get(group, {})
        return Response(200, {"group": group, "action": action, "accepted": True,
                              "operationId": command.operation_id, "epoch": command.epoch,
                              "state": snapshot.get("state")})

    # -- status

    def _heartbeat_view(self) -> dict[str, Any]:
        return {"alive": list(self._alive), "hasQuorum": self.quorum.has_quorum,
                "selfFence": self.quorum.state}

    def config_document(self) -> dict[str, Any]:
        return {"epoch": self.store.epoch, "config": self.store.config,
                "error": self.config_error}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "member": self.member, "agentVersion": self.version,
                "selfFence": self.quorum.state, "watchdogPetting":
                self.watchdog.status()["petting"]}

    def status(self) -> dict[str, Any]:
        now, wall = time.monotonic(), time.time()
        try:
            groups = self.runner.snapshot().get("groups", {})
        except Exception as e:  # status must answer even when the runner is broken
            log.exception("snapshot failed")
            groups = {"error": str(e)}
        quorum = self.quorum.status(now, wall)
        return {
            "cluster": self.identity.cluster, "member": self.member,
            "agentVersion": self.version, "incarnation": self.incarnation,
            "hostname": socket.gethostname(), "uptimeSeconds": round(now - self.started, 3),
            "epoch": self.store.epoch, "configError": self.config_error,
            "groups": groups,
            "peers": self.heartbeat.status(now),
            "quorum": quorum["quorum"], "selfFence": quorum["selfFence"],
            "watchdog": self.watchdog.status(),
            "events": {"stream": self.events.stream, "lastSeq": self.events.last_seq},
            "heartbeat": {"intervalMilliseconds": self.desired.heartbeat.interval_milliseconds,
                          "peerTimeoutMilliseconds":
                          self.desired.heartbeat.peer_timeout_milliseconds,
                          "counters": dict(self.heartbeat.counters)},
            "channel": {**self.server.counters, **self.server.connection_counts()},
        }
