"""The guest agent's state of each guest, polled beside the VMI's reconcile, never in it.

In KubeVirt, virt-launcher polls qemu-guest-agent in goroutines of its own and virt-handler
reads the outcome from its domain cache: a guest whose agent hangs never holds up its VMI's
reconcile. The simulator used to ping the agent inside the VMI's reconcile, with a 1 s
timeout: a frozen guest's VMI key was busy pinging most of the time, so the deletion that
fences it waited up to a second behind a ping (the operator's hang failovers were measured
a second slower than the guest's stop takes). Here one thread per guest polls, keeps the
latest `AgentView` and wakes the VMI's key only when the view changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Until the agent answers, look often (a boot's AgentConnected should not lag); once it
# does, as KubeVirt's agent poller refreshes its guest info, every few seconds.
POLL_SECONDS = 0.5
POLL_CONNECTED_SECONDS = 5.0
# guest-get-osinfo's fields that KubeVirt copies into status.guestOSInfo (camelCase there)
OS_INFO_FIELDS = (
    "id",
    "kernelRelease",
    "kernelVersion",
    "machine",
    "name",
    "prettyName",
    "version",
    "versionId",
)


class AgentHost(Protocol):
    """What the poller needs of a guest host (GuestHost has it)."""

    def agent_connected(self) -> bool: ...

    def guest_info(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class AgentView:
    """The guest agent as last polled: whether it answered, and the guest's OS info."""

    connected: bool = False
    os_info: Mapping[str, str] = field(default_factory=dict)


def camel(name: str) -> str:
    """qemu-guest-agent's kernel-release -> KubeVirt's kernelRelease."""
    head, *rest = name.split("-")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def os_info(info: Mapping[str, Any]) -> dict[str, str]:
    """status.guestOSInfo from guest_info()'s answer (its `os`, or the answer itself)."""
    nested = info.get("os")
    found: Mapping[str, Any] = nested if isinstance(nested, dict) else info
    by_name = {camel(k): v for k, v in found.items()}
    return {f: str(by_name[f]) for f in OS_INFO_FIELDS if by_name.get(f) not in (None, "")}


class AgentPoller:
    """Polls one guest's agent until `gone` is set; `view()` never waits on the guest."""

    def __init__(
        self,
        name: str,
        host: AgentHost,
        gone: threading.Event,
        on_change: Callable[[], None],
    ) -> None:
        self.name = name
        self.host = host
        self.gone = gone
        self.on_change = on_change
        self._view = AgentView()
        self._lock = threading.Lock()  # guards _view only; nothing is called under it
        self._thread: threading.Thread | None = None

    def view(self) -> AgentView:
        with self._lock:
            return self._view

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"agent-{self.name}", daemon=True)
        self._thread.start()

    def poll(self) -> bool:
        """One look at the agent; True when the view changed (and on_change was called)."""
        connected = False
        try:
            connected = self.host.agent_connected()
        except Exception:
            log.debug("guest %s: agent ping failed", self.name, exc_info=True)
        info: Mapping[str, str] = {}
        if connected:
            try:
                info = os_info(self.host.guest_info())
            except Exception:
                log.debug("guest %s: guest_info failed", self.name, exc_info=True)
                info = self.view().os_info  # keep what it said last time
        view = AgentView(connected, info)
        with self._lock:
            changed = view != self._view
            self._view = view
        if changed:
            self.on_change()
        return changed

    def _run(self) -> None:
        while not self.gone.is_set():
            self.poll()
            interval = POLL_CONNECTED_SECONDS if self.view().connected else POLL_SECONDS
            if self.gone.wait(interval):
                return
