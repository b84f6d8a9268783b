"""Template mode's reconcile: member VMs' templates carry guestha's agent while they are
members of a cluster in Template mode, and lose it when they leave.

For clusters without admission webhooks (spec.injection.mode Template). One kopf daemon per
InGuestCluster, woken like the supervisor by every VM and VMI change of its namespace
(controller.wakeups), acting only while this replica leads (safety rule 2). A pass reads
kopf's VM index (controller.clusters: each VM's labels, its Template-mode record, whether
its template is injected) and touches only the VMs that need it, so a settled cluster
costs no API call:
- a member that is not injected, or injected for another plan, is injected: the user's
  template (guestha.kubevirt.template.restore) gets the webhook's change, its user-data is
  merged into the per-member Secret exactly as the webhook does it
  (guestha.controller.userdata, the Secret written first), then the VM is patched with a
  JSON patch guarded by its resourceVersion (field manager `guestha`);
- a VM that this cluster injected and that is no longer its member (removed from
  spec.members, no longer matched by memberSelector, or the cluster switched back to
  Webhook mode) gets back the template it had (`undo`).
The first pass after the daemon starts looks at every member in full (its Secret too).

A running VM whose template was injected keeps running without the agent until it
restarts: KubeVirt marks it RestartRequired, the cluster status says so per member
(guestha.kubevirt.members.restart_required) and an Event says it once, when the
template is patched. The operator never restarts a VM itself: when a guest restarts is
the owner's call.

When the cluster is deleted, `undo` (blocking) or `undo_cluster` (async) takes the
injection out of every VM it injected, before the cluster's Secrets are collected: its
delete handler here, or the life-cycle finalizer that calls it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf

from guestha.controller import api, credentials, indexes, injection, leader, userdata
from guestha.controller.wakeups import WAKEUPS
from guestha.kubevirt import injection as vmi_injection
from guestha.kubevirt import kubeapi, members, template
from guestha.model.cluster import ClusterSpec
from guestha.model.injection import TEMPLATE, InjectionSpec
from guestha.protocol.constants import VSOCK
from guestha.protocol.fields import FieldError

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "guestha.io", "v1alpha1", "inguestclusters"
VMS_PATH = "/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachines"
RESYNC_SECONDS = 60.0  # a pass at least this often (a write that failed is tried again)
ATTEMPTS = 5  # reads and writes of one VM under concurrent changes

# Event reasons (on the InGuestCluster)
INJECTED = "TemplateInjected"
RESTART_REQUIRED = "RestartRequired"
RESTORED = "TemplateRestored"
SECRET_WRITTEN = "UserDataSecretWritten"  # the template was right, its Secret missing or stale
NOT_INJECTED = "TemplateNotInjected"


@dataclass(frozen=True)
class Outcome:
    """What a pass did to one VM (for its Event)."""

    vm: str
    reason: str  # one of the Event reasons above
    message: str


def plan_of(spec: InjectionSpec, vm: str) -> vmi_injection.Plan:
    return vmi_injection.Plan(userdata.secret_name(vm), spec.watchdog,
                              spec.channel.transport == VSOCK)


def inputs_key(spec: InjectionSpec, plan: vmi_injection.Plan, agent: bytes) -> str:
    """What a member's Secret and template are made from, as the record keeps it: a new
    plan, channel, stop timeout or agent bundle re-injects (pure)."""
    text = json.dumps([plan.secret, plan.watchdog, plan.vsock, spec.channel.transport,
                       spec.channel.port, spec.offline_timeout_seconds,
                       hashlib.sha256(agent).hexdigest()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def needs_work(entry: Mapping[str, Any], cluster: str, wanted: bool,
               key: str | None) -> bool:
    """Whether a VM's index entry (controller.clusters.vm_index) says its template is not
    as it should be: a member to inject (for `key`), or this cluster's to restore (pure)."""
    text = ((entry.get("metadata") or {}).get("annotations") or {}).get(
        template.RECORD_ANNOTATION)
    try:
        record = None if text is None else template.Record.from_json(str(text))
    except ValueError:
        return wanted  # a broken record: a member's is reported, another's left alone
    if not wanted:
        return record is not None and record.cluster == cluster
    return (record is None or record.cluster != cluster or record.inputs != key
            or not entry.get("templateInjected"))


# -- blocking API work, one VM at a time (run in a thread)

def _path(namespace: str, name: str | None = None) -> str:
    base = VMS_PATH.format(namespace=namespace)
    return base if name is None else f"{base}/{name}"


def _get_vm(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        vm = kubeapi.call_sync(kubeapi.default_client(), "GET", _path(namespace, name))
    except kubeapi.ApiError as e:
        if e.not_found:
            return None
        raise
    return cast(dict[str, Any], vm)


def _patch_vm(namespace: str, name: str, ops: list[dict[str, Any]]) -> bool:
    """The JSON patch; False when the VM changed since it was read (its resourceVersion
    test failed: 409 or 422) or is gone."""
    try:
        kubeapi.call_sync(kubeapi.default_client(), "PATCH", _path(namespace, name), ops,
                          content_type=kubeapi.JSON_PATCH,
                          query={"fieldManager": kubeapi.FIELD_MANAGER})
    except kubeapi.ApiError as e:
        if e.status in (404, 409, 422):
            return False
        raise
    return True


def _user_data(namespace: str, found: vmi_injection.CloudInit | None) -> bytes | None:
    if found is None:
        return None
    if found.secret is None:
        return found.inline
    secret = injection.read_secret(namespace, found.secret)
    return vmi_injection.secret_user_data(found, secret)


def _secret_current(namespace: str, vm: str, cluster: Mapping[str, Any]) -> bool:
    """The member's Secret exists, is guestha's for this VM and owned by this cluster."""
    secret = injection.read_secret(namespace, userdata.secret_name(vm))
    if secret is None or not userdata.ours(secret, vm):
        return False
    uid = credentials.owner_reference(cluster)["uid"]
    return any(r.get("uid") == uid for r in (secret.get("metadata") or {}).get(
        "ownerReferences") or ())


def inject_vm(namespace: str, cluster: Mapping[str, Any], name: str,
              check_secret: bool = False) -> Outcome | None:
    """Blocking: inject member `name`'s template for `cluster` (None: nothing to do, or
    the VM is gone). Raises InjectionError, UserDataError, CredentialsError or ValueError
    with the reason; kubeapi.ApiError on API failures."""
    cluster_name = str(cluster["metadata"]["name"])
    spec = InjectionSpec.from_spec(cluster.get("spec") or {})
    plan = plan_of(spec, name)
    agent = userdata.agent_bundle()
    key = inputs_key(spec, plan, agent)
    for _ in range(ATTEMPTS):
        vm = _get_vm(namespace, name)
        if vm is None:
            return None
        record = template.record_of(vm)
        if record is not None and record.cluster != cluster_name:
            raise injection.Refused(f"its template carries the injection of InGuestCluster "
                                    f"{record.cluster}; a VM may belong to one (it is taken "
                                    f"out when it leaves that cluster)")
        result = template.inject(vm, plan, cluster_name, key)
        ops = template.json_patch(vm, result.template, result.record)
        if not ops and not (check_secret and not _secret_current(namespace, name, cluster)):
            return None
        found = result.user_cloud_init
        where = "user-data" if found is None else f"spec.template.{found.field}"
        creds = credentials.get_or_create(namespace, cluster_name, cluster)
        data = userdata.member_user_data(spec, cluster_name, name, creds,
                                         creds.issue_member(name),
                                         _user_data(namespace, found), agent, where)
        injection.write_secret(namespace, userdata.build_secret(namespace, name, cluster,
                                                                data), name)
        if not ops:
            return Outcome(name, SECRET_WRITTEN, f"VM {name}: its user-data Secret "
                                                 f"{plan.secret} written again")
        if _patch_vm(namespace, name, ops):
            return Outcome(name, INJECTED, f"VM {name}: template patched with guestha's "
                                           f"agent (Secret {plan.secret})")
    raise injection.Refused(f"changed under every one of {ATTEMPTS} attempts to patch its "
                            f"template")


def restore_vm(namespace: str, name: str, cluster: str) -> Outcome | None:
    """Blocking: take `cluster`'s injection out of VM `name` (None: none there)."""
    for _ in range(ATTEMPTS):
        vm = _get_vm(namespace, name)
        if vm is None:
            return None
        ops = template.undo_patch(vm, cluster)
        if not ops:
            return None
        if _patch_vm(namespace, name, ops):
            return Outcome(name, RESTORED, f"VM {name}: guestha's injection taken out of its "
                                           f"template (it is no member of {cluster} in "
                                           f"Template mode now)")
    raise injection.Refused(f"changed under every one of {ATTEMPTS} attempts to restore "
                            f"its template")


def undo(namespace: str, cluster: str, vms: Iterable[str] | None = None) -> list[str]:
    """Blocking: restore every VM of `namespace` (or only `vms`) that `cluster` injected;
    returns their names. For the cluster's deletion (a finalizer calls it before the
    cluster's Secrets may go) and for tools. Raises kubeapi.ApiError on API failures."""
    if vms is None:
        listed = kubeapi.call_sync(kubeapi.default_client(), "GET", _path(namespace))
        names = []
        for vm in listed.get("items") or ():
            try:
                record = template.record_of(vm)
            except ValueError:
                continue
            if record is not None and record.cluster == cluster:
                names.append(str(vm["metadata"]["name"]))
    else:
        names = list(vms)
    return [n for n in names if restore_vm(namespace, n, cluster) is not None]


async def undo_cluster(namespace: str, cluster: str) -> list[str]:
    """`undo` for the whole cluster, off the event loop."""
    return await asyncio.to_thread(undo, namespace, cluster)


# -- the pass

def _running(vmi_ix: kopf.Index[Any, Any], namespace: str, vm: str) -> bool:
    vmi = indexes.first(vmi_ix, (namespace, vm))
    return vmi is not None and members.live(vmi)


async def reconcile(namespace: str, body: Mapping[str, Any], vm_ix: kopf.Index[Any, Any],
                    full: bool) -> list[Outcome]:
    """One pass over the namespace's VMs (see the module docstring); `full`: look at
    every member, not only those the index shows out of date."""
    name = str(body["metadata"]["name"])
    raw = dict(body.get("spec") or {})
    try:
        spec = InjectionSpec.from_spec(raw)
        cluster = ClusterSpec.from_body(raw)
    except (FieldError, ValueError) as e:
        return [Outcome("", NOT_INJECTED, f"spec refused: {e}")]
    entries = {vm: indexes.first(vm_ix, (ns, vm)) or {} for ns, vm in vm_ix if ns == namespace}
    labels = {vm: dict((e.get("metadata") or {}).get("labels") or {})
              for vm, e in entries.items()}
    deleting = bool((body.get("metadata") or {}).get("deletionTimestamp"))
    wanted = set() if spec.mode != TEMPLATE or deleting else set(cluster.member_names(labels))
    agent = await asyncio.to_thread(userdata.agent_bundle) if wanted else b""
    outcomes: list[Outcome] = []
    for vm in sorted(entries):  # a member without a VM yet: its creation wakes a pass
        want = vm in wanted
        try:
            key = inputs_key(spec, plan_of(spec, vm), agent) if want else None
            if not (full and want) and not needs_work(entries.get(vm, {}), name, want, key):
                continue
            if want:
                done = await asyncio.to_thread(inject_vm, namespace, body, vm, full)
            else:
                done = await asyncio.to_thread(restore_vm, namespace, vm, name)
        except (injection.Refused, vmi_injection.InjectionError, credentials.CredentialsError,
                ValueError) as e:
            outcomes.append(Outcome(vm, NOT_INJECTED, f"VM {vm}: {e}"))
            continue
        except Exception as e:  # the API (kubeapi.ApiError), reported on the cluster
            status = api.status_of(e)
            log.warning("%s/%s: Template mode, VM %s: %s", namespace, name, vm, e)
            outcomes.append(Outcome(vm, NOT_INJECTED, f"VM {vm}: the Kubernetes API answered "
                                                      f"{status}: {str(e)[:300]}; tried again"))
            continue
        if done is not None:
            outcomes.append(done)
    return outcomes


def _events(body: Mapping[str, Any], outcomes: list[Outcome], vmi_ix: kopf.Index[Any, Any],
            namespace: str, reported: dict[str, str]) -> None:
    """One Event per change: injections, restorations, RestartRequired for a running
    VM whose template was patched, a refusal once per distinct message."""
    target = cast(kopf.Body, dict(body))
    for o in outcomes:
        if o.reason == NOT_INJECTED:
            if reported.get(o.vm) == o.message:
                continue
            reported[o.vm] = o.message
            log.warning("%s/%s: %s", namespace, body["metadata"]["name"], o.message)
            kopf.event(target, type="Warning", reason=o.reason, message=o.message[:1024])
            continue
        reported.pop(o.vm, None)
        log.info("%s/%s: %s", namespace, body["metadata"]["name"], o.message)
        kopf.event(target, type="Normal", reason=o.reason, message=o.message[:1024])
        if o.reason == INJECTED and _running(vmi_ix, namespace, o.vm):
            kopf.event(target, type="Warning", reason=RESTART_REQUIRED,
                       message=f"VM {o.vm} runs without guestha's agent until it restarts "
                               f"(virtctl restart {o.vm}); guestha never restarts it")


@kopf.daemon(GROUP, VERSION, PLURAL, id="template-injection", cancellation_timeout=10.0)
async def template_daemon(namespace: str | None, name: str, body: kopf.Body,
                          stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
    """The cluster's Template-mode reconcile, for as long as the cluster exists."""
    ns = namespace or ""
    vm_index, vmi_index = kwargs["vm_index"], kwargs["vmi_index"]
    reported: dict[str, str] = {}
    full = True
    with WAKEUPS.subscribe(ns) as changed:
        while not stopped:
            if leader.is_leader():
                outcomes = await reconcile(ns, body, vm_index, full)
                full = any(o.reason == NOT_INJECTED for o in outcomes)
                _events(body, outcomes, vmi_index, ns, reported)
            else:
                full = True  # a new leader looks at everything once
            await WAKEUPS.wait(changed, RESYNC_SECONDS)


@kopf.on.delete(GROUP, VERSION, PLURAL, id="template-restore")
async def restore_on_delete(namespace: str | None, name: str, **_: Any) -> None:
    """The cluster is deleted: its VMs' templates are theirs again before its Secrets go."""
    restored = await undo_cluster(namespace or "", name)
    if restored:
        log.info("%s/%s deleted: templates restored: %s", namespace, name, ", ".join(restored))

