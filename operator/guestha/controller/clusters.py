"""kopf handlers for InGuestCluster: one supervisor per cluster, for as long as it exists.

Thin by design: kopf's indexes hold what the API shows (VMs and VMIs here, the rest in
controller.indexes), the daemon runs the cluster's ClusterSupervisor, which reads them
through `_snapshot`, and a change of anything the supervisor reads wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf

from guestha.channel.aio import (
    AsyncAgentClient,
    AsyncNetworkTransport,
    AsyncVsockTransport,
    Member,
)
from guestha.controller import (
    api,
    credentials,
    departure,
    heartbeatkeys,
    indexes,
    injection,
    leader,
    links,
    nodeleases,
    outputs,
    release,
    rotation,
)
from guestha.controller.observe import GroupFacts
from guestha.controller.supervisor import ClusterSupervisor, Snapshot
from guestha.controller.wakeups import WAKEUPS
from guestha.kubevirt import members
from guestha.model.cluster import ClusterSpec

GROUP, VERSION = "guestha.io", "v1alpha1"
SUPERVISING: set[tuple[str, str]] = set()  # (namespace, name) of supervisors running
DAEMON_EXIT_SECONDS = 15.0  # kopf cancels a stopped daemon after 10 s
ADMITTED_AT_ONCE = 24  # supervisors in their first passes at a time
_ADMISSION: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = \
    weakref.WeakKeyDictionary()


def _admission() -> asyncio.Semaphore:
    """The running loop's admission of supervisors (one per loop: a semaphore belongs to
    the loop it first waits on)."""
    return _ADMISSION.setdefault(asyncio.get_running_loop(),
                                 asyncio.Semaphore(ADMITTED_AT_ONCE))
log = logging.getLogger(__name__)


@kopf.index("kubevirt.io", "v1", "virtualmachines")
def vm_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """VMs by (namespace, name): labels (memberSelector) and Template mode's facts."""
    WAKEUPS.notify(namespace or "", vm=name)
    return {(namespace, name): members.vm_entry(body)}


@kopf.index("kubevirt.io", "v1", "virtualmachineinstances")
def vmi_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """VMIs by (namespace, name): uid, deletion mark, injection annotation and status."""
    WAKEUPS.notify(namespace or "", vm=name)
    return {(namespace, name): members.vmi_entry(body)}


@dataclass
class Interest:
    """The VMs a cluster's supervisor reads (its members and members leaving), as its last
    snapshot found them; every VM of the namespace before that, or with a memberSelector."""

    names: frozenset[str] = frozenset()
    everything: bool = True

    def wants(self, vm: str) -> bool:
        return self.everything or vm in self.names


def _snapshot(namespace: str, name: str, body: kopf.Body, ix: dict[str, Any],
              interest: Interest | None = None) -> Snapshot:
    spec = dict(body.get("spec") or {})
    parsed = ClusterSpec.from_body(spec)
    vm_ix, vmi_ix = ix["vm_index"], ix["vmi_index"]
    # labels only for a selector: a scan of every VM of every namespace per pass is what
    # 500 clusters cannot afford
    labels = {} if parsed.selector is None else {
        vm: (indexes.first(vm_ix, (ns, vm)) or {}).get("metadata", {}).get("labels") or {}
        for ns, vm in vm_ix if ns == namespace}
    views = [members.observe(m, indexes.first(vm_ix, (namespace, m)) if (namespace, m) in vm_ix
                             else None, indexes.first(vmi_ix, (namespace, m)))
             for m in parsed.member_names(labels)]
    leaving = departure.leaving_names(body.get("status") or {}, {v.name for v in views}, ())
    departing = [members.observe(m, indexes.first(vm_ix, (namespace, m))
                                 if (namespace, m) in vm_ix else None,
                                 indexes.first(vmi_ix, (namespace, m))) for m in leaving]
    group_bodies = {g["metadata"]["name"]: g for g in ix["sg_index"].get((namespace, name), ())}
    groups = [GroupFacts(n, g["spec"], g["status"], g["metadata"]["annotations"],
                         generation=int(g["metadata"].get("generation") or 0))
              for n, g in sorted(group_bodies.items())]
    switchover_bodies = {s["metadata"]["name"]: s for g in group_bodies
                         for s in ix["switchover_index"].get((namespace, g), ())}
    switchovers = [(n, s["spec"], s["status"]) for n, s in sorted(switchover_bodies.items())]
    nodes = {n: outputs.node_alive(indexes.first(ix["node_index"], n), nodeleases.lease(n))
             for n in {v.node for v in [*views, *departing] if v.node}}
    if interest is not None:
        interest.names = frozenset(v.name for v in [*views, *departing])
        interest.everything = parsed.selector is not None
    return Snapshot(dict(body), views, groups, group_bodies, switchovers, switchover_bodies,
                    nodes, departing)


async def _supervise(ns: str, name: str, body: kopf.Body, kwargs: dict[str, Any],
                     stopped: Callable[[], bool],
                     creds: credentials.ClusterCredentials,
                     admitted: Callable[[], None] | None = None) -> ClusterSupervisor:
    """Runs the cluster's supervisor until `stopped` (or, for a deleted cluster, until its
    members left and its finalizer went); returns it. `admitted` is called once its first
    passes are done (ClusterSupervisor.run)."""
    spec = dict(body.get("spec") or {})
    transport = links.transport_for(spec, creds.ssl_context(), api.kube_access)
    ix = {k: kwargs[k] for k in ("vm_index", "vmi_index", "sg_index", "switchover_index",
                                 "node_index")}

    def client(member: Member) -> AsyncAgentClient:
        return AsyncAgentClient(member, transport, leader.epoch, timeout=links.COMMAND_TIMEOUT,
                                idle_close=links.IDLE_CLOSE_SECONDS)

    def use(context: ssl.SSLContext) -> None:  # a renewed operator certificate
        if isinstance(transport, (AsyncNetworkTransport, AsyncVsockTransport)):
            transport.context = context

    interest = Interest()
    supervisor = ClusterSupervisor(
        ns, name, lambda: _snapshot(ns, name, body, ix, interest),
        outputs.KubeOutputs(ns, ix["vmi_index"], ix["node_index"]),
        client, links.channel_port(spec), creds.heartbeat_key, leader.is_leader, leader.epoch,
        departures=departure.Departures(ns, name, _release(ns, name, body).api()),
        renewals=rotation.Rotation(ns, name, creds, lambda: credentials.cluster_credentials(
            ns, name, body), use),
        heartbeat_keys=heartbeatkeys.HeartbeatKeys(
            ns, name, creds.heartbeat_key, creds.heartbeat_next, heartbeatkeys.KeyStore(
                lambda: asyncio.to_thread(credentials.begin_heartbeat_rotation, ns, name, body),
                lambda upcoming: asyncio.to_thread(credentials.finish_heartbeat_rotation, ns,
                                                   name, body, upcoming))))
    SUPERVISING.add((ns, name))
    try:
        with WAKEUPS.subscribe(ns, name, interest.wants) as changed:
            async def forward() -> None:
                while True:
                    await changed.wait()
                    changed.clear()
                    supervisor.wake()

            forwarder = asyncio.create_task(forward())
            try:
                await supervisor.run(stopped, admitted)
            finally:
                forwarder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await forwarder
    finally:
        SUPERVISING.discard((ns, name))
    return supervisor


def _release(ns: str, name: str, body: kopf.Body) -> release.ClusterRelease:
    return release.ClusterRelease(ns, name, str((body.get("metadata") or {}).get("uid") or ""))


@kopf.daemon(GROUP, VERSION, "inguestclusters", cancellation_timeout=10.0)
async def cluster_supervisor(namespace: str | None, name: str, body: kopf.Body,
                             stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
    """The cluster's supervisor (controller.supervisor), woken by every change it reads.

    Started a few at a time (ADMISSION): at 500 clusters kopf starts every daemon at
    once, and 500 first passes together (CA Secrets, TLS contexts, 1,500 links dialled,
    1,500 configurations pushed) held the event loop for tens of seconds. Each holds its
    place until its first passes are done (its agents answered or failed, their
    configurations pushed), at most supervisor.ADMISSION_SECONDS."""
    ns = namespace or ""
    try:  # first, not behind the admission: the member VMIs created next need the label
        await injection.label_namespace(ns)
    except Exception as e:  # the next daemon of the namespace (or start) tries again
        log.warning("%s: namespace not labelled for injection: %s", ns, e)
    admission = _admission()
    await admission.acquire()
    held = True

    def admitted() -> None:
        nonlocal held
        if held:
            held = False
            admission.release()
    try:
        creds = await credentials.cluster_credentials(ns, name, body)
        await _supervise(ns, name, body, kwargs, lambda: bool(stopped), creds, admitted)
    finally:
        admitted()


@kopf.on.delete(GROUP, VERSION, "inguestclusters")
async def cluster_deleted(namespace: str | None, name: str, body: kopf.Body,
                          **kwargs: Any) -> None:
    """A deleted cluster's members leave before it goes (controller.departure): kopf
    stops the cluster's daemon, and a supervisor runs here for the departure alone, on
    the leader (the others retry, in case they become it), until every member has left
    and the finalizer went. Here rather than in the daemon: kopf gives a stopped daemon a
    fixed grace and re-checks it only when that grace ends, and it starts no daemon at all
    for a cluster already being deleted (an operator that started in the middle)."""
    ns = namespace or ""
    deadline = asyncio.get_running_loop().time() + DAEMON_EXIT_SECONDS
    while (ns, name) in SUPERVISING and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)  # the daemon's supervisor ends its pass and exits
    if (ns, name) in SUPERVISING:
        raise kopf.TemporaryError("the cluster's supervisor has not stopped yet", delay=1)
    releasing = _release(ns, name, body)
    if not await releasing.holds_finalizer():
        return
    if not leader.is_leader():
        raise kopf.TemporaryError("the leader lets the members go", delay=5)
    creds = await credentials.existing_credentials(ns, name, body)
    if creds is None:
        # its CA Secret went first (its namespace is being deleted): no agent can be
        # reached, and nothing may be created there; the namespace takes the rest
        kopf.warn(body, reason=departure.EVENT_NOT_WAITED_FOR,
                  message="the cluster's CA Secret is gone: its agents cannot be told to "
                  "stop their groups; not waited for")
        if not await releasing.remove_finalizer():
            raise kopf.TemporaryError("the finalizer could not be removed", delay=5)
        return
    supervisor = await _supervise(ns, name, body, kwargs, lambda: not leader.is_leader(),
                                  creds)
    if not supervisor.departures.finished:
        raise kopf.TemporaryError("the members have not all left yet", delay=5)
