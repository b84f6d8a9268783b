"""Heartbeat keys: the pair key of two members, derived from the cluster's secret.

The operator derives each member's pair keys and sends them over the mutual-TLS channel
(`PUT /v1/config` `peers[].heartbeatKey`, base64); the agent signs and checks heartbeats
with them (guestha.agent.heartbeat). Each pair of members has its own key, so member C
cannot forge A's datagrams to B:

    pair_key(secret, cluster, A, B) = HMAC-SHA256(secret, "guestha heartbeat pair key v1"
                                        | 0x00 | cluster | 0x00 | first | 0x00 | second)

where first and second are A and B sorted (by code point; member names are Kubernetes
names) and `secret` is the cluster's heartbeat secret, which only the operator holds.
The guests' user-data carries the bootstrap key instead (what the agents sign with
until the operator's pair keys arrive), derived from the secret the same way with its
own label: no pair key follows from it.

    bootstrap_key(secret, cluster) = HMAC-SHA256(secret, "guestha heartbeat bootstrap
                                                   key v1" | 0x00 | cluster)
"""

from __future__ import annotations

import hashlib
import hmac

PAIR_KEY_LABEL = b"guestha heartbeat pair key v1"
BOOTSTRAP_KEY_LABEL = b"guestha heartbeat bootstrap key v1"
PAIR_KEY_BYTES = 32  # what pair_key gives (SHA-256)
MIN_PAIR_KEY_BYTES = 16  # the shortest heartbeatKey an agent accepts
# Which keys an agent signs its heartbeats with (`heartbeat.keys` of /v1/status):
PAIR_KEYS = "pair"  # the pair keys the operator gave
CLUSTER_KEY = "cluster"  # the bootstrap key of the identity file, until pair keys arrive
KEY_SOURCES = (PAIR_KEYS, CLUSTER_KEY)


def pair_key(secret: bytes, cluster: str, a: str, b: str) -> bytes:
    """The heartbeat key of the members `a` and `b` of `cluster` (the same either way
    round), derived from the cluster's heartbeat secret; see the module docstring."""
    if not secret:
        raise ValueError("the cluster's heartbeat secret is empty")
    if a == b:
        raise ValueError(f"a pair key needs two members, got {a!r} twice")
    first, second = sorted((a, b))
    message = b"\0".join((PAIR_KEY_LABEL, cluster.encode("utf-8"), first.encode("utf-8"),
                          second.encode("utf-8")))
    return hmac.new(secret, message, hashlib.sha256).digest()


def bootstrap_key(secret: bytes, cluster: str) -> bytes:
    """The cluster key the guests' user-data carries (see the module docstring): every
    member has it, so it proves only membership; the secret itself stays with the
    operator."""
    if not secret:
        raise ValueError("the cluster's heartbeat secret is empty")
    return hmac.new(secret, BOOTSTRAP_KEY_LABEL + b"\0" + cluster.encode("utf-8"),
                    hashlib.sha256).digest()
