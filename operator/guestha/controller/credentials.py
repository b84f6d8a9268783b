"""A cluster's channel credentials, kept in one Secret: get it, or create it once.

The Secret `<cluster>-guestha-ca` (type Opaque, in the cluster's namespace) holds the
cluster CA's certificate and key, the operator's client certificate and key, and the
cluster's heartbeat key (SECRET_KEYS). It is owned by the InGuestCluster (controller
ownerReference with blockOwnerDeletion), so the garbage collector removes it with the
cluster, and labelled `app.kubernetes.io/managed-by: guestha`, `guestha.io/cluster: <name>`.

Races: two callers (two webhook calls for two members of a new cluster, or the cluster's
controller and a webhook) may both find no Secret and both create one; the apiserver lets
one win (409 AlreadyExists for the other), and the loser reads the winner's, so every
member of a cluster gets certificates of the same CA. A Secret of that name that guestha did
not make for this very InGuestCluster (another owner uid: an earlier cluster of the same
name, still being collected) is never used: CredentialsError says so and the caller retries.
The operator's own certificate is re-issued (with the same CA) once it is due for rotation
(guestha.channel.pki.due_for_rotation), with an update that fails on a concurrent change.

`ClusterCredentials.ssl_context()` is guestha.channel.transport.operator_context over these
PEMs. ssl loads a certificate chain only from files, so the PEMs are written to a private
temporary folder (mode 0700, key files 0600), loaded, and removed at once: the keys live on
disk only for the moment of loading.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import datetime
import os
import shutil
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guestha.channel import pki
from guestha.channel.transport import operator_context
from guestha.controller import api
from guestha.kubevirt import kubeapi

SUFFIX = "-guestha-ca"
CA_CERT, CA_KEY = "ca.crt", "ca.key"
OPERATOR_CERT, OPERATOR_KEY = "operator.crt", "operator.key"
HEARTBEAT_KEY = "heartbeat.key"
HEARTBEAT_KEY_NEXT = "heartbeat.key.next"  # during a rotation (controller.heartbeatkeys)
SECRET_KEYS = (CA_CERT, CA_KEY, OPERATOR_CERT, OPERATOR_KEY, HEARTBEAT_KEY)
MANAGED_BY = {"app.kubernetes.io/managed-by": "guestha"}
CLUSTER_LABEL = "guestha.io/cluster"
GROUP_VERSION, KIND = "guestha.io/v1alpha1", "InGuestCluster"
MAX_NAME = 253
TEST_CERT_SECONDS_ENV = "GUESTHA_TEST_CERT_SECONDS"  # a test hook: member_validity


def member_validity() -> datetime.timedelta:
    """How long a member's certificate is valid: pki.LEAF_VALIDITY, unless the test hook
    TEST_CERT_SECONDS_ENV (never set in production) makes it seconds, so that rotation
    (controller.rotation) happens within a test."""
    raw = os.environ.get(TEST_CERT_SECONDS_ENV, "")
    if not raw:
        return pki.LEAF_VALIDITY
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{TEST_CERT_SECONDS_ENV}: not a number of seconds: {raw[:20]!r}") \
            from None
    if not 10 <= seconds <= pki.LEAF_VALIDITY.total_seconds():
        raise ValueError(f"{TEST_CERT_SECONDS_ENV}: must be 10 to "
                         f"{pki.LEAF_VALIDITY.total_seconds():.0f} seconds, got {raw[:20]}")
    return datetime.timedelta(seconds=seconds)


class CredentialsError(Exception):
    """The cluster's credentials cannot be used now; the message names the Secret and why."""


def secret_name(cluster: str) -> str:
    """The CA Secret's name for `cluster`; a name too long for a Secret raises ValueError."""
    name = f"{cluster}{SUFFIX}"
    if len(name) > MAX_NAME:
        raise ValueError(f"metadata.name: the InGuestCluster's name is too long for its CA "
                         f"Secret {name[:40]}... ({len(name)} > {MAX_NAME} characters)")
    return name


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """The controller ownerReference to an InGuestCluster (its body or its metadata)."""
    meta = owner.get("metadata", owner)
    if not meta.get("uid") or not meta.get("name"):
        raise ValueError("owner: needs the InGuestCluster's metadata.name and metadata.uid")
    return {"apiVersion": GROUP_VERSION, "kind": KIND, "name": str(meta["name"]),
            "uid": str(meta["uid"]), "controller": True, "blockOwnerDeletion": True}


@dataclass(frozen=True)
class ClusterCredentials:
    """One cluster's CA, the operator's client certificate and the heartbeat key (PEMs)."""

    namespace: str
    cluster: str
    ca_pem: bytes
    ca_key_pem: bytes = field(repr=False)
    operator_cert_pem: bytes
    operator_key_pem: bytes = field(repr=False)
    heartbeat_key: bytes = field(repr=False)
    heartbeat_next: bytes | None = field(default=None, repr=False)  # a rotation's next

    @property
    def ca(self) -> pki.KeyPair:
        return pki.KeyPair(self.ca_pem, self.ca_key_pem)

    def issue_member(self, member: str, addresses: tuple[str, ...] = (),
                     validity: datetime.timedelta | None = None) -> pki.KeyPair:
        """A serving certificate for a member's agent, of this cluster's CA, valid for
        `validity` (member_validity() unless given)."""
        return pki.issue_member(self.ca, member, addresses, None,
                                member_validity() if validity is None else validity)

    def ssl_context(self) -> ssl.SSLContext:
        """The operator's TLS context for this cluster's agents (operator_context's rules:
        only this CA, the operator's certificate presented, the member's name checked)."""
        folder = Path(tempfile.mkdtemp(prefix="guestha-tls-"))  # mode 0700
        try:
            files = {}
            for name, data in (("ca.crt", self.ca_pem), ("operator.crt", self.operator_cert_pem),
                               ("operator.key", self.operator_key_pem)):
                path = folder / name
                path.touch(mode=0o600)
                path.write_bytes(data)
                files[name] = path
            return operator_context(files["ca.crt"], files["operator.crt"],
                                    files["operator.key"])
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def secret_data(self) -> dict[str, str]:
        """The Secret's `data` (base64 values)."""
        raw = {CA_CERT: self.ca_pem, CA_KEY: self.ca_key_pem,
               OPERATOR_CERT: self.operator_cert_pem, OPERATOR_KEY: self.operator_key_pem,
               HEARTBEAT_KEY: self.heartbeat_key}
        if self.heartbeat_next is not None:
            raw[HEARTBEAT_KEY_NEXT] = self.heartbeat_next
        return {k: base64.b64encode(v).decode("ascii") for k, v in raw.items()}

    @classmethod
    def new(cls, namespace: str, cluster: str,
            now: datetime.datetime | None = None) -> ClusterCredentials:
        """Fresh credentials: a new CA, operator certificate and heartbeat key."""
        ca = pki.new_ca(cluster, now)
        operator = pki.issue_operator(ca, now)
        return cls(namespace, cluster, ca.cert_pem, ca.key_pem, operator.cert_pem,
                   operator.key_pem, pki.new_heartbeat_key())

    @classmethod
    def from_secret(cls, secret: Mapping[str, Any], namespace: str,
                    cluster: str) -> ClusterCredentials:
        """Read from the CA Secret; a missing or broken key raises CredentialsError."""
        where = f"Secret {namespace}/{secret_name(cluster)}"
        data = secret.get("data") or {}
        values: dict[str, bytes] = {}
        for key in SECRET_KEYS:
            if not data.get(key):
                raise CredentialsError(f"{where}: data.{key} is missing")
            try:
                values[key] = base64.b64decode(data[key], validate=True)
            except (binascii.Error, ValueError):
                raise CredentialsError(f"{where}: data.{key} is not base64") from None
        try:
            if not pki.matches(values[CA_CERT], values[CA_KEY]):
                raise CredentialsError(f"{where}: data.{CA_KEY} is not the key of data.{CA_CERT}")
            if not pki.issued_by(values[OPERATOR_CERT], values[CA_CERT]):
                raise CredentialsError(f"{where}: data.{OPERATOR_CERT} is not issued by "
                                       f"data.{CA_CERT}")
        except ValueError as e:
            raise CredentialsError(f"{where}: {e}") from None
        upcoming = None
        if data.get(HEARTBEAT_KEY_NEXT):
            try:
                upcoming = base64.b64decode(data[HEARTBEAT_KEY_NEXT], validate=True)
            except (binascii.Error, ValueError):
                raise CredentialsError(f"{where}: data.{HEARTBEAT_KEY_NEXT} is not "
                                       "base64") from None
        return cls(namespace, cluster, values[CA_CERT], values[CA_KEY], values[OPERATOR_CERT],
                   values[OPERATOR_KEY], values[HEARTBEAT_KEY], upcoming or None)

    def with_new_operator_certificate(self,
                                      now: datetime.datetime | None = None) -> ClusterCredentials:
        operator = pki.issue_operator(self.ca, now)
        return dataclasses.replace(self, operator_cert_pem=operator.cert_pem,
                                   operator_key_pem=operator.key_pem)


def build_secret(credentials: ClusterCredentials, owner: Mapping[str, Any]) -> dict[str, Any]:
    """The CA Secret's manifest (pure)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name(credentials.cluster),
            "namespace": credentials.namespace,
            "labels": {**MANAGED_BY, CLUSTER_LABEL: credentials.cluster},
            "ownerReferences": [owner_reference(owner)],
        },
        "data": credentials.secret_data(),
    }


def check_ownership(secret: Mapping[str, Any], cluster: str, owner: Mapping[str, Any]) -> None:
    """Pure: the Secret was made by guestha for this InGuestCluster (its uid), else
    CredentialsError saying whose it is."""
    meta = secret.get("metadata") or {}
    name = f"Secret {meta.get('namespace')}/{meta.get('name')}"
    labels = meta.get("labels") or {}
    if labels.get(CLUSTER_LABEL) != cluster or any(labels.get(k) != v
                                                    for k, v in MANAGED_BY.items()):
        raise CredentialsError(f"{name}: exists but was not made by guestha for cluster "
                               f"{cluster!r} (labels {CLUSTER_LABEL} and "
                               f"app.kubernetes.io/managed-by); rename or remove it")
    uid = owner_reference(owner)["uid"]
    owners = [r.get("uid") for r in meta.get("ownerReferences") or ()]
    if uid not in owners:
        raise CredentialsError(f"{name}: belongs to an earlier InGuestCluster of this name "
                               f"(owner uid {', '.join(map(str, owners)) or 'none'}, not "
                               f"{uid}); waiting for the garbage collector to remove it")


def _read(namespace: str, name: str) -> dict[str, Any] | None:
    return api.get(api.secrets_path(namespace, name))


def _create(namespace: str, body: dict[str, Any]) -> bool:
    """Creates the Secret; False when another caller's exists already (409)."""
    try:
        api.request("POST", api.secrets_path(namespace), body)
    except kubeapi.ApiError as e:
        if e.conflict:
            return False
        raise
    return True


def _replace(namespace: str, name: str, body: dict[str, Any]) -> bool:
    """Replaces the Secret at its resourceVersion; False when it changed meanwhile (409)."""
    try:
        api.request("PUT", api.secrets_path(namespace, name), body)
    except kubeapi.ApiError as e:
        if e.conflict:
            return False
        raise
    return True


def get_or_create(namespace: str, cluster: str, owner: Mapping[str, Any],
                  now: datetime.datetime | None = None, attempts: int = 5) -> ClusterCredentials:
    """Blocking: the cluster's credentials from its CA Secret, made when absent."""
    name = secret_name(cluster)
    for _ in range(attempts):
        secret = _read(namespace, name)
        if secret is None:
            fresh = ClusterCredentials.new(namespace, cluster, now)
            if _create(namespace, build_secret(fresh, owner)):
                return fresh
            continue  # another caller won: read theirs
        check_ownership(secret, cluster, owner)
        credentials = ClusterCredentials.from_secret(secret, namespace, cluster)
        at = now or datetime.datetime.now(datetime.UTC)
        if not pki.due_for_rotation(credentials.operator_cert_pem, at):
            return credentials
        renewed = credentials.with_new_operator_certificate(now)
        body = dict(secret)
        body["data"] = renewed.secret_data()
        if _replace(namespace, name, body):
            return renewed
    raise CredentialsError(f"Secret {namespace}/{name}: changed under every one of "
                           f"{attempts} attempts to read or write it")


def _rewrite(namespace: str, cluster: str, owner: Mapping[str, Any],
             change: Callable[[ClusterCredentials], ClusterCredentials | None],
             attempts: int = 5) -> ClusterCredentials:
    """Blocking: the CA Secret changed by `change` (None: nothing to change), replaced at
    the resourceVersion it was read at, read again on a conflict."""
    name = secret_name(cluster)
    for _ in range(attempts):
        secret = _read(namespace, name)
        if secret is None:
            raise CredentialsError(f"Secret {namespace}/{name}: not found")
        check_ownership(secret, cluster, owner)
        current = ClusterCredentials.from_secret(secret, namespace, cluster)
        changed = change(current)
        if changed is None:
            return current
        body = dict(secret)
        body["data"] = changed.secret_data()
        if _replace(namespace, name, body):
            return changed
    raise CredentialsError(f"Secret {namespace}/{name}: changed under every one of "
                           f"{attempts} attempts to write it")


def begin_heartbeat_rotation(namespace: str, cluster: str, owner: Mapping[str, Any]) -> bytes:
    """Blocking: the next heartbeat secret, stored in the CA Secret (made once: a
    rotation already begun keeps its next secret)."""
    def begin(c: ClusterCredentials) -> ClusterCredentials | None:
        if c.heartbeat_next is not None:
            return None
        return dataclasses.replace(c, heartbeat_next=pki.new_heartbeat_key())
    upcoming = _rewrite(namespace, cluster, owner, begin).heartbeat_next
    assert upcoming is not None
    return upcoming


def finish_heartbeat_rotation(namespace: str, cluster: str, owner: Mapping[str, Any],
                              upcoming: bytes) -> bool:
    """Blocking: the next heartbeat secret becomes the current one (False: the Secret
    holds another next secret than `upcoming`, and nothing changed)."""
    def finish(c: ClusterCredentials) -> ClusterCredentials | None:
        if c.heartbeat_next != upcoming:
            return None
        return dataclasses.replace(c, heartbeat_key=upcoming, heartbeat_next=None)
    return _rewrite(namespace, cluster, owner, finish).heartbeat_key == upcoming


def existing(namespace: str, cluster: str,
             owner: Mapping[str, Any]) -> ClusterCredentials | None:
    """Blocking: the cluster's credentials if its CA Secret exists (None: it is gone, as
    in a namespace being deleted, where nothing may be created); never writes."""
    secret = _read(namespace, secret_name(cluster))
    if secret is None:
        return None
    check_ownership(secret, cluster, owner)
    return ClusterCredentials.from_secret(secret, namespace, cluster)


async def existing_credentials(namespace: str, cluster: str,
                               owner: Mapping[str, Any]) -> ClusterCredentials | None:
    """`existing` without blocking the event loop."""
    return await asyncio.to_thread(existing, namespace, cluster, owner)


async def cluster_credentials(namespace: str, cluster: str,
                              owner: Mapping[str, Any]) -> ClusterCredentials:
    """Get-or-create the cluster's CA Secret, owned by the InGuestCluster `owner` (its body
    or metadata: name and uid), and return its credentials. Raises CredentialsError when
    the Secret cannot be used, and kubeapi.ApiError on API failures."""
    return await asyncio.to_thread(get_or_create, namespace, cluster, owner)
