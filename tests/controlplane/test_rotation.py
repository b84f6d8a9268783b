"""Member certificates renewed over the channel before they expire (controller.rotation),
end to end: the operator run with the test hook that makes member certificates last
CERT_SECONDS, real agents injected into the simulator's guests. Each member's agent is
given a new certificate before its first one expires, serves it without a restart, and
keeps its group online with the same process; past the first certificates' expiry the
operator still reaches every agent, and renews them again.

The session's operator is restarted with the hook for this module and restarted without
it afterwards (a clean stop releases its Lease, so the next one leads at once).
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from kubevirtkit import Namespace

from guestha.controller.credentials import TEST_CERT_SECONDS_ENV, ClusterCredentials
from guestha.controller.rotation import EVENT_ROTATED
from kits.sgstatus import fast_cluster, online_on, pids_in_guest, process_group, vm

pytestmark = pytest.mark.controlplane

OPERATOR = "guestha-operator"
CLUSTER = "rot"
MEMBERS = ("rot-a", "rot-b")
CERT_SECONDS = 40
MARKER = f"0.{uuid.uuid4().int % 10**9:09d}"
TIMEOUT = 90.0


@pytest.fixture(scope="module")
def short_certificates(kube: Any, simulator: Any, operator: Any) -> Iterator[None]:
    if kube.local is None:
        pytest.skip("restarts the local operator with a test hook")
    kube.local.stop_process(OPERATOR)
    os.environ[TEST_CERT_SECONDS_ENV] = str(CERT_SECONDS)
    try:
        kube.local.start_operator(timeout=120)
        yield
    finally:
        del os.environ[TEST_CERT_SECONDS_ENV]
        kube.local.stop_process(OPERATOR)
        kube.local.start_operator(timeout=120)


@pytest.fixture(scope="module")
def ns(kube: Any, short_certificates: None) -> Iterator[Namespace]:
    name = f"rotation-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("label", "namespace", name, "guestha.io/injection=enabled")
    space = Namespace(kube, name, timeout=TIMEOUT, interval=0.2)
    try:
        yield space
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def served(ns: Namespace, member: str) -> x509.Certificate:
    """The certificate a new connection to the member's agent gets, as the operator's
    client (the cluster's CA, the operator's certificate)."""
    secret = ns.get("secret", f"{CLUSTER}-guestha-ca")
    assert secret is not None
    creds = ClusterCredentials.from_secret(secret, ns.name, CLUSTER)
    address = ns.running(member)["status"]["interfaces"][0]["ipAddress"]
    context: ssl.SSLContext = creds.ssl_context()
    with socket.create_connection((address, 7480), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=member) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def rotations(ns: Namespace) -> list[str]:
    return [e["message"] for e in ns.events(CLUSTER) if e["reason"] == EVENT_ROTATED]


def test_member_certificates_are_renewed_before_they_expire(ns: Namespace,
                                                            simulator: Any) -> None:
    ns.apply(fast_cluster(CLUSTER, MEMBERS))
    for member in MEMBERS:
        ns.apply(vm(member))
    ns.apply(process_group("shop", CLUSTER, MEMBERS, ["/bin/sleep", "86400", MARKER]))
    online_on(ns, (MEMBERS[0],))
    home = ns.running(MEMBERS[0])["metadata"]["uid"]
    pids = pids_in_guest(simulator.state_dir, home, MARKER.encode())
    assert len(pids) == 1, pids
    first = {m: served(ns, m) for m in MEMBERS}
    for cert in first.values():
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert lifetime <= datetime.timedelta(seconds=CERT_SECONDS * 1.1), lifetime

    def renewed() -> dict[str, x509.Certificate] | None:
        now = {m: served(ns, m) for m in MEMBERS}
        return now if all(now[m].serial_number != first[m].serial_number
                          for m in MEMBERS) else None
    second = ns.wait_for("every member serving a renewed certificate", renewed)
    for member in MEMBERS:  # renewed before the first one expired
        assert second[member].not_valid_before_utc < first[member].not_valid_after_utc
    assert len(rotations(ns)) >= len(MEMBERS), rotations(ns)

    # past the first certificates' expiry: still reached, renewed again, nothing moved
    expiry = max(c.not_valid_after_utc for c in first.values())
    time.sleep(max(0.0, (expiry - datetime.datetime.now(datetime.UTC)).total_seconds()) + 1)
    ns.wait_for("every member serving a third certificate", lambda: all(
        served(ns, m).serial_number not in (first[m].serial_number, second[m].serial_number)
        for m in MEMBERS))
    igc = ns.get("igc", CLUSTER) or {}
    assert [m.get("agent") for m in igc["status"]["members"]] == ["Connected"] * len(MEMBERS)
    assert pids_in_guest(simulator.state_dir, home, MARKER.encode()) == pids
    online_on(ns, (MEMBERS[0],))


def agent_client(ns: Namespace, member: str) -> Any:
    from guestha.channel.client import AgentClient
    from guestha.channel.transport import Member, NetworkTransport
    secret = ns.get("secret", f"{CLUSTER}-guestha-ca")
    assert secret is not None
    creds = ClusterCredentials.from_secret(secret, ns.name, CLUSTER)
    return AgentClient(Member.from_vmi(ns.running(member)),
                       NetworkTransport(creds.ssl_context()), timeout=5.0)


def test_the_heartbeat_secret_rotates_without_a_peer_judged_silent(ns: Namespace) -> None:
    """Asked for with the annotation: agents accept the new pair keys, then send with
    them, then drop the old; no agent ever loses its peer, the group stays."""
    import base64

    from guestha.controller.credentials import HEARTBEAT_KEY
    from guestha.protocol.keys import pair_key

    old = (ns.get("secret", f"{CLUSTER}-guestha-ca") or {})["data"][HEARTBEAT_KEY]
    cursors = {}
    for member in MEMBERS:
        with agent_client(ns, member) as c:
            cursors[member] = c.status().events.last_seq
    ns.kubectl("annotate", "igc", CLUSTER, "guestha.io/rotate-heartbeat-key=first",
               "--overwrite")
    done = ns.wait_for("the rotation done", lambda: (
        r := ((ns.get("igc", CLUSTER) or {}).get("status") or {}).get(
            "heartbeatKeyRotation") or {}).get("value") == "first" and r.get(
            "phase") == "Done" and r)
    assert done["phase"] == "Done"
    secret = (ns.get("secret", f"{CLUSTER}-guestha-ca") or {})["data"]
    assert secret[HEARTBEAT_KEY] != old and "heartbeat.key.next" not in secret
    new = base64.b64decode(secret[HEARTBEAT_KEY])
    for member in MEMBERS:
        other = next(m for m in MEMBERS if m != member)

        def current(member: str = member, other: str = other) -> bool:
            with agent_client(ns, member) as c:
                config = c.get_config().config
            assert config is not None
            [peer] = config.peers
            return peer.heartbeat_key == pair_key(new, CLUSTER, member, other) \
                and peer.accept_keys == ()
        ns.wait_for(f"{member} with only the new pair key", current)
        with agent_client(ns, member) as c:
            events = c.events(cursors[member], 0.0).events
            status = c.status()
        assert not [e for e in events if e.kind == "PeerDown"], events
        assert [p.state for p in status.peers] == ["Up"]
    online_on(ns, (MEMBERS[0],))
    assert "HeartbeatKeyRotated" in [e["reason"] for e in ns.events(CLUSTER)]
