"""Members leaving a cluster, end to end (controller.departure): real agents injected into
the simulator's guests, the operator run as users run it, the real garbage collector of
kube-controller-manager, and an observer outside the operator that counts the
application's live copies every 20 ms and fails the test on any instant with two.

- A member removed from the InGuestCluster while its Failover group runs there (its
  ServiceGroup still lists it): the group is taken offline there first, then online on
  another member (never two copies); the removed member's agent is left with an empty
  configuration (no groups, no peers); the others drop it from their peer lists (votes
  recomputed); its user-data Secret is deleted; the cluster's CA Secret stays.
- The InGuestCluster deleted: its finalizer holds it until every agent took its groups
  offline and got the empty configuration; then it goes, and the garbage collector takes
  its CA and user-data Secrets. Its ServiceGroups stay, saying the cluster was deleted,
  online nowhere, with an empty EndpointSlice (their Service is theirs).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubevirtkit import Namespace

from guestha.channel.client import AgentClient
from guestha.channel.transport import Member, NetworkTransport
from guestha.controller.credentials import ClusterCredentials
from guestha.controller.departure import FINALIZER
from guestha.protocol.status import StatusReport
from kits import simguests
from kits.sgstatus import fast_cluster, group, online_on, reasons, vm

pytestmark = pytest.mark.controlplane

CLUSTER = "leave"
MEMBERS = ("leave-a", "leave-b", "leave-c")
MARKER = f"0.{random.randrange(10**8, 10**9)}"  # in the application's command line only
TIMEOUT = 90.0


def shop() -> dict[str, Any]:
    return {
        "apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup",
        "metadata": {"name": "shop"},
        "spec": {
            "cluster": CLUSTER, "type": "Failover",
            "systems": [{"member": m, "priority": i} for i, m in enumerate(MEMBERS)],
            "resources": [{"name": "app", "type": "Process",
                           "monitor": {"intervalSeconds": 1},
                           "timeouts": {"offlineSeconds": 5, "cleanSeconds": 5},
                           "attributes": {"command": ["/bin/sleep", "86400", MARKER]}}],
            "service": {"name": "shop", "ports": [{"port": 80, "targetPort": 8080}]},
        },
    }


def cluster_body(members: tuple[str, ...]) -> dict[str, Any]:
    return fast_cluster(CLUSTER, members)


@pytest.fixture(scope="module")
def ns(kube: Any, simulator: Any, operator: Any) -> Iterator[Namespace]:
    name = f"departure-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("label", "namespace", name, "guestha.io/injection=enabled")
    space = Namespace(kube, name, timeout=TIMEOUT, interval=0.2)
    try:
        yield space
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def copies() -> Iterator[simguests.CopyCounter]:
    with simguests.CopyCounter(MARKER.encode()) as counter:
        yield counter
    counter.check()


@pytest.fixture(scope="module")
def cluster(ns: Namespace, copies: simguests.CopyCounter) -> Namespace:
    ns.apply(cluster_body(MEMBERS))
    for member in MEMBERS:
        ns.apply(vm(member))
    ns.apply(shop())
    online_on(ns, (MEMBERS[0],))
    return ns


def credentials(ns: Namespace) -> ClusterCredentials:
    secret = ns.get("secret", f"{CLUSTER}-guestha-ca")
    assert secret is not None, "the cluster's CA Secret"
    return ClusterCredentials.from_secret(secret, ns.name, CLUSTER)


def report(ns: Namespace, creds: ClusterCredentials, member: str) -> StatusReport:
    """The member's agent's own status, through the channel."""
    with AgentClient(Member.from_vmi(ns.running(member)),
                     NetworkTransport(creds.ssl_context()), timeout=3.0) as client:
        return client.status()


def agent_config(ns: Namespace, creds: ClusterCredentials, member: str) -> Any:
    with AgentClient(Member.from_vmi(ns.running(member)),
                     NetworkTransport(creds.ssl_context()), timeout=3.0) as client:
        return client.get_config().config


def slice_addresses(ns: Namespace) -> list[str]:
    found = json.loads(ns.kubectl("get", "endpointslices", "-l",
                                  "kubernetes.io/service-name=shop", "-o", "json").stdout)
    return sorted(a for s in found["items"] for e in s.get("endpoints") or ()
                  for a in e.get("addresses") or ())


def test_the_cluster_carries_the_finalizer(cluster: Namespace) -> None:
    cluster.wait_for(f"finalizer {FINALIZER}", lambda: FINALIZER in (
        (cluster.get("igc", CLUSTER) or {}).get("metadata", {}).get("finalizers") or ()))


def test_a_removed_member_stops_its_group_first_and_is_let_go(
        cluster: Namespace, simulator: Any, copies: simguests.CopyCounter) -> None:
    creds = credentials(cluster)
    removed, rest = MEMBERS[0], MEMBERS[1:]
    cluster.apply(cluster_body(rest))  # the ServiceGroup still lists it in its systems
    moved = online_on(cluster, (rest[0],))
    assert (moved["lastFailover"]["from"], moved["lastFailover"]["reason"]) == \
        (removed, "MemberLeft"), moved["lastFailover"]
    uid = cluster.running(removed)["metadata"]["uid"]
    assert simguests.copies(MARKER.encode()) and not [
        p for p in simguests.copies(MARKER.encode())
        if p in set(simguests.guest_processes(simulator.state_dir, uid))], \
        "the application still runs on the removed member"

    def emptied() -> Any:
        config = agent_config(cluster, creds, removed)
        return config if config is not None and not config.groups and not config.peers \
            else None
    cluster.wait_for(f"{removed}'s agent left with an empty configuration", emptied)
    assert report(cluster, creds, removed).groups == {}

    def dropped() -> bool:
        return all(removed not in {p.member for p in report(cluster, creds, m).peers}
                   and report(cluster, creds, m).quorum.votes == len(rest) + 1
                   for m in rest)
    cluster.wait_for(f"{removed} dropped from the other members' peers", dropped)
    cluster.gone("secret", f"{removed}-guestha-userdata")
    assert cluster.get("secret", f"{rest[0]}-guestha-userdata") is not None
    assert cluster.get("secret", f"{CLUSTER}-guestha-ca") is not None
    status = cluster.wait_for("status without the removed member", lambda: (
        s := (cluster.get("igc", CLUSTER) or {}).get("status") or {}) and not s.get(
        "departing") and [m["name"] for m in s.get("members") or ()] == list(rest) and s)
    assert status["memberCount"] == len(rest)
    events = reasons(cluster, CLUSTER)
    assert {"MemberLeaving", "MemberDeparted"} <= set(events), events
    assert len(copies.pids_since(0)) >= 2  # the application moved: a new copy


def test_deleting_the_cluster_stops_every_group_before_its_secrets_go(
        cluster: Namespace, copies: simguests.CopyCounter) -> None:
    creds = credentials(cluster)
    rest = MEMBERS[1:]
    online_on(cluster, (rest[0],))
    cluster.kubectl("delete", "igc", CLUSTER, "--wait=false")
    cluster.gone("igc", CLUSTER)
    # the finalizer went only after every agent took its groups offline
    assert simguests.copies(MARKER.encode()) == [], "the application runs on"
    for member in rest:
        config = agent_config(cluster, creds, member)
        assert config is not None and not config.groups and not config.peers, \
            (member, config)
        assert report(cluster, creds, member).groups == {}
    # the real garbage collector takes the Secrets the cluster owned
    cluster.gone("secret", f"{CLUSTER}-guestha-ca")
    for member in rest:
        cluster.gone("secret", f"{member}-guestha-userdata")
    status = group(cluster)
    assert status["state"] == "Offline" and status["onlineOn"] == [], status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ClusterDeleted"), ready
    assert cluster.get("service", "shop") is not None  # the ServiceGroup's own
    cluster.wait_for("the EndpointSlice emptied", lambda: slice_addresses(cluster) == [])


def test_a_namespace_deleted_with_its_cluster_goes_away(kube: Any, simulator: Any,
                                                        operator: Any) -> None:
    """The namespace's deletion removes the cluster's CA Secret while the finalizer holds
    the cluster: the operator must not try to make a new one there (nothing may be
    created in a terminating namespace) and must not hold the namespace for ever."""
    name = f"departure-ns-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("label", "namespace", name, "guestha.io/injection=enabled")
    space = Namespace(kube, name, timeout=TIMEOUT, interval=0.2)
    try:
        space.apply(cluster_body(("gone-a", "gone-b")))
        for member in ("gone-a", "gone-b"):
            space.apply(vm(member))
        space.wait_for("the agents connected and the finalizer set", lambda: (
            igc := space.get("igc", CLUSTER) or {}) and FINALIZER in (
            igc["metadata"].get("finalizers") or ()) and [
            m.get("agent") for m in (igc.get("status") or {}).get("members") or ()]
            == ["Connected", "Connected"])
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false")

    def gone() -> bool:
        found = kube.kubectl("get", "namespace", name, check=False)
        return found.returncode != 0 and "NotFound" in found.stderr
    space.wait_for(f"namespace {name} gone", gone, timeout=180)
