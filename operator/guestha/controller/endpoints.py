"""The Service of a ServiceGroup (spec.service): guestha's counterpart of a VCS virtual IP.

Clients reach a group through a Service that has NO selector: its endpoints are not
pods, they are the member VMs where the group is online, and only the operator knows
which those are. So the operator writes the Service and one EndpointSlice per address
family itself:

- the slice is labelled `kubernetes.io/service-name` (kube-proxy and DNS use it) and
  `endpointslice.kubernetes.io/managed-by: operator.guestha.io`: kube-controller-manager's
  EndpointSlice controller manages only slices of Services with a selector, and its
  mirroring controller only slices it labels as its own (mirrored from an Endpoints
  object, which guestha never writes), so neither touches or deletes these;
- both are owned by the ServiceGroup (garbage-collected with it) and written by
  server-side apply with the field manager `guestha`: an unchanged desired object is no
  write at all, and a failover's switch of addresses is exactly one write of the slice
  (its `endpoints` list is atomic);
- the builders are pure (`desired_service`, `desired_endpointslice`); `apply` and `prune`
  are the only API calls.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from guestha.kubevirt import kubeapi

MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
# the managed-by value of guestha's EndpointSlices: a label value, so no "/" (as
# kube-controller-manager's own "endpointslice-controller.k8s.io")
MANAGER = "operator.guestha.io"
SERVICE_NAME = "kubernetes.io/service-name"
APP_MANAGED_BY = "app.kubernetes.io/managed-by"
APP_MANAGER = "guestha"  # on the Services, which have no managed-by label of their own
SLICE_SUFFIX = {"IPv4": "guestha", "IPv6": "guestha-v6"}
SG_API_VERSION, SG_KIND = "guestha.io/v1alpha1", "ServiceGroup"


class InvalidService(ValueError):
    """spec.service or an address cannot make a Service; the message names the field."""


def _meta(sg: Mapping[str, Any]) -> Mapping[str, Any]:
    return sg.get("metadata") or {}


def _spec_service(sg: Mapping[str, Any]) -> Mapping[str, Any] | None:
    service = (sg.get("spec") or {}).get("service")
    return service if isinstance(service, Mapping) else None


def service_name(sg: Mapping[str, Any]) -> str | None:
    """The Service's name: spec.service.name, else the ServiceGroup's; None without
    spec.service."""
    service = _spec_service(sg)
    if service is None:
        return None
    return str(service.get("name") or _meta(sg).get("name") or "")


def _owner(sg: Mapping[str, Any]) -> dict[str, Any]:
    meta = _meta(sg)
    if not meta.get("uid") or not meta.get("name"):
        raise InvalidService("metadata: the ServiceGroup needs a name and a uid to own its "
                             "Service")
    return {"apiVersion": SG_API_VERSION, "kind": SG_KIND, "name": meta["name"],
            "uid": meta["uid"], "controller": True}


def _ports(sg: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    service = _spec_service(sg) or {}
    ports = service.get("ports")
    if not isinstance(ports, list) or not ports:
        raise InvalidService("spec.service.ports: at least one port is required")
    for i, port in enumerate(ports):
        if not isinstance(port, Mapping) or not isinstance(port.get("port"), int):
            raise InvalidService(f"spec.service.ports[{i}].port: required, an integer")
    return ports


def desired_service(sg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The selector-less Service of a ServiceGroup, or None when it has no spec.service."""
    name = service_name(sg)
    if name is None:
        return None
    ports = []
    for port in _ports(sg):
        entry: dict[str, Any] = {"port": port["port"],
                                 "targetPort": port.get("targetPort") or port["port"],
                                 "protocol": port.get("protocol") or "TCP"}
        if port.get("name"):
            entry["name"] = port["name"]
        ports.append(entry)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": _meta(sg).get("namespace"),
            "labels": {APP_MANAGED_BY: APP_MANAGER},
            "ownerReferences": [_owner(sg)],
        },
        "spec": {"type": "ClusterIP", "ports": ports},
    }


def _family(member: str, address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidService(f"addresses[{member}]: {address!r} is not an IP address") from None
    return "IPv4" if ip.version == 4 else "IPv6"


def desired_endpointslice(
    sg: Mapping[str, Any], addresses: Mapping[str, str], address_type: str = "IPv4"
) -> dict[str, Any]:
    """The EndpointSlice of a ServiceGroup's Service for one address family: one ready
    endpoint per member in `addresses` (member -> its address; the members where the group
    is online), in member order so that the same members always build the same object."""
    name = service_name(sg)
    if name is None:
        raise InvalidService("spec.service: the ServiceGroup has no Service")
    if address_type not in SLICE_SUFFIX:
        raise InvalidService(f"address_type: IPv4 or IPv6, got {address_type!r}")
    namespace = _meta(sg).get("namespace")
    endpoints = [
        {
            "addresses": [address],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "targetRef": {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                          "namespace": namespace, "name": member},
        }
        for member, address in sorted(addresses.items())
        if _family(member, address) == address_type
    ]
    ports = [{"name": port.get("name") or "",
              "port": port.get("targetPort") or port["port"],
              "protocol": port.get("protocol") or "TCP"} for port in _ports(sg)]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-{SLICE_SUFFIX[address_type]}",
            "namespace": namespace,
            "labels": {SERVICE_NAME: name, MANAGED_BY: MANAGER},
            "ownerReferences": [_owner(sg)],
        },
        "addressType": address_type,
        "ports": ports,
        "endpoints": endpoints,
    }


def desired_objects(sg: Mapping[str, Any], addresses: Mapping[str, str]) -> list[dict[str, Any]]:
    """Everything the ServiceGroup's Service needs: the Service, its IPv4 slice (even
    empty: no member online is "no endpoints", not "unknown"), an IPv6 slice when some
    address is IPv6. Empty without spec.service."""
    service = desired_service(sg)
    if service is None:
        return []
    objects = [service, desired_endpointslice(sg, addresses, "IPv4")]
    if any(_family(m, a) == "IPv6" for m, a in addresses.items()):
        objects.append(desired_endpointslice(sg, addresses, "IPv6"))
    return objects


def _collection(kind: str, namespace: str) -> str:
    if kind == "Service":
        return f"/api/v1/namespaces/{namespace}/services"
    if kind == "EndpointSlice":
        return f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    raise ValueError(f"kind: Service or EndpointSlice, got {kind!r}")


async def apply(namespace: str, objects: Sequence[Mapping[str, Any]], *,
                client: Any = None) -> list[dict[str, Any]]:
    """Server-side apply each object (field manager `guestha`, forced: guestha owns these
    fields); returns them as stored. An object equal to what is stored is no write."""
    stored = []
    for obj in objects:
        name = obj["metadata"]["name"]
        path = f"{_collection(obj['kind'], namespace)}/{quote(name)}"
        stored.append(await kubeapi.call(
            "PATCH", path, dict(obj), client=client, content_type=kubeapi.APPLY_PATCH,
            query={"fieldManager": kubeapi.FIELD_MANAGER, "force": "true"}))
    return stored


async def prune(namespace: str, sg_uid: str, keep: Iterable[Mapping[str, Any]] = (), *,
                client: Any = None) -> list[str]:
    """Delete the Services and EndpointSlices owned by the ServiceGroup `sg_uid` that are
    not in `keep` (a renamed Service, an address family gone, spec.service removed:
    keep nothing). Returns "Kind/name" of each deleted."""
    wanted = {(o["kind"], o["metadata"]["name"]) for o in keep}
    deleted = []
    for kind, selector in (("EndpointSlice", f"{MANAGED_BY}={MANAGER}"),
                           ("Service", f"{APP_MANAGED_BY}={APP_MANAGER}")):
        listed = await kubeapi.call("GET", _collection(kind, namespace), client=client,
                                    query={"labelSelector": selector})
        for item in (listed or {}).get("items") or ():
            meta = item.get("metadata") or {}
            owned = any(ref.get("uid") == sg_uid for ref in meta.get("ownerReferences") or ())
            if not owned or (kind, meta.get("name")) in wanted:
                continue
            try:
                await kubeapi.call("DELETE", f"{_collection(kind, namespace)}/{meta['name']}",
                                   {"apiVersion": "v1", "kind": "DeleteOptions",
                                    "preconditions": {"uid": meta.get("uid")}},
                                   client=client)
            except kubeapi.ApiError as exc:
                if not (exc.not_found or exc.conflict):
                    raise
            deleted.append(f"{kind}/{meta['name']}")
    return deleted


async def reconcile(sg: Mapping[str, Any], addresses: Mapping[str, str], *,
                    client: Any = None) -> list[dict[str, Any]]:
    """The ServiceGroup's Service and slices as desired (applied), and the ones it no
    longer wants deleted; returns the objects as stored."""
    meta = _meta(sg)
    namespace = str(meta.get("namespace") or "")
    desired = desired_objects(sg, addresses)
    stored = await apply(namespace, desired, client=client)
    await prune(namespace, str(meta.get("uid") or ""), desired, client=client)
    return stored
