"""One active operator (DESIGN.md safety rule 2): a coordination.k8s.io/v1 Lease elector.

Two replicas run; the one holding the Lease acts, the other waits. The rules that make
"never two leaders" hold, in the order a reader would question them:

- Every write is an update guarded by the Lease's resourceVersion (optimistic
  concurrency): of two electors that saw the same free or expired Lease, only one write
  succeeds; the other gets 409 and reads again.
- A candidate takes a held Lease only after watching the SAME record (resourceVersion)
  unchanged for leaseDurationSeconds on its own monotonic clock, as client-go's elector
  does: no comparison of two machines' clocks.
- The leader counts its deadline from the moment it SENT its last successful renewal:
  deadline = sent + lease_seconds - margin. Any other candidate saw that renewal later than
  it was sent, so it cannot take over before sent + lease_seconds: the leader steps down
  (is_leader False, on_change callbacks) at its deadline, a margin earlier, whether its
  renewals were refused (RBAC removed, the Lease edited under it), hang (each is bounded by
  the deadline) or the event loop was late (`is_leader` checks the deadline itself).
- A renewal refused because someone else wrote the Lease (409) is read back: if another
  identity holds it now, or its transitions changed, the leader steps down at once.

Epoch: the Lease's spec.leaseTransitions after this elector acquired it. Every
acquisition (a Lease created with 1, a free, expired or released Lease taken) increments
it through a resourceVersion-guarded write, so each new leadership has a higher epoch than
every earlier one. The operator sends it as its epoch to the agents (docs/agent-api.md:
`epoch` in commands, `Guestha-Epoch` on every request), which refuse an older one: a
deposed operator that still talks is refused by every agent that heard its successor.
Deleting the Lease would reset the count, and agents would refuse the new leader's lower
epoch (409 StaleEpoch) for ever: so an acquisition never goes below `epoch_floor`, the
highest epoch any earlier leader wrote where it outlives the Lease (the InGuestClusters'
status.epoch, controller/leader.py); a floor that cannot be read fails the acquisition,
which is tried again.

The Kubernetes calls run through guestha.kubevirt.kubeapi, a timeout on each, on threads
of the elector's own (CALL_THREADS), not in the process's default executor: there a
renewal queues behind every other call of the process, and hack/bench/run operatorscale
saw a burst of 500 status writes hold it past its deadline; the leader stepped down, its
next epoch changed every cluster's status, and the next burst held the next renewal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from guestha.kubevirt import kubeapi

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "guestha-system"
DEFAULT_LEASE_NAME = "guestha-operator"
LEASE_SECONDS = 15
RENEW_SECONDS = 5.0
# threads for the elector's calls: one call at a time, and one more for a call whose caller
# gave up (its wait timed out) while its request still runs to its own timeout
CALL_THREADS = 2
MARGIN_SECONDS = 2.0  # the leader stops acting this long before another may take over
RETRY_SECONDS = 1.0  # a failed renewal is retried this often until the deadline

Callback = Callable[[bool, int], None]  # (is_leader, epoch)


def default_namespace() -> str:
    """The operator pod's namespace (POD_NAMESPACE, from the downward API), where its Lease
    lives; DEFAULT_NAMESPACE outside a pod."""
    return os.environ.get("POD_NAMESPACE") or DEFAULT_NAMESPACE


def default_identity() -> str:
    """The pod's name (POD_NAME, from the downward API) or hostname-pid."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def micro_time(epoch: float) -> str:
    """metav1.MicroTime, as a Lease's acquireTime and renewTime carry it."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(frozen=True)
class LeaseState:
    """The fields of a Lease the election reads."""

    holder: str  # "" when nobody holds it (released, or never taken)
    duration: int
    transitions: int
    resource_version: str

    @classmethod
    def from_object(cls, lease: Mapping[str, Any]) -> LeaseState:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=int(spec.get("leaseDurationSeconds") or 0),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str((lease.get("metadata") or {}).get("resourceVersion") or ""),
        )


CREATE, TAKE, WAIT = "Create", "Take", "Wait"


def acquire_decision(
    state: LeaseState | None, observed_at: float, now: float, lease_seconds: int
) -> tuple[str, float]:
    """What a candidate does next, and how long until it looks again (for WAIT).

    No Lease: CREATE. Nobody holds it: TAKE. Held: TAKE once the record seen at
    `observed_at` (this candidate's monotonic clock; reset whenever resourceVersion
    changes) stayed unchanged for the longer of its leaseDurationSeconds and our own
    lease_seconds; WAIT until then. A Lease naming this candidate's own identity is
    treated the same: a restarted process is not the leader that wrote it.
    """
    if state is None:
        return CREATE, 0.0
    if not state.holder:
        return TAKE, 0.0
    expires = observed_at + max(state.duration, lease_seconds)
    if now >= expires:
        return TAKE, 0.0
    return WAIT, expires - now


def renewal_deadline(sent: float, lease_seconds: int, margin: float) -> float:
    """When a leader whose last successful write was sent at `sent` must stop acting."""
    return sent + lease_seconds - margin


class Elector:
    """Lease-based leader election; see the module docstring.

    run() elects for as long as it runs (cancel it to stop; cancelling does NOT release
    the Lease, as a crash would not); release(), after run() was cancelled, steps down and
    frees the Lease at a clean shutdown so that the other replica takes over at once.
    """

    def __init__(
        self,
        namespace: str | None = None,
        name: str = DEFAULT_LEASE_NAME,
        identity: str | None = None,
        lease_seconds: int = LEASE_SECONDS,
        renew_seconds: float = RENEW_SECONDS,
        *,
        margin: float = MARGIN_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        client: Any = None,
        epoch_floor: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        if not isinstance(lease_seconds, int) or lease_seconds < 1:
            raise ValueError(f"lease_seconds: a whole number of seconds >= 1, got "
                             f"{lease_seconds!r}")
        if not 0 < renew_seconds < lease_seconds - margin:
            raise ValueError(f"renew_seconds: must be above 0 and below lease_seconds - "
                             f"margin ({lease_seconds} - {margin}), got {renew_seconds}")
        self.namespace = namespace or default_namespace()
        self.name = name
        self.identity = identity or default_identity()
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.margin = margin
        self.retry_seconds = retry_seconds
        self.client = client
        self._floor = epoch_floor
        self._leading = False
        self._deadline = 0.0
        self._epoch = 0
        self._lease: dict[str, Any] | None = None  # as last stored by us
        self._seen: tuple[str, float] | None = None  # (resourceVersion, when first seen)
        self._callbacks: list[Callback] = []
        self._leader_event = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            CALL_THREADS, thread_name_prefix="guestha-lease")

    # --- what callers read ---------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        """True only while leading AND before the deadline, even if the loop is late."""
        return self._leading and time.monotonic() < self._deadline

    @property
    def epoch(self) -> int:
        """The Lease's leaseTransitions after this elector last acquired it (0: never)."""
        return self._epoch

    def on_change(self, callback: Callback) -> None:
        """Call `callback(is_leader, epoch)` on the event loop at each change. It must not
        block: schedule work with asyncio.create_task."""
        self._callbacks.append(callback)

    async def wait_leader(self) -> None:
        """Return once this elector leads."""
        while not self.is_leader:
            await self._leader_event.wait()
            if not self.is_leader:  # set, but past the deadline: the loop steps down soon
                await asyncio.sleep(0.01)

    # --- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # a cancellation swallowed on the way
            if self._leading:
                await self._renew()
            else:
                await self._campaign()

    async def release(self) -> None:
        """Step down and free the Lease (holderIdentity cleared, transitions kept), if this
        elector holds it; a failure to free it is logged (the Lease then expires)."""
        was = self._leading
        self._step_down("released")
        if not was or self._lease is None:
            return
        lease: Mapping[str, Any] | None = self._lease
        for _ in range(3):
            assert lease is not None
            freed = dict(lease)
            freed["spec"] = {k: v for k, v in (lease.get("spec") or {}).items()
                             if k not in ("holderIdentity", "acquireTime", "renewTime")}
            try:
                await self._call("PUT", self._path(), freed, timeout=self.retry_seconds * 2)
                log.info("lease %s/%s released by %s", self.namespace, self.name,
                         self.identity)
                return
            except kubeapi.ApiError as exc:
                if not exc.conflict:
                    log.warning("lease %s/%s: release failed (%s); it expires by itself",
                                self.namespace, self.name, exc)
                    return
            # 409: our own renewal stored after we last read it (a renewal cancelled in
            # flight still reaches the apiserver), or someone else took it: read again,
            # and free it only while it is still ours from this acquisition
            try:
                lease = await self._call("GET", self._path(), timeout=self.retry_seconds * 2)
            except kubeapi.ApiError as exc:
                log.warning("lease %s/%s: release failed (%s); it expires by itself",
                            self.namespace, self.name, exc)
                return
            state = LeaseState.from_object(lease)
            if state.holder != self.identity or state.transitions != self._epoch:
                return  # not ours any more: nothing to free
        log.warning("lease %s/%s: release kept conflicting; it expires by itself",
                    self.namespace, self.name)

    # --- steps ---------------------------------------------------------------------------
    def _path(self, named: bool = True) -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        return f"{base}/{self.name}" if named else base

    async def _call(self, method: str, path: str, body: Any = None,
                    timeout: float = kubeapi.DEFAULT_TIMEOUT) -> Any:
        timeout = max(timeout, 0.05)
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation
            # that lands as the call completes, and the elector then ran on for ever after
            # the operator's shutdown cancelled it (a test hung past 600 s)
            async with asyncio.timeout(timeout):
                return await kubeapi.call(method, path, body, client=self.client,
                                          timeout=timeout, executor=self._executor)
        except TimeoutError:
            raise kubeapi.ApiError(0, "Timeout", f"{method} {path}: no answer in "
                                                 f"{timeout:.1f}s") from None

    def _spec(self, transitions: int, acquire: bool, old: Mapping[str, Any]) -> dict[str, Any]:
        now = micro_time(time.time())
        spec = dict(old)
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=self.lease_seconds,
                    leaseTransitions=transitions, renewTime=now)
        if acquire:
            spec["acquireTime"] = now
        return spec

    async def _campaign(self) -> None:
        try:
            current = await self._call("GET", self._path(), timeout=self.retry_seconds * 2)
        except kubeapi.ApiError as exc:
            if not exc.not_found:
                log.debug("lease %s/%s: %s", self.namespace, self.name, exc)
                await asyncio.sleep(self.retry_seconds)
                return
            current = None
        now = time.monotonic()
        state = LeaseState.from_object(current) if current is not None else None
        if state is not None and (self._seen is None or self._seen[0] != state.resource_version):
            self._seen = (state.resource_version, now)
        decision, wait = acquire_decision(state, self._seen[1] if self._seen else now, now,
                                          self.lease_seconds)
        if decision == WAIT:
            await asyncio.sleep(min(wait, self.retry_seconds))
            return
        try:
            floor = await self._floor() if self._floor is not None else 0
        except Exception as exc:  # not knowing the floor, do not risk a stale epoch
            log.warning("lease %s/%s: the epoch floor could not be read: %s", self.namespace,
                        self.name, exc)
            await asyncio.sleep(self.retry_seconds)
            return
        sent = time.monotonic()
        try:
            if decision == CREATE:
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": self._spec(max(0, floor) + 1, True, {})}
                stored = await self._call("POST", self._path(named=False), body,
                                          timeout=self.retry_seconds * 2)
            else:
                assert current is not None and state is not None
                body = dict(current)
                body["spec"] = self._spec(max(state.transitions, floor) + 1, True,
                                          current.get("spec") or {})
                stored = await self._call("PUT", self._path(), body,
                                          timeout=self.retry_seconds * 2)
        except kubeapi.ApiError as exc:
            if not exc.conflict:  # 409: another candidate won; read again at once
                log.debug("lease %s/%s: acquiring failed: %s", self.namespace, self.name, exc)
                await asyncio.sleep(self.retry_seconds)
            return
        self._lease = stored
        self._epoch = LeaseState.from_object(stored).transitions
        self._deadline = renewal_deadline(sent, self.lease_seconds, self.margin)
        self._leading = True
        self._leader_event.set()
        log.info("lease %s/%s acquired by %s: epoch %d", self.namespace, self.name,
                 self.identity, self._epoch)
        self._notify()

    async def _renew(self) -> None:
        await self._sleep_until(min(time.monotonic() + self.renew_seconds, self._deadline))
        while self._leading:
            sent = time.monotonic()
            if sent >= self._deadline:
                self._step_down("could not renew before its deadline")
                return
            assert self._lease is not None
            body = dict(self._lease)
            body["spec"] = self._spec(self._epoch, False, self._lease.get("spec") or {})
            try:
                self._lease = await self._call("PUT", self._path(), body,
                                               timeout=self._deadline - sent)
                self._deadline = renewal_deadline(sent, self.lease_seconds, self.margin)
                return
            except kubeapi.ApiError as exc:
                if exc.conflict and await self._still_ours():
                    continue
                if exc.conflict:
                    self._step_down("the Lease was written by someone else")
                    return
                log.warning("lease %s/%s: renewal failed: %s", self.namespace, self.name, exc)
                await self._sleep_until(min(time.monotonic() + self.retry_seconds,
                                            self._deadline))

    async def _still_ours(self) -> bool:
        """After a 409: whether the Lease still names us with our epoch (then adopt it)."""
        try:
            current = await self._call("GET", self._path(),
                                       timeout=self._deadline - time.monotonic())
        except kubeapi.ApiError:
            return False
        state = LeaseState.from_object(current)
        if state.holder == self.identity and state.transitions == self._epoch:
            self._lease = current
            return True
        return False

    @staticmethod
    async def _sleep_until(when: float) -> None:
        await asyncio.sleep(max(0.0, when - time.monotonic()))

    def _step_down(self, why: str) -> None:
        if not self._leading:
            return
        self._leading = False
        self._leader_event.clear()
        self._seen = None  # a candidate again: wait a whole lease from now
        log.warning("lease %s/%s: %s steps down (epoch %d): %s", self.namespace, self.name,
                    self.identity, self._epoch, why)
        self._notify()

    def _notify(self) -> None:
        leading = self._leading
        for callback in list(self._callbacks):
            try:
                callback(leading, self._epoch)
            except Exception:
                log.exception("lease %s/%s: an on_change callback failed", self.namespace,
                              self.name)
