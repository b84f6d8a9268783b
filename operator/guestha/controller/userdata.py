"""A member's user-data and the per-member Secret that carries it, as pure builders.

The user-data is the guest's own (any form, guestha.cloudinit.merge keeps its meaning) with
guestha's part after it: the recipe's cloud-config (guestha.cloudinit.recipe, the one place
that says how the agent is installed) with this member's identity file, its serving
certificate and key, the cluster's CA and the heartbeat bootstrap key (never the
cluster's heartbeat secret: guestha.protocol.keys). The Secret `<vm>-guestha-userdata`
(key `userdata`, as virt-launcher reads it) is owned by the InGuestCluster and labelled like
the CA Secret, so the garbage collector removes it with the cluster.

Here, and not in cloudinit/ or kubevirt/, because it joins those layers with the channel's
certificates (guestha.channel.pki through guestha.controller.credentials).
"""

from __future__ import annotations

import base64
import functools
import os
from collections.abc import Mapping
from typing import Any

from guestha.channel import pki
from guestha.cloudinit import bundle, merge, recipe
from guestha.controller.credentials import (
    CLUSTER_LABEL,
    MANAGED_BY,
    MAX_NAME,
    ClusterCredentials,
    owner_reference,
)
from guestha.model.injection import InjectionSpec
from guestha.protocol import keys

SUFFIX = "-guestha-userdata"
USERDATA_KEY = "userdata"
MEMBER_LABEL = "guestha.io/member"


def secret_name(vm: str) -> str:
    """The per-member Secret's name; too long a VM name raises ValueError naming it."""
    name = f"{vm}{SUFFIX}"
    if len(name) > MAX_NAME:
        raise ValueError(f"metadata.name: the VM's name is too long for its user-data Secret "
                         f"({len(name)} > {MAX_NAME} characters)")
    return name


# Test hooks (never set in production, docs/agent-api.md): the version string of the
# operator's bundle, so a test can roll out "a newer agent" made of the same sources; and
# a message that bundle's program exits with at once, so a test can roll out one that
# never comes up in the guest.
TEST_BUNDLE_VERSION_ENV = "GUESTHA_TEST_BUNDLE_VERSION"
TEST_BUNDLE_CRASH_ENV = "GUESTHA_TEST_BUNDLE_CRASH"


@functools.cache
def operator_bundle() -> bundle.Bundle:
    """The agent zipapp of the operator's own guestha, built once per process: what new
    guests get injected and what running ones are upgraded to (controller.rollout)."""
    return bundle.build(version=os.environ.get(TEST_BUNDLE_VERSION_ENV) or None,
                        crash=os.environ.get(TEST_BUNDLE_CRASH_ENV) or None)


def agent_bundle() -> bytes:
    """The bytes of operator_bundle()."""
    return operator_bundle().data


def member_user_data(spec: InjectionSpec, cluster: str, member: str,
                     credentials: ClusterCredentials, member_pair: pki.KeyPair,
                     user_data: bytes | None, agent: bytes, where: str = "user-data") -> bytes:
    """The member's whole user-data: the guest's own, then guestha's cloud-config part."""
    identity = recipe.identity(cluster, member, transport=spec.channel.transport,
                               port=spec.channel.port, watchdog_device=spec.watchdog_device)
    secrets = recipe.AgentSecrets(credentials.ca_pem, member_pair.cert_pem,
                                  member_pair.key_pem,
                                  keys.bootstrap_key(credentials.heartbeat_key, cluster))
    config = recipe.cloud_config(identity, agent, secrets,
                                 offline_timeout_seconds=spec.offline_timeout_seconds)
    return merge.merge(user_data, config, where)


def build_secret(namespace: str, vm: str, cluster: Mapping[str, Any],
                 data: bytes) -> dict[str, Any]:
    """The per-member user-data Secret's manifest, owned by the InGuestCluster `cluster`."""
    cluster_name = str((cluster.get("metadata") or {}).get("name"))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name(vm),
            "namespace": namespace,
            "labels": {**MANAGED_BY, CLUSTER_LABEL: cluster_name, MEMBER_LABEL: vm},
            "ownerReferences": [owner_reference(cluster)],
        },
        "data": {USERDATA_KEY: base64.b64encode(data).decode("ascii")},
    }


def ours(secret: Mapping[str, Any], vm: str) -> bool:
    """Whether an existing Secret of that name is guestha's user-data Secret of this VM (a
    user's Secret of the same name is never overwritten; guestha's own, also one left by an
    earlier cluster of the VM, is replaced with a new owner)."""
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return (all(labels.get(k) == v for k, v in MANAGED_BY.items())
            and labels.get(MEMBER_LABEL) == vm)
