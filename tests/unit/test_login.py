"""kopf logs in with what guestha's own client read (controller/login.py): each kubeconfig
form, and a pod's service account, reach the same server as the same user through kopf's
own connection code (its SSL context and headers), against a real TLS server."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest

from guestha.controller import login
from guestha.kubevirt import kubeconfig
from kits.whoamiserver import (
    Server,
    ca_data,
    ca_file,
    cert_data,
    cert_files,
    insecure,
    serving,
    token,
    token_file,
    write_kubeconfig,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serving(tmp_path) as srv:
        yield srv


def whoami_as_kopf(info: kopf.ConnectionInfo) -> dict[str, Any]:
    """A request made as kopf makes them: its SSL context, its headers, its server."""
    request = urllib.request.Request(f"{info.server}/api/v1/namespaces/x",
                                     headers=info.as_http_headers())
    with urllib.request.urlopen(request, context=info.as_ssl_context(), timeout=10) as r:
        answer: dict[str, Any] = json.loads(r.read())
    return answer


@pytest.mark.parametrize(("cluster", "user", "expected"), [
    (ca_data, cert_data, {"user": "guestha-operator", "authorization": None}),
    (ca_file, cert_files, {"user": "guestha-operator", "authorization": None}),
    (ca_data, token, {"user": None, "authorization": "Bearer abc"}),
    (ca_file, token_file, {"user": None, "authorization": "Bearer abc"}),  # kopf's own
    (insecure, token, {"user": None, "authorization": "Bearer abc"}),  # reader: no tokenFile
])
def test_kopf_reaches_the_server_as_the_kubeconfigs_user(
        server: Server, cluster: Any, user: Any, expected: dict[str, Any]) -> None:
    path = write_kubeconfig(server, cluster(server), user(server))
    info = login.connection_info(kubeconfig.from_kubeconfig(path))
    answer = whoami_as_kopf(info)
    assert {k: answer[k] for k in expected} == expected


def test_in_a_pod_kopf_dials_the_service_address_with_the_current_token(
        server: Server, tmp_path: Path) -> None:
    """Not kubernetes.default.svc (kopf's own reader): the address guestha's client and
    client-go use. Each login reads the token file again (kopf logs in again on a 401)."""
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("sa-1\n")
    (account / "ca.crt").write_bytes(server.ca.cert_pem)
    (account / "namespace").write_text("guestha-system")
    port = server.url.rsplit(":", 1)[1]
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}
    info = login.connection_info(kubeconfig.load(env, account))
    assert (info.server, info.default_namespace) == (server.url, "guestha-system")
    assert whoami_as_kopf(info)["authorization"] == "Bearer sa-1"
    (account / "token").write_text("sa-2\n")
    info = login.connection_info(kubeconfig.load(env, account))
    assert whoami_as_kopf(info)["authorization"] == "Bearer sa-2"


def test_the_contexts_namespace_is_kopfs_default(server: Server) -> None:
    path = write_kubeconfig(server, ca_data(server), token(server), contexts=[
        {"name": "main", "context": {"cluster": "c", "user": "u", "namespace": "ops"}}])
    assert login.connection_info(kubeconfig.from_kubeconfig(path)).default_namespace == "ops"


def test_credentials_that_cannot_be_used_stop_the_login_naming_the_field(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_kubeconfig(server, ca_data(server),
                            {"exec": {"command": "aws", "apiVersion": "x"}})
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(path))
    with pytest.raises(kopf.LoginError, match=r"users\[u\]\.user\.exec \(aws\)"):
        login.login()
