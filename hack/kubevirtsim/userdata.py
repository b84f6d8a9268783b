"""Find a VMI's cloud-init data in its spec, as virt-launcher builds the cloud-init disk.

KubeVirt takes the first `cloudInitNoCloud` or `cloudInitConfigDrive` volume; user-data
comes from `userData`, `userDataBase64` or `secretRef` (Secret key `userdata` or
`userData`), network data likewise from `networkData`, `networkDataBase64` or
`networkDataSecretRef` (key `networkdata` or `networkData`). Pure: Secrets come from a
lookup function, so the rules are unit-tested without an apiserver.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
SecretLookup = Callable[[str], Obj | None]  # Secret name in the VMI's namespace -> Secret

DATASOURCES = {"cloudInitNoCloud": "NoCloud", "cloudInitConfigDrive": "ConfigDrive"}
USER_KEYS = ("userdata", "userData")
NETWORK_KEYS = ("networkdata", "networkData")


@dataclass(frozen=True)
class CloudInit:
    """What the guest's cloud-init disk holds."""

    datasource: str  # "NoCloud" | "ConfigDrive"
    volume: str
    user_data: bytes | None
    network_data: bytes | None


class CloudInitError(Exception):
    """The VMI's cloud-init cannot be built; `field` names the offending spec field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class MissingSecret(CloudInitError):
    """A referenced Secret (or its key) does not exist yet: retried when it appears."""

    def __init__(self, field: str, secret: str, message: str) -> None:
        super().__init__(field, message)
        self.secret = secret


class InvalidCloudInit(CloudInitError):
    """The data can never work (bad base64, two sources at once): the VMI fails."""


def _decode_b64(field: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise InvalidCloudInit(field, f"must be a base64 string, not {type(value).__name__}")
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidCloudInit(field, f"is not valid base64 ({exc})") from None


def _from_secret(field: str, ref: Any, keys: tuple[str, ...], lookup: SecretLookup) -> bytes:
    if not isinstance(ref, dict) or not ref.get("name"):
        raise InvalidCloudInit(field, "must name a Secret ({name: ...})")
    name = str(ref["name"])
    secret = lookup(name)
    if secret is None:
        raise MissingSecret(field, name, f"Secret {name!r} not found")
    data = secret.get("data") or {}
    for key in keys:
        if key in data:
            return _decode_b64(f"Secret {name!r} data.{key}", data[key])
    string_data = secret.get("stringData") or {}
    for key in keys:
        if key in string_data:
            return str(string_data[key]).encode()
    raise MissingSecret(field, name, f"Secret {name!r} has no key {' or '.join(keys)}")


def _one(
    source: Obj,
    path: str,
    plain: str,
    b64: str,
    ref: str,
    keys: tuple[str, ...],
    lookup: SecretLookup,
) -> bytes | None:
    given = [f for f in (plain, b64, ref) if source.get(f) not in (None, "")]
    if len(given) > 1:
        raise InvalidCloudInit(
            f"{path}",
            f"has more than one of {', '.join(given)}; KubeVirt accepts exactly one source",
        )
    if source.get(plain) not in (None, ""):
        value = source[plain]
        if not isinstance(value, str):
            raise InvalidCloudInit(f"{path}.{plain}", "must be a string")
        return value.encode()
    if source.get(b64) not in (None, ""):
        return _decode_b64(f"{path}.{b64}", source[b64])
    if source.get(ref) not in (None, ""):
        return _from_secret(f"{path}.{ref}", source[ref], keys, lookup)
    return None


def cloud_init(spec: Obj, lookup: SecretLookup) -> CloudInit | None:
    """The cloud-init of a VMI spec, or None when it has no cloud-init volume.

    Raises MissingSecret (retry later) or InvalidCloudInit (never works).
    """
    for index, volume in enumerate(spec.get("volumes") or []):
        for field, datasource in DATASOURCES.items():
            source = volume.get(field)
            if source is None:
                continue
            if not isinstance(source, dict):
                raise InvalidCloudInit(f"spec.volumes[{index}].{field}", "must be an object")
            path = f"spec.volumes[{index}].{field}"
            user = _one(source, path, "userData", "userDataBase64", "secretRef", USER_KEYS, lookup)
            network = _one(
                source,
                path,
                "networkData",
                "networkDataBase64",
                "networkDataSecretRef",
                NETWORK_KEYS,
                lookup,
            )
            return CloudInit(datasource, str(volume.get("name", "")), user, network)
    return None


def referenced_secrets(spec: Obj) -> set[str]:
    """Names of the Secrets that a VMI spec's cloud-init volumes refer to."""
    names: set[str] = set()
    for volume in spec.get("volumes") or []:
        for field in DATASOURCES:
            source = volume.get(field)
            if not isinstance(source, dict):
                continue
            for ref in ("secretRef", "networkDataSecretRef"):
                value = source.get(ref)
                if isinstance(value, dict) and value.get("name"):
                    names.add(str(value["name"]))
    return names


def hostname(vmi: Obj) -> str:
    """The guest's hostname: spec.hostname, else the VMI's name (as KubeVirt does)."""
    return str(vmi.get("spec", {}).get("hostname") or vmi["metadata"]["name"])
