"""The channel's certificates: one private CA per InGuestCluster, a serving certificate per
member's agent, the operator's client certificate, and the cluster's heartbeat key.

Why `cryptography`: X.509 building and signing is not in the standard library, and a
hand-written ASN.1 encoder would be a liability; `cryptography` is already the test bed's
certificate library, so the operator adds no dependency. Only the operator imports this
module (the agent only loads PEM files through ssl).

The key algorithm is ECDSA P-256 with SHA-256 signatures. Ed25519 would work with this
machine's ssl too (checked: TLS 1.2 and 1.3 handshakes with an Ed25519 CA and leaf on
OpenSSL 3.0), but P-256 is what every guest's TLS stack accepts, FIPS-mode RHEL 9 guests
included, where Ed25519 certificates are refused; the agent runs on whatever OpenSSL its
guest ships.

What the two ends check, and so what the certificates must carry:
- the operator (guestha.channel.transport.operator_context) trusts only the cluster CA and
  checks the agent's certificate names the member: its DNS subject alternative name is the
  member's name (the VM's name), which always suffices; the VMI's address is an IP SAN when
  known at issue time, for tools that dial the address;
- the agent (guestha.agent.server) requires a client certificate of the cluster CA whose
  CN (or a DNS/URI SAN) is guestha.protocol.constants.OPERATOR_NAME.

Pure except for randomness and the clock (`now` can be given): no I/O. Rotation is decided
by `due_for_rotation`, a pure function of a certificate, a time and a fraction.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from guestha.protocol import tls
from guestha.protocol.constants import OPERATOR_NAME

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)
# Certificates start this long before they are issued: clocks of the guests and of the
# operator's node may disagree by a little. (A short-lived leaf, as tests make them, is
# backdated a tenth of its lifetime at most, so its rotation is not due at once.)
BACKDATE = datetime.timedelta(minutes=5)
# A leaf is due for rotation once this fraction of its lifetime has passed (as kubelet's
# client certificate manager renews at 70-90 %).
ROTATE_AT = 2 / 3
HEARTBEAT_KEY_BYTES = 32


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, PEM-encoded (PKCS#8 key, unencrypted)."""

    cert_pem: bytes
    key_pem: bytes


def _now(now: datetime.datetime | None) -> datetime.datetime:
    if now is None:
        return datetime.datetime.now(datetime.UTC)
    if now.tzinfo is None:
        raise ValueError("now: must carry a time zone (UTC)")
    return now


def _name(common_name: str) -> x509.Name:
    if not common_name:
        raise ValueError("common name: empty")
    if len(common_name) > 64:  # X.520 ub-common-name
        raise ValueError(f"common name: at most 64 characters, got {len(common_name)} "
                         f"({common_name[:20]}...)")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca,
                         content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, encipher_only=False,
                         decipher_only=False)


def new_ca(cluster: str, now: datetime.datetime | None = None) -> KeyPair:
    """A self-signed CA for one InGuestCluster (CN "guestha <cluster>", truncated to fit)."""
    if not cluster:
        raise ValueError("cluster: empty")
    at = _now(now)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"guestha {cluster}"[:64])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - BACKDATE)
        .not_valid_after(at + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _load_ca(ca: KeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(ca.cert_pem)
        key = serialization.load_pem_private_key(ca.key_pem, password=None)
    except ValueError as e:
        raise ValueError(f"ca: not a PEM certificate and key: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"ca: the key is {type(key).__name__}, not an EC key")
    return cert, key


def _leaf(ca: KeyPair, common_name: str, names: Sequence[x509.GeneralName],
          usage: x509.ObjectIdentifier, now: datetime.datetime | None,
          validity: datetime.timedelta = LEAF_VALIDITY) -> KeyPair:
    ca_cert, ca_key = _load_ca(ca)
    at = _now(now)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - min(BACKDATE, validity / 10))
        .not_valid_after(min(at + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)),
                                        critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_serving(ca: KeyPair, common_name: str, dns_names: Sequence[str] = (),
                  addresses: Sequence[str] = (),
                  now: datetime.datetime | None = None,
                  validity: datetime.timedelta = LEAF_VALIDITY) -> KeyPair:
    """A TLS server certificate of `ca`: DNS SANs `dns_names`, IP SANs `addresses` (a bad
    address raises ValueError naming it)."""
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    for address in addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            raise ValueError(f"addresses: {address!r} is not an IP address") from None
    return _leaf(ca, common_name, names, ExtendedKeyUsageOID.SERVER_AUTH, now, validity)


def issue_member(ca: KeyPair, member: str, addresses: Sequence[str] = (),
                 now: datetime.datetime | None = None,
                 validity: datetime.timedelta = LEAF_VALIDITY) -> KeyPair:
    """The serving certificate of a member's agent: CN and DNS SAN = the member's name (what
    the operator's TLS context checks), each of `addresses` (the VMI's IPs, when known) an IP
    SAN. A bad address raises ValueError naming it."""
    return issue_serving(ca, member, (member,), addresses, now, validity)


def issue_operator(ca: KeyPair, now: datetime.datetime | None = None) -> KeyPair:
    """The operator's client certificate: CN = OPERATOR_NAME, client authentication only."""
    return _leaf(ca, OPERATOR_NAME, (), ExtendedKeyUsageOID.CLIENT_AUTH, now)


def new_heartbeat_key() -> bytes:
    """The cluster's heartbeat key: 32 random bytes (the agents' HMAC key)."""
    return secrets.token_bytes(HEARTBEAT_KEY_BYTES)


def _certificate(cert_pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise ValueError(f"certificate: not PEM: {e}") from None


def expires(cert_pem: bytes) -> datetime.datetime:
    """When the certificate stops being valid (UTC)."""
    return _certificate(cert_pem).not_valid_after_utc


def due_for_rotation(cert_pem: bytes, now: datetime.datetime,
                     fraction: float = ROTATE_AT) -> bool:
    """Pure: whether `fraction` of the certificate's lifetime (not before to not after)
    has passed at `now`; an expired or not-yet-valid certificate is always due."""
    cert = _certificate(cert_pem)
    return tls.due(cert.not_valid_before_utc, cert.not_valid_after_utc, _now(now), fraction)


def matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether the key is the certificate's own (a Secret edited by hand may mix them)."""
    cert = _certificate(cert_pem)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError:
        return False
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(cert.public_key().public_bytes(serialization.Encoding.PEM, public)
                == key.public_key().public_bytes(serialization.Encoding.PEM, public))


def issued_by(cert_pem: bytes, ca_cert_pem: bytes) -> bool:
    """Whether `cert_pem` carries a valid signature of the CA certificate's key."""
    cert, ca = _certificate(cert_pem), _certificate(ca_cert_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
