"""Certificate rotation over the channel: PUT /v1/tls, its answer, and the validity of the
agent's serving certificate as its status reports it.

cloud-init runs once per instance, so a member's certificate, issued when its VMI was
created, must be renewed over the channel before it expires: the operator issues a new
one (same CA, same names) once `due` says so and puts it; the agent checks that it loads,
stores it in place of the files its identity names, and serves new connections with it
(open ones keep theirs), without a restart and without touching its groups.

`validity` reads notBefore/notAfter out of a PEM certificate with the standard library
only (the agent has no X.509 library, and `ssl` parses certificates only of a live
connection): a small DER walk down to tbsCertificate.validity, nothing else is read.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from guestha.protocol import TYPE_CHECKING, fields

if TYPE_CHECKING:
    import datetime
    from typing import Any

TLS_FIELDS = frozenset({"certificate", "key", "ca"})
MAX_PEM = 64 * 1024  # characters per field
CERT_BEGIN, CERT_END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"


def _der(pem: str, where: str) -> bytes:
    start, end = pem.find(CERT_BEGIN), pem.find(CERT_END)
    if start < 0 or end < start:
        raise fields.FieldError(f"{where}: not a PEM certificate")
    try:
        return base64.b64decode("".join(pem[start + len(CERT_BEGIN):end].split()),
                                validate=True)
    except (binascii.Error, ValueError):
        raise fields.FieldError(f"{where}: the PEM certificate is not base64") from None


def _tlv(data: bytes, at: int, where: str) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at `at`."""
    if at + 2 > len(data):
        raise fields.FieldError(f"{where}: truncated certificate")
    tag, length = data[at], data[at + 1]
    at += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or at + count > len(data):
            raise fields.FieldError(f"{where}: bad length in the certificate")
        length = int.from_bytes(data[at:at + count], "big")
        at += count
    if at + length > len(data):
        raise fields.FieldError(f"{where}: truncated certificate")
    return tag, at, at + length


def _time_text(tag: int, raw: bytes, where: str) -> str:
    """The DER time as ISO 8601 UTC text, by its digits: the agent reads its own
    certificate's validity without the datetime module (its memory rules)."""
    text = raw.decode("ascii", "replace")
    digits = text[:-1]
    if not text.endswith("Z") or not digits.isdigit() or len(digits) not in (12, 14) \
            or (tag == 0x17) != (len(digits) == 12) or tag not in (0x17, 0x18):
        raise fields.FieldError(f"{where}: unreadable validity time {text[:20]!r}")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ (RFC 5280: 50-99 are 19xx)
        digits = ("19" if int(digits[:2]) >= 50 else "20") + digits
    y, mo, d, h, mi, s = (digits[:4], digits[4:6], digits[6:8], digits[8:10],
                          digits[10:12], digits[12:14])
    if not (1 <= int(mo) <= 12 and 1 <= int(d) <= 31 and int(h) < 24 and int(mi) < 60
            and int(s) < 61):
        raise fields.FieldError(f"{where}: unreadable validity time {text[:20]!r}")
    return f"{y}-{mo}-{d}T{h}:{mi}:{s}Z"


def _time(tag: int, raw: bytes, where: str) -> datetime.datetime:
    import datetime

    text = raw.decode("ascii", "replace")
    try:
        if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ (RFC 5280: 50-99 are 19xx)
            at = datetime.datetime.strptime(text, "%y%m%d%H%M%SZ")
            if at.year >= 2050:
                at = at.replace(year=at.year - 100)
        elif tag == 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
            at = datetime.datetime.strptime(text, "%Y%m%d%H%M%SZ")
        else:
            raise ValueError(f"tag {tag:#x}")
    except ValueError:
        raise fields.FieldError(f"{where}: unreadable validity time {text[:20]!r}") from None
    return at.replace(tzinfo=datetime.timezone.utc)


def validity(pem: str, where: str = "certificate") -> tuple[datetime.datetime,
                                                             datetime.datetime]:
    """(notBefore, notAfter) of the first certificate in `pem`; FieldError naming
    `where` when it is no certificate."""
    (t1, r1), (t2, r2) = _validity_der(pem, where)
    return _time(t1, r1, where), _time(t2, r2, where)


def validity_text(pem: str, where: str = "certificate") -> tuple[str, str]:
    """`validity` as ISO 8601 UTC text, without the datetime module (the agent's)."""
    (t1, r1), (t2, r2) = _validity_der(pem, where)
    return _time_text(t1, r1, where), _time_text(t2, r2, where)


def _validity_der(pem: str, where: str) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    data = _der(pem, where)
    _, cert, _ = _tlv(data, 0, where)  # Certificate SEQUENCE
    tag, at, _ = _tlv(data, cert, where)  # tbsCertificate SEQUENCE
    if tag != 0x30:
        raise fields.FieldError(f"{where}: not an X.509 certificate")
    tag, value, after = _tlv(data, at, where)
    if tag == 0xA0:  # [0] version
        at = after
    for _ in range(3):  # serialNumber, signature, issuer
        _, _, at = _tlv(data, at, where)
    tag, at, _ = _tlv(data, at, where)  # validity SEQUENCE
    if tag != 0x30:
        raise fields.FieldError(f"{where}: no validity in the certificate")
    tag, value, after = _tlv(data, at, where)
    not_before = (tag, data[value:after])
    tag, value, after = _tlv(data, after, where)
    return not_before, (tag, data[value:after])


def iso(at: datetime.datetime) -> str:
    import datetime

    return at.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str, where: str) -> datetime.datetime:
    import datetime

    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
    except ValueError:
        raise fields.FieldError(f"{where}: not a time like 2026-11-30T10:00:00Z: "
                                f"{text[:30]!r}") from None


def due(not_before: datetime.datetime, not_after: datetime.datetime,
        now: datetime.datetime, fraction: float) -> bool:
    """Pure: whether `fraction` of the lifetime from `not_before` to `not_after` has
    passed at `now`; a certificate outside its validity is always due."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: must be in (0, 1], got {fraction!r}")
    if now < not_before or now >= not_after:
        return True
    return now >= not_before + (not_after - not_before) * fraction


def _pem(body: dict[str, Any], name: str, where: str, required: bool) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise fields.FieldError(f"{where}.{name}: required, a PEM text")
    if len(value) > MAX_PEM:
        raise fields.FieldError(f"{where}.{name}: at most {MAX_PEM} characters, got "
                                f"{len(value)}")
    return value


@dataclass(frozen=True)
class TlsUpdate:
    """PUT /v1/tls (besides the command envelope): the agent's new serving certificate
    and its key, and optionally a new CA bundle to trust the operator by (PEM texts)."""

    certificate: str
    key: str
    ca: str | None = None

    def to_dict(self) -> dict[str, Any]:
        body = {"certificate": self.certificate, "key": self.key}
        if self.ca is not None:
            body["ca"] = self.ca
        return body

    @classmethod
    def from_dict(cls, raw: Any, where: str = "body") -> TlsUpdate:
        body = fields.obj(raw, where)
        fields.check_keys(body, TLS_FIELDS, where)
        certificate = _pem(body, "certificate", where, True) or ""
        validity(certificate, f"{where}.certificate")
        key = _pem(body, "key", where, True) or ""
        if "PRIVATE KEY-----" not in key:
            raise fields.FieldError(f"{where}.key: not a PEM private key")
        ca = _pem(body, "ca", where, False)
        if ca is not None:
            validity(ca, f"{where}.ca")
        return cls(certificate, key, ca)


@dataclass(frozen=True)
class TlsStatus:
    """The serving certificate the agent presents to new connections (status.tls)."""

    not_before: str  # ISO 8601, UTC
    not_after: str

    def to_dict(self) -> dict[str, Any]:
        return {"notBefore": self.not_before, "notAfter": self.not_after}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> TlsStatus:
        body = fields.obj(raw, where)
        not_before = fields.text(body, "notBefore", where)
        not_after = fields.text(body, "notAfter", where)
        parse_iso(not_before, f"{where}.notBefore")
        parse_iso(not_after, f"{where}.notAfter")
        return cls(not_before, not_after)

    @classmethod
    def of(cls, pem: str) -> TlsStatus:
        return cls(*validity_text(pem))

    def due(self, now: datetime.datetime, fraction: float) -> bool:
        return due(parse_iso(self.not_before, "notBefore"),
                   parse_iso(self.not_after, "notAfter"), now, fraction)


@dataclass(frozen=True)
class TlsApplied:
    """The answer to PUT /v1/tls: stored, and served to new connections from now on."""

    operation_id: str
    epoch: int
    tls: TlsStatus
    replayed: bool = False  # answered from the record of an earlier try (not on the wire)

    def to_dict(self) -> dict[str, Any]:
        return {"applied": True, "operationId": self.operation_id, "epoch": self.epoch,
                "tls": self.tls.to_dict()}

    @classmethod
    def from_dict(cls, raw: Any, replayed: bool = False, where: str = "body") -> TlsApplied:
        body = fields.obj(raw, where)
        if body.get("applied") is not True:
            raise fields.FieldError(f"{where}.applied: must be true, got "
                                    f"{body.get('applied')!r}")
        return cls(fields.text(body, "operationId", where),
                   fields.integer(body, "epoch", None, where),
                   TlsStatus.from_dict(body.get("tls"), f"{where}.tls"), replayed)
