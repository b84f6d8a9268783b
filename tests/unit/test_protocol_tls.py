"""PUT /v1/tls's body and the agent's reading of a certificate's validity
(guestha.protocol.tls), checked against the cryptography library's reading; the rotation
rule as a table."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from guestha.channel import pki
from guestha.controller import credentials, rotation
from guestha.protocol import tls
from guestha.protocol.fields import FieldError

pytestmark = pytest.mark.unit

UTC = datetime.UTC


def certificate(start: datetime.datetime, end: datetime.datetime) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web-a")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(("start", "end"), [
    (datetime.datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC),
     datetime.datetime(2027, 11, 30, 10, 0, 0, tzinfo=UTC)),
    (datetime.datetime(1999, 1, 1, tzinfo=UTC),  # UTCTime 99: 1999
     datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)),
    (datetime.datetime(2026, 1, 1, tzinfo=UTC),  # GeneralizedTime from 2050 on
     datetime.datetime(2061, 6, 15, 12, 30, 5, tzinfo=UTC)),
])
def test_the_validity_read_is_the_certificates(start: datetime.datetime,
                                               end: datetime.datetime) -> None:
    assert tls.validity(certificate(start, end)) == (start, end)


def test_the_validity_of_the_operators_member_certificates() -> None:
    pair = pki.issue_member(pki.new_ca("web"), "web-a", ("10.0.0.12",))
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert tls.validity(pair.cert_pem.decode()) == (cert.not_valid_before_utc,
                                                    cert.not_valid_after_utc)


@pytest.mark.parametrize(("text", "words"), [
    ("", "not a PEM certificate"),
    ("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----", "not base64"),
    ("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----", "truncated"),
    ("-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----", "not an X.509"),
])
def test_what_is_no_certificate_is_refused_naming_the_field(text: str, words: str) -> None:
    with pytest.raises(FieldError, match=rf"^body\.certificate: .*{words}"):
        tls.validity(text, "body.certificate")


T0 = datetime.datetime(2026, 1, 1, tzinfo=UTC)
DAY = datetime.timedelta(days=1)


@pytest.mark.parametrize(("now", "fraction", "expected"), [
    (T0 + 1 * DAY, 2 / 3, False),
    (T0 + 59 * DAY, 2 / 3, False),
    (T0 + 60 * DAY, 2 / 3, True),  # two thirds of 90 days
    (T0 + 89 * DAY, 2 / 3, True),
    (T0 + 90 * DAY, 2 / 3, True),  # expired
    (T0 - DAY, 2 / 3, True),  # not yet valid
    (T0 + 45 * DAY, 0.5, True),
])
def test_when_a_certificate_is_due(now: datetime.datetime, fraction: float,
                                   expected: bool) -> None:
    assert tls.due(T0, T0 + 90 * DAY, now, fraction) is expected
    status = tls.TlsStatus(tls.iso(T0), tls.iso(T0 + 90 * DAY))
    assert status.due(now, fraction) is expected


def test_the_update_body_names_each_bad_field() -> None:
    pair = pki.issue_member(pki.new_ca("web"), "web-a")
    good = {"certificate": pair.cert_pem.decode(), "key": pair.key_pem.decode()}
    assert tls.TlsUpdate.from_dict(good).to_dict() == good
    with pytest.raises(FieldError, match=r"^body\.key: required"):
        tls.TlsUpdate.from_dict({"certificate": good["certificate"]})
    with pytest.raises(FieldError, match=r"^body\.key: not a PEM private key"):
        tls.TlsUpdate.from_dict({**good, "key": good["certificate"]})
    with pytest.raises(FieldError, match=r"^body\.ca: not a PEM certificate"):
        tls.TlsUpdate.from_dict({**good, "ca": "junk"})
    with pytest.raises(FieldError, match=r"^body: unknown field"):
        tls.TlsUpdate.from_dict({**good, "chain": "x"})
    with pytest.raises(FieldError, match=r"^body\.certificate: at most"):
        tls.TlsUpdate.from_dict({**good, "certificate": "x" * (tls.MAX_PEM + 1)})


def test_a_short_lived_member_certificate_is_not_due_at_once() -> None:
    """Backdated a tenth of its lifetime at most (pki.BACKDATE is 5 minutes): a test's
    40 s certificate is due at two thirds of its 44 s, not at its issue."""
    now = datetime.datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    pair = pki.issue_member(pki.new_ca("web", now), "web-a", (), now,
                            datetime.timedelta(seconds=40))
    status = tls.TlsStatus.of(pair.cert_pem.decode())
    assert status.not_before == tls.iso(now - datetime.timedelta(seconds=4))
    assert not status.due(now, pki.ROTATE_AT)
    assert not status.due(now + datetime.timedelta(seconds=25), pki.ROTATE_AT)
    assert status.due(now + datetime.timedelta(seconds=26), pki.ROTATE_AT)
    assert rotation.due_at(status) == now + datetime.timedelta(seconds=-4 + 44 * 2 / 3)


def test_the_member_validity_hook_is_checked() -> None:
    import os
    old = os.environ.pop(credentials.TEST_CERT_SECONDS_ENV, None)
    try:
        assert credentials.member_validity() == pki.LEAF_VALIDITY
        os.environ[credentials.TEST_CERT_SECONDS_ENV] = "40"
        assert credentials.member_validity() == datetime.timedelta(seconds=40)
        for bad in ("soon", "1"):
            os.environ[credentials.TEST_CERT_SECONDS_ENV] = bad
            with pytest.raises(ValueError, match=credentials.TEST_CERT_SECONDS_ENV):
                credentials.member_validity()
    finally:
        os.environ.pop(credentials.TEST_CERT_SECONDS_ENV, None)
        if old is not None:
            os.environ[credentials.TEST_CERT_SECONDS_ENV] = old


def test_the_agents_reading_without_datetime_says_the_same() -> None:
    """The agent reads its certificate's validity as text by the DER digits (it keeps
    the datetime module out of its memory); it must say what the datetime reading says,
    for both DER time forms (UTCTime before 2050, GeneralizedTime from 2050)."""
    for start, end in ((T0, T0 + 90 * DAY),
                       (T0, datetime.datetime(2051, 3, 4, 5, 6, 7, tzinfo=datetime.UTC))):
        pem = certificate(start, end)
        assert tls.validity_text(pem) == tuple(tls.iso(t) for t in tls.validity(pem))
