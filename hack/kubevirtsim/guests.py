"""The guests this simulator has booted: virt-handler's view of its nodes' domains.

One record per VMI uid (not per name: after a force deletion a new VMI of the same name
can run while the old guest still does). Each record watches its guest host and reports
its exit, as libvirt's domain events reach virt-handler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubevirtsim.agentpoller import AgentPoller, AgentView
from kubevirtsim.guesthost import GuestHost, GuestSpec

log = logging.getLogger(__name__)


@dataclass
class Guest:
    """One booted guest host and what happened to it."""

    spec: GuestSpec
    host: GuestHost
    booted_at: float = field(default_factory=time.monotonic)
    exit_code: int | None = None
    exited: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False  # a power-off was started
    graceful: bool = False  # the power-off ended within its grace period
    powered_off: threading.Event = field(default_factory=threading.Event)  # power-off done
    agent: AgentPoller | None = None  # its guest agent, polled beside the VMI's reconcile

    def agent_view(self) -> AgentView:
        """The guest agent as last polled (never waits on the guest)."""
        return self.agent.view() if self.agent is not None else AgentView()

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def uid(self) -> str:
        return self.spec.uid

    @property
    def node(self) -> str:
        return self.spec.node

    def alive(self) -> bool:
        """True until the guest's exit is recorded with its status, as virt-handler learns
        of a domain's end from libvirt's event, which carries the reason.

        Not the host's own `alive()`: that turns False the moment the guest's PID 1 is
        gone, while its network is still being released and its status is not known yet.
        Read then, a clean power-off (status 0) looked like a crash (no status): the VMI
        went Failed instead of Succeeded, and a RerunOnFailure VM started it again.
        """
        return not self.exited.is_set()


class Guests:
    """Guests by VMI uid; `on_change(key)` is called when one exits."""

    def __init__(self, state_dir: Path, on_change: Callable[[str], None]) -> None:
        self.state_dir = state_dir
        self.on_change = on_change
        self._guests: dict[str, Guest] = {}
        self._lock = threading.Lock()

    def get(self, uid: str) -> Guest | None:
        with self._lock:
            return self._guests.get(uid)

    def by_key(self, key: str) -> list[Guest]:
        with self._lock:
            return [g for g in self._guests.values() if g.key == key]

    def on_node(self, node: str) -> list[Guest]:
        with self._lock:
            return [g for g in self._guests.values() if g.node == node]

    def all(self) -> list[Guest]:
        with self._lock:
            return list(self._guests.values())

    def count_on(self, node: str) -> int:
        with self._lock:
            return sum(1 for g in self._guests.values() if g.node == node and not g.exited.is_set())

    def boot(self, spec: GuestSpec) -> Guest:
        """Boot a guest for a VMI uid once; a second call returns the same guest."""
        with self._lock:
            existing = self._guests.get(spec.uid)
            if existing is not None:
                return existing
            host = GuestHost(spec, self.state_dir)
            guest = Guest(spec, host)
            self._guests[spec.uid] = guest
        try:
            host.boot()
        except Exception:
            with self._lock:
                self._guests.pop(spec.uid, None)
            try:
                host.kill()
            except Exception:
                log.exception("guest %s: kill after a failed boot failed", spec.key)
            raise
        threading.Thread(
            target=self._wait, args=(guest,), name=f"guest-{spec.uid[:8]}", daemon=True
        ).start()
        guest.agent = AgentPoller(
            spec.uid[:8], host, guest.exited, lambda: self.on_change(spec.key)
        )
        guest.agent.start()
        log.info("guest %s (%s) booted on %s at %s", spec.key, spec.uid, spec.node, host.address)
        return guest

    def _wait(self, guest: Guest) -> None:
        try:
            code = guest.host.wait_exit(None)
        except Exception:
            log.exception("guest %s: wait_exit failed", guest.key)
            code = None
        guest.exit_code = code
        guest.exited.set()
        log.info("guest %s (%s) on %s exited (%s)", guest.key, guest.uid, guest.node, code)
        if not guest.stopping:  # a power-off reports when it is done (graceful or not)
            self.on_change(guest.key)

    def power_off(self, guest: Guest, grace: float) -> None:
        """Shut a guest down in the background (graceful within grace, then killed)."""
        if guest.stopping:
            return
        guest.stopping = True

        def run() -> None:
            started = time.monotonic()
            try:
                if grace <= 0:
                    guest.host.kill()
                else:
                    guest.host.shutdown(grace)
            except Exception:
                log.exception("guest %s: shutdown failed; killing it", guest.key)
                try:
                    guest.host.kill()
                except Exception:
                    log.exception("guest %s: kill failed", guest.key)
            guest.graceful = grace > 0 and time.monotonic() - started < grace
            guest.exited.wait(10)
            guest.powered_off.set()
            self.on_change(guest.key)

        threading.Thread(target=run, name=f"poweroff-{guest.uid[:8]}", daemon=True).start()

    def kill(self, guest: Guest) -> None:
        """Power a guest off at once and wait until it is gone."""
        guest.stopping = True
        try:
            guest.host.kill()
        except Exception:
            log.exception("guest %s: kill failed", guest.key)
        guest.exited.wait(10)
        guest.powered_off.set()

    def forget(self, uid: str) -> None:
        with self._lock:
            self._guests.pop(uid, None)

    def kill_all(self) -> None:
        """Power off every guest (the simulator is stopping), in parallel."""
        threads = [threading.Thread(target=self.kill, args=(g,), daemon=True) for g in self.all()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        with self._lock:
            self._guests.clear()
