"""Installing a newer agent bundle over the channel (PUT /v1/bundle): the request, the
answer, and what the status report says of the bundle.

After the first boot everything reaches the agent over the channel, agent upgrades
included (DESIGN.md "Injection"). The operator puts the zipapp's bytes (base64), its
version (the content hash stored in it as guestha/agent/VERSION) and its sha256 with the
usual command envelope (epoch, operationId). The agent checks all three against the
bytes, writes the bundle beside the one it runs from as a *trial*, answers, and restarts
itself; the bundle it ran from stays in place until the trial has started, so a trial
that does not come up is rolled back (guestha.agent.bundles has the rules).
docs/agent-api.md ("Upgrading the agent") is the reference.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from guestha.protocol import TYPE_CHECKING, fields

if TYPE_CHECKING:
    from typing import Any

# The largest bundle accepted (bytes, decoded). Its base64 (4/3 of it) and the envelope
# stay under the channel's 1 MiB body limit; today's bundle is about 120 kB.
MAX_BUNDLE_BYTES = 640 * 1024
MAX_VERSION_CHARS = 64
BUNDLE_FIELDS = frozenset({"bundle", "version", "sha256"})


@dataclass(frozen=True)
class BundleUpload:
    """The body of PUT /v1/bundle beside the command envelope, checked: the bytes decode,
    fit MAX_BUNDLE_BYTES and have the sha256 given. (That the bytes are a bundle of
    `version` is the agent's check: it opens the zipapp.)"""

    data: bytes
    version: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": base64.b64encode(self.data).decode("ascii"),
                "version": self.version, "sha256": self.sha256}

    @classmethod
    def of(cls, data: bytes, version: str) -> BundleUpload:
        return cls(data, version, hashlib.sha256(data).hexdigest())

    @classmethod
    def from_dict(cls, raw: Any, where: str = "body") -> BundleUpload:
        body = fields.obj(raw, where)
        encoded = fields.text(body, "bundle", where)
        version = fields.text(body, "version", where)
        digest = fields.text(body, "sha256", where)
        if len(version) > MAX_VERSION_CHARS or not all(
                c.isalnum() or c in "._-+" for c in version):
            raise fields.FieldError(f"{where}.version: at most {MAX_VERSION_CHARS} letters, "
                                    f"digits and . _ - +, got {version!r}"[:300])
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise fields.FieldError(f"{where}.sha256: 64 lower-case hex digits, "
                                    f"got {digest!r}"[:300])
        if len(encoded) > (MAX_BUNDLE_BYTES + 2) // 3 * 4:
            raise fields.FieldError(f"{where}.bundle: larger than {MAX_BUNDLE_BYTES} bytes")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as e:
            raise fields.FieldError(f"{where}.bundle: not base64: {e}") from e
        if not data:
            raise fields.FieldError(f"{where}.bundle: empty")
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise fields.FieldError(f"{where}.sha256: the bundle's sha256 is {actual}, "
                                    f"not {digest}: it was damaged or is another bundle")
        return cls(data, version, digest)


@dataclass(frozen=True)
class BundleInstalled:
    """The answer to PUT /v1/bundle. `restarting`: the trial was written and the agent
    restarts into it (the next run reports `version` when it came up; the one before it
    when the trial was rolled back). False: this agent runs `version` already."""

    operation_id: str
    epoch: int
    version: str
    previous_version: str
    restarting: bool
    replayed: bool = False  # answered from the record of an earlier try (not on the wire)

    def to_dict(self) -> dict[str, Any]:
        return {"installed": True, "operationId": self.operation_id, "epoch": self.epoch,
                "version": self.version, "previousVersion": self.previous_version,
                "restarting": self.restarting}

    @classmethod
    def from_dict(cls, raw: Any, replayed: bool = False, where: str = "body"
                  ) -> BundleInstalled:
        body = fields.obj(raw, where)
        if body.get("installed") is not True:
            raise fields.FieldError(f"{where}.installed: must be true, got "
                                    f"{body.get('installed')!r}")
        return cls(fields.text(body, "operationId", where),
                   fields.integer(body, "epoch", None, where),
                   fields.text(body, "version", where),
                   fields.text(body, "previousVersion", where),
                   fields.boolean(body, "restarting", None, where), replayed)


@dataclass(frozen=True)
class Rollback:
    """A trial bundle that did not come up and was removed (the bundle before it runs)."""

    version: str  # the trial's version
    reason: str
    time: str  # RFC 3339, when the rollback happened

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "reason": self.reason, "time": self.time}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> Rollback:
        body = fields.obj(raw, where)
        return cls(fields.text(body, "version", where), fields.text(body, "reason", where),
                   fields.text(body, "time", where))


@dataclass(frozen=True)
class BundleStatus:
    """`bundle` of GET /v1/status: where the agent runs from (None: not from a bundle, e.g.
    a source tree, which cannot install one), and the last trial rolled back in this
    guest (None: none)."""

    path: str | None
    rollback: Rollback | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path,
                "rollback": None if self.rollback is None else self.rollback.to_dict()}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> BundleStatus:
        body = fields.obj(raw, where)
        rollback = body.get("rollback")
        return cls(fields.optional_text(body, "path", where),
                   None if rollback is None else Rollback.from_dict(rollback,
                                                                    f"{where}.rollback"))
