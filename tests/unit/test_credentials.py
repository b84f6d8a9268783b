"""The cluster's CA Secret and the webhook's registration, pure parts: what the Secret holds
and whose it is (guestha.controller.credentials), the webhook's options and configuration
(guestha.controller.webhook). The API round trips run in the control-plane tier
(tests/controlplane/test_injection_webhook.py)."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest

from guestha.channel import pki
from guestha.controller import credentials, webhook
from guestha.controller.credentials import ClusterCredentials, CredentialsError

pytestmark = pytest.mark.unit

OWNER = {"metadata": {"name": "web", "uid": "uid-1"}}


def secret(creds: ClusterCredentials, owner: dict[str, Any] = OWNER) -> dict[str, Any]:
    return credentials.build_secret(creds, owner)


def test_the_secret_reads_back_as_the_same_credentials() -> None:
    creds = ClusterCredentials.new("apps", "web")
    body = secret(creds)
    assert body["metadata"]["name"] == "web-guestha-ca" and body["type"] == "Opaque"
    assert body["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "guestha",
                                          "guestha.io/cluster": "web"}
    assert body["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True
    credentials.check_ownership(body, "web", OWNER)
    assert ClusterCredentials.from_secret(body, "apps", "web") == creds
    assert "PRIVATE KEY" not in repr(creds)  # no private key in a log line


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("heartbeat.key"), "data.heartbeat.key is missing"),
    (lambda d: d.update({"ca.key": "%%"}), "data.ca.key is not base64"),
    (lambda d: d.update({"ca.key": base64.b64encode(pki.new_ca("x").key_pem).decode()}),
     "data.ca.key is not the key of data.ca.crt"),
    (lambda d: d.update({"operator.crt": base64.b64encode(
        pki.issue_operator(pki.new_ca("x")).cert_pem).decode()}),
     "data.operator.crt is not issued by data.ca.crt"),
])
def test_a_broken_secret_is_named(change: Any, message: str) -> None:
    body = secret(ClusterCredentials.new("apps", "web"))
    change(body["data"])
    with pytest.raises(CredentialsError, match=message.replace(".", r"\.")):
        ClusterCredentials.from_secret(body, "apps", "web")


def test_a_secret_that_is_not_this_clusters_is_never_used() -> None:
    body = secret(ClusterCredentials.new("apps", "web"))
    with pytest.raises(CredentialsError, match="earlier InGuestCluster"):
        credentials.check_ownership(body, "web", {"metadata": {"name": "web", "uid": "uid-2"}})
    body["metadata"]["labels"] = {}
    with pytest.raises(CredentialsError, match="not made by guestha"):
        credentials.check_ownership(body, "web", OWNER)


def test_the_ssl_context_is_the_operators_and_leaves_no_files(tmp_path: Any,
                                                              monkeypatch: Any) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    context = ClusterCredentials.new("apps", "web").ssl_context()
    assert context.check_hostname and list(tmp_path.iterdir()) == []


def test_the_operator_certificate_is_due_for_renewal_by_the_rule() -> None:
    t0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    creds = ClusterCredentials.new("apps", "web", now=t0)
    assert not pki.due_for_rotation(creds.operator_cert_pem, t0)
    later = t0 + pki.LEAF_VALIDITY * pki.ROTATE_AT
    assert pki.due_for_rotation(creds.operator_cert_pem, later)
    renewed = creds.with_new_operator_certificate(later)
    assert renewed.ca_pem == creds.ca_pem and renewed.heartbeat_key == creds.heartbeat_key
    assert not pki.due_for_rotation(renewed.operator_cert_pem, later)


def test_names_too_long_are_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        credentials.secret_name("c" * 250)


def test_webhook_options_and_configuration() -> None:
    dev = webhook.WebhookOptions("guestha-system", "127.0.0.1:9443", url="https://127.0.0.1:9443")
    assert dev.serving_names() == ((), ("127.0.0.1",))
    assert dev.client_config(b"CA")["url"] == "https://127.0.0.1:9443/inject"
    pod = webhook.WebhookOptions("guestha-system", "0.0.0.0:9443",
                                 service="guestha-system/guestha-operator-webhook")
    assert pod.serving_names()[0] == ("guestha-operator-webhook.guestha-system.svc",
                                      "guestha-operator-webhook.guestha-system.svc.cluster.local")
    assert pod.client_config(b"CA")["service"] == {
        "namespace": "guestha-system", "name": "guestha-operator-webhook", "port": 443,
        "path": "/inject"}
    [hook] = webhook.build_configuration(pod.client_config(b"CA"))["webhooks"]
    assert hook["namespaceSelector"] == {"matchLabels": {"guestha.io/injection": "enabled"}}
    assert (hook["failurePolicy"], hook["sideEffects"]) == ("Fail", "NoneOnDryRun")
    assert hook["rules"][0]["operations"] == ["CREATE"]
    for bad, message in (({"listen": "9443", "url": "https://h"}, "--webhook-listen"),
                         ({"listen": "h:1", "url": "http://h"}, "--webhook-url"),
                         ({"listen": "h:1", "service": "nameonly"}, "--webhook-service"),
                         ({"listen": "h:1"}, "exactly one")):
        with pytest.raises(ValueError, match=message):
            webhook.WebhookOptions("ns", **bad)
