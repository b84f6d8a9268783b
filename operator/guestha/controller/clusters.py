"""kopf handlers for InGuestCluster: one supervisor per cluster, for as long as it exists.

Thin by design: kopf's indexes hold what the API shows (VMs and VMIs here, the rest in
controller.indexes), the daemon runs the cluster's ClusterSupervisor, which reads them
through `_snapshot`, and a change of anything the supervisor reads wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kopf

from guestha.channel.aio import AsyncAgentClient, Member
from guestha.controller import api, credentials, indexes, leader, links, nodeleases, outputs
from guestha.controller.observe import GroupFacts
from guestha.controller.supervisor import ClusterSupervisor, Snapshot
from guestha.controller.wakeups import WAKEUPS
from guestha.kubevirt import members
from guestha.model.cluster import ClusterSpec

GROUP, VERSION = "guestha.io", "v1alpha1"


@kopf.index("kubevirt.io", "v1", "virtualmachines")
def vm_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """VMs by (namespace, name): labels (memberSelector) and Template mode's facts."""
    WAKEUPS.notify(namespace or "")
    return {(namespace, name): members.vm_entry(body)}


@kopf.index("kubevirt.io", "v1", "virtualmachineinstances")
def vmi_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """VMIs by (namespace, name): uid, deletion mark, injection annotation and status."""
    WAKEUPS.notify(namespace or "")
    return {(namespace, name): members.vmi_entry(body)}


@kopf.on.update(GROUP, VERSION, "inguestclusters", field="spec")
def cluster_changed(namespace: str | None, **_: Any) -> None:
    """A new spec (members, settings): the supervisor looks again at once."""
    WAKEUPS.notify(namespace or "")


def _snapshot(namespace: str, name: str, body: kopf.Body, ix: dict[str, Any]) -> Snapshot:
    spec = dict(body.get("spec") or {})
    parsed = ClusterSpec.from_body(spec)
    vm_ix, vmi_ix = ix["vm_index"], ix["vmi_index"]
    labels = {vm: (indexes.first(vm_ix, (ns, vm)) or {}).get("metadata", {}).get("labels") or {}
              for ns, vm in vm_ix if ns == namespace}
    views = [members.observe(m, indexes.first(vm_ix, (namespace, m)) if (namespace, m) in vm_ix
                             else None, indexes.first(vmi_ix, (namespace, m)))
             for m in parsed.member_names(labels)]
    group_bodies = {g["metadata"]["name"]: g for g in ix["sg_index"].get((namespace, name), ())}
    groups = [GroupFacts(n, g["spec"], g["status"], g["metadata"]["annotations"],
                         generation=int(g["metadata"].get("generation") or 0))
              for n, g in sorted(group_bodies.items())]
    switchover_bodies = {s["metadata"]["name"]: s for g in group_bodies
                         for s in ix["switchover_index"].get((namespace, g), ())}
    switchovers = [(n, s["spec"], s["status"]) for n, s in sorted(switchover_bodies.items())]
    nodes = {n: outputs.node_alive(indexes.first(ix["node_index"], n), nodeleases.lease(n))
             for n in {v.node for v in views if v.node}}
    return Snapshot(dict(body), views, groups, group_bodies, switchovers, switchover_bodies,
                    nodes)


@kopf.daemon(GROUP, VERSION, "inguestclusters", cancellation_timeout=10.0)
async def cluster_supervisor(namespace: str | None, name: str, body: kopf.Body,
                             stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
    """The cluster's supervisor (controller.supervisor), woken by every change it reads."""
    ns = namespace or ""
    creds = await credentials.cluster_credentials(ns, name, body)
    spec = dict(body.get("spec") or {})
    transport = links.transport_for(spec, creds.ssl_context(), api.kube_access)
    ix = {k: kwargs[k] for k in ("vm_index", "vmi_index", "sg_index", "switchover_index",
                                 "node_index")}

    def client(member: Member) -> AsyncAgentClient:
        return AsyncAgentClient(member, transport, leader.epoch, timeout=links.COMMAND_TIMEOUT)

    supervisor = ClusterSupervisor(
        ns, name, lambda: _snapshot(ns, name, body, ix),
        outputs.KubeOutputs(ns, ix["vmi_index"], ix["node_index"]),
        client, links.channel_port(spec), creds.heartbeat_key, leader.is_leader, leader.epoch)
    with WAKEUPS.subscribe(ns) as changed:
        async def forward() -> None:
            while True:
                await changed.wait()
                changed.clear()
                supervisor.wake()

        forwarder = asyncio.create_task(forward())
        try:
            await supervisor.run(lambda: bool(stopped))
        finally:
            forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forwarder
