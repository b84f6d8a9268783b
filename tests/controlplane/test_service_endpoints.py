"""A ServiceGroup's Service and EndpointSlice on a real apiserver, with
kube-controller-manager's EndpointSlice and EndpointSlice mirroring controllers running,
written with the operator ServiceAccount's RBAC.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes import client as kclient
from kubernetes import watch

from guestha.controller import endpoints
from guestha.kubevirt import kubeapi

pytestmark = pytest.mark.controlplane

SAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "servicegroup.yaml"
SETTLE = 4.0  # seconds the controllers get to act on what was written


@pytest.fixture
def ns(kube: Any) -> Iterator[str]:
    if kube.local is None:
        pytest.skip("needs the local control plane (the operator's ServiceAccount token)")
    name = f"endpoints-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def operator_api(kube: Any) -> Any:
    if kube.local is None:
        pytest.skip("needs the local control plane (the operator's ServiceAccount token)")
    return kubeapi.client_from_kubeconfig(str(kube.local.operator_kubeconfig()))


def servicegroup(kube: Any, ns: str) -> dict[str, Any]:
    """The sample ServiceGroup, with a Service, created in `ns`; as stored (uid)."""
    body = yaml.safe_load(SAMPLE.read_text())
    body["metadata"]["namespace"] = ns
    body["spec"]["service"] = {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    kube.kubectl("apply", "-f", "-", input=json.dumps(body))
    return dict(json.loads(kube.kubectl("-n", ns, "get", "sg", "shop", "-o", "json").stdout))


def get(kube: Any, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    out = kube.kubectl("-n", ns, "get", kind, name, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


class SliceWrites:
    """Counts the writes to one EndpointSlice, as a watch from a resourceVersion sees them."""

    def __init__(self, kubeconfig: str, ns: str, name: str, since: str) -> None:
        self.events: list[tuple[str, str]] = []
        self._watch = watch.Watch()
        self._stopped = threading.Event()
        # the watch is the test's tool: the kubernetes client of the operator's kubeconfig
        discovery = kclient.DiscoveryV1Api(
            kubernetes.config.new_client_from_config(config_file=kubeconfig))

        def follow() -> None:
            try:
                for event in self._watch.stream(
                        discovery.list_namespaced_endpoint_slice, ns,
                        field_selector=f"metadata.name={name}", resource_version=since,
                        timeout_seconds=60):
                    self.events.append((event["type"],
                                        event["object"].metadata.resource_version))
            except Exception:  # the connection closed under stop()
                if not self._stopped.is_set():
                    raise

        self._thread = threading.Thread(target=follow, daemon=True)
        self._thread.start()

    def stop(self) -> list[tuple[str, str]]:
        self._stopped.set()
        self._watch.stop()
        return list(self.events)


def test_the_slice_is_kept_and_a_switch_is_one_write(
    kube: Any, ns: str, operator_api: Any
) -> None:
    sg = servicegroup(kube, ns)

    def reconcile(addresses: dict[str, str]) -> list[dict[str, Any]]:
        return asyncio.run(endpoints.reconcile(sg, addresses, client=operator_api))

    service, slice_ = reconcile({"web-a": "10.213.0.5"})
    assert service["spec"].get("selector") is None and service["spec"]["clusterIP"]
    first_rv = slice_["metadata"]["resourceVersion"]

    # the controllers leave it alone: nothing rewrites it, nothing adds a slice beside it
    time.sleep(SETTLE)
    kept = get(kube, ns, "endpointslice", "shop-guestha")
    assert kept is not None and kept["metadata"]["resourceVersion"] == first_rv
    assert [e["addresses"] for e in kept["endpoints"]] == [["10.213.0.5"]]
    slices = json.loads(kube.kubectl("-n", ns, "get", "endpointslices", "-l",
                                     "kubernetes.io/service-name=shop", "-o", "json").stdout)
    assert [s["metadata"]["name"] for s in slices["items"]] == ["shop-guestha"]

    # the same desired state again: no write; a failover's switch: exactly one write
    writes = SliceWrites(str(kube.local.operator_kubeconfig()), ns, "shop-guestha", first_rv)
    reconcile({"web-a": "10.213.0.5"})
    _, switched = reconcile({"web-b": "10.213.0.6"})
    time.sleep(SETTLE)
    seen = writes.stop()
    assert seen == [("MODIFIED", switched["metadata"]["resourceVersion"])]
    now = get(kube, ns, "endpointslice", "shop-guestha")
    assert now is not None and [e["addresses"] for e in now["endpoints"]] == [["10.213.0.6"]]
    assert now["endpoints"][0]["targetRef"]["name"] == "web-b"


def test_a_renamed_or_removed_service_is_deleted(kube: Any, ns: str, operator_api: Any) -> None:
    sg = servicegroup(kube, ns)
    asyncio.run(endpoints.reconcile(sg, {"web-a": "10.213.0.5"}, client=operator_api))
    renamed = json.loads(json.dumps(sg))
    renamed["spec"]["service"]["name"] = "front"
    asyncio.run(endpoints.reconcile(renamed, {"web-a": "10.213.0.5"}, client=operator_api))
    assert get(kube, ns, "service", "front") is not None
    assert get(kube, ns, "service", "shop") is None
    assert get(kube, ns, "endpointslice", "shop-guestha") is None
    gone = json.loads(json.dumps(sg))
    del gone["spec"]["service"]
    asyncio.run(endpoints.reconcile(gone, {"web-a": "10.213.0.5"}, client=operator_api))
    assert get(kube, ns, "service", "front") is None
    assert get(kube, ns, "endpointslice", "front-guestha") is None


def test_the_objects_go_with_their_servicegroup(kube: Any, ns: str, operator_api: Any) -> None:
    """Owned by the ServiceGroup: the garbage collector removes them when it goes."""
    sg = servicegroup(kube, ns)
    asyncio.run(endpoints.reconcile(sg, {"web-a": "10.213.0.5"}, client=operator_api))
    kube.kubectl("-n", ns, "delete", "sg", "shop")
    deadline = time.monotonic() + 30
    while get(kube, ns, "service", "shop") or get(kube, ns, "endpointslice", "shop-guestha"):
        assert time.monotonic() < deadline, "the garbage collector left them"
        time.sleep(0.2)
