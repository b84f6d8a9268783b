"""The injection webhook: a member's VirtualMachineInstance gets guestha's agent at creation.

kopf's mutating admission handler on `kubevirt.io/v1` VMI CREATE, kept thin: find the
InGuestCluster the VMI's VM belongs to (`spec.members` by name, or `memberSelector` over the
VM's labels; the VM is the VMI's controller owner), get the cluster's credentials
(guestha.controller.credentials), issue the member's certificate, build the user-data
(guestha.controller.userdata), write the per-member Secret, and return the VMI patch
(guestha.kubevirt.injection). The VirtualMachine is never changed.

Which VMIs reach it at all is decided by the MutatingWebhookConfiguration
(guestha.controller.webhook): only those in namespaces labelled NAMESPACE_LABEL, which the
operator sets on every namespace that holds an InGuestCluster. There the webhook's failure
policy is Fail: a member whose injection fails (the operator down, its Secret missing, a
field that cannot be injected) is refused with the reason, never started unprotected; the
VM controller retries creating its VMI. A VMI that is not a member (no VM owner, or a VM no
cluster names) passes unchanged.

The webhook reads the clusters and the VM from the API at each call instead of kopf's
indexes: an index is empty until its first listing, and a member that slipped through then
would start without its agent.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from guestha.controller import api, credentials, userdata
from guestha.kubevirt import injection, kubeapi
from guestha.model.cluster import ClusterSpec
from guestha.model.injection import WEBHOOK, InjectionSpec
from guestha.protocol.constants import VSOCK

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "guestha.io", "v1alpha1", "inguestclusters"
HANDLER_ID = "inject"  # the last path segment of the webhook's URL (kopf routes by it)
NAMESPACE_LABEL = "guestha.io/injection"
NAMESPACE_LABEL_VALUE = "enabled"


class Refused(Exception):
    """The VMI of a member cannot be injected: the message says which member and why."""


def owner_vm(vmi: Mapping[str, Any]) -> str | None:
    """The name of the VM that controls this VMI (None: a VMI of its own)."""
    for ref in (vmi.get("metadata") or {}).get("ownerReferences") or ():
        if (ref.get("kind") == "VirtualMachine" and ref.get("controller")
                and str(ref.get("apiVersion", "")).startswith("kubevirt.io/")):
            return str(ref.get("name"))
    return None


def clusters_of(vm: str, vm_labels: Mapping[str, str] | None,
                clusters: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pure: the InGuestClusters (not being deleted) that have `vm` as a member."""
    found = []
    for cluster in clusters:
        if (cluster.get("metadata") or {}).get("deletionTimestamp"):
            continue
        spec = ClusterSpec.from_body(cluster.get("spec") or {})
        labels = {vm: dict(vm_labels or {})} if vm_labels is not None else {}
        if vm in spec.member_names(labels):
            found.append(cluster)
    return found


def _list_clusters(namespace: str) -> list[dict[str, Any]]:
    listed = api.request("GET", api.custom_path(GROUP, VERSION, namespace, PLURAL))
    return list(listed.get("items") or [])


def _vm_labels(namespace: str, name: str) -> dict[str, str] | None:
    vm = api.get(api.custom_path("kubevirt.io", "v1", namespace, "virtualmachines", name))
    if vm is None:
        return None
    return dict((vm.get("metadata") or {}).get("labels") or {})


def read_secret(namespace: str, name: str) -> dict[str, Any] | None:
    return api.get(api.secrets_path(namespace, name))


def write_secret(namespace: str, body: dict[str, Any], vm: str) -> None:
    """Create the per-member Secret, or replace guestha's own of that name."""
    name = body["metadata"]["name"]
    for _ in range(5):
        existing = read_secret(namespace, name)
        try:
            if existing is None:
                api.request("POST", api.secrets_path(namespace), body)
                return
            if not userdata.ours(existing, vm):
                raise Refused(f"Secret {namespace}/{name} exists and is not guestha's "
                              f"user-data Secret of VM {vm}; rename or remove it")
            replacement = dict(body)
            replacement["metadata"] = {**body["metadata"], "resourceVersion":
                                       existing["metadata"]["resourceVersion"]}
            api.request("PUT", api.secrets_path(namespace, name), replacement)
            return
        except kubeapi.ApiError as e:
            if not e.conflict:
                raise
    raise Refused(f"Secret {namespace}/{name}: changed under every attempt to write it")


def member_patch(namespace: str, vmi: Mapping[str, Any], dry_run: bool) -> list[dict[str, Any]]:
    """Blocking: the patch for `vmi` ([] when it is no member, or injected already), the
    per-member Secret written first (not on a dry run). Raises Refused, InjectionError,
    CredentialsError or ValueError with the reason; kubeapi.ApiError on API failures."""
    vm = owner_vm(vmi)
    if vm is None:
        return []
    listed = _list_clusters(namespace)
    if any((c.get("spec") or {}).get("memberSelector") for c in listed):
        labels = _vm_labels(namespace, vm)
    else:
        labels = None
    clusters = clusters_of(vm, labels, listed)
    if not clusters:
        return []
    names = sorted(str(c["metadata"]["name"]) for c in clusters)
    if len(clusters) > 1:
        raise Refused(f"VM {vm} is a member of {len(names)} InGuestClusters "
                      f"({', '.join(names)}); a VM may belong to one")
    cluster = clusters[0]
    spec = InjectionSpec.from_spec(cluster.get("spec") or {})
    if spec.mode != WEBHOOK:
        return []
    plan = injection.Plan(userdata.secret_name(vm), spec.watchdog,
                          spec.channel.transport == VSOCK)
    patch = injection.json_patch(vmi, plan)  # refuses what cannot be injected, before writes
    if not patch:
        return []
    found = injection.cloud_init(vmi)
    user_data: bytes | None = None
    where = "user-data"
    if found is not None:
        where = found.field
        if found.secret is not None:
            user_data = injection.secret_user_data(found, read_secret(namespace, found.secret))
        else:
            user_data = found.inline
    creds = credentials.get_or_create(namespace, names[0], cluster)
    data = userdata.member_user_data(spec, names[0], vm, creds, creds.issue_member(vm),
                                     user_data, userdata.agent_bundle(), where)
    if not dry_run:
        write_secret(namespace, userdata.build_secret(namespace, vm, cluster, data), vm)
    return patch


def _apply_in_place(body: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    new = injection.apply(body, ops)
    body.clear()
    body.update(new)


async def inject(body: kopf.Body, namespace: str | None, dryrun: bool, patch: kopf.Patch,
                 **_: Any) -> None:
    """kopf's mutating handler: the member's patch, or the VMI refused with the reason."""
    vmi = dict(body)
    name = (vmi.get("metadata") or {}).get("name") or owner_vm(vmi) or "?"
    where = f"VMI {namespace}/{name}"
    try:
        ops = await asyncio.to_thread(member_patch, namespace or "", vmi, dryrun)
    except (Refused, injection.InjectionError, credentials.CredentialsError, ValueError) as e:
        log.warning("%s refused: %s", where, e)
        raise kopf.AdmissionError(f"guestha cannot inject its agent into {where}: {e}",
                                  code=403) from None
    except Exception as e:
        status = api.status_of(e)
        if status is None:
            log.exception("%s: injection failed", where)
        reason = f"the Kubernetes API answered {status}" if status else type(e).__name__
        raise kopf.AdmissionError(f"guestha cannot inject its agent into {where} now "
                                  f"({reason}: {str(e)[:300]}); the VM controller retries",
                                  code=503) from None
    if ops:
        log.info("%s: injected (%d patch operations)", where, len(ops))
        patch.fns.append(functools.partial(_apply_in_place, ops=ops))


def _label_namespace(namespace: str) -> None:
    api.request("PATCH", api.namespace_path(namespace), {"metadata": {"labels": {
        NAMESPACE_LABEL: NAMESPACE_LABEL_VALUE}}}, content_type=kubeapi.MERGE_PATCH)


_SCOPE = False  # whether this process labels namespaces (it serves the webhook)
_LABELLED: set[str] = set()  # namespaces this process labelled already


async def label_namespace(namespace: str) -> None:
    """A namespace that holds an InGuestCluster is in the webhook's scope from then on.
    Called by each cluster's daemon as it starts (controller.clusters), once per
    namespace per process: not a kopf create/resume handler, whose bookkeeping
    annotations kopf would PATCH onto every InGuestCluster, and whose resume ran again
    for each of 500 clusters at every restart. A failure is retried at the next start."""
    if not _SCOPE or not namespace or namespace in _LABELLED:
        return
    _LABELLED.add(namespace)  # at once: the namespace's other daemons start meanwhile
    try:
        await asyncio.to_thread(_label_namespace, namespace)
    except BaseException:
        _LABELLED.discard(namespace)
        raise


def register() -> None:
    """Register the webhook's handlers with kopf (only when the operator serves it)."""
    global _SCOPE
    kopf.on.mutate("kubevirt.io", "v1", "virtualmachineinstances", id=HANDLER_ID,
                   operations=["CREATE"], side_effects=True, persistent=True)(inject)
    _SCOPE = True
