"""The operator's own Kubernetes credentials (kubevirt/kubeconfig.py) and client
(kubevirt/kubeapi.py), against a real TLS server on loopback that requires what an
apiserver requires: its CA trusted, and a client certificate or a bearer token.

Each form a kubeconfig may take (data or file, token or tokenFile, insecure) is one row;
a row passes only when a request made with the loaded credentials is accepted and the
server saw the identity the kubeconfig names. Refusals name the field at fault.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from guestha.kubevirt import kubeapi, kubeconfig
from kits.whoamiserver import (
    Server,
    b64,
    ca_data,
    ca_file,
    ca_relative,
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


def whoami(creds: kubeconfig.Credentials) -> dict[str, Any]:
    client = kubeapi.Client(creds)
    try:
        answer: dict[str, Any] = kubeapi.call_sync(client, "GET", "/api/v1/namespaces/x")
    finally:
        client.close()
    return answer


@pytest.mark.parametrize(("cluster", "user", "expected"), [
    (ca_data, cert_data, {"user": "guestha-operator", "authorization": None}),
    (ca_file, cert_files, {"user": "guestha-operator", "authorization": None}),
    (ca_relative, cert_data, {"user": "guestha-operator", "authorization": None}),
    (ca_data, token, {"user": None, "authorization": "Bearer abc"}),
    (ca_file, token_file, {"user": None, "authorization": "Bearer abc"}),
    (insecure, token, {"user": None, "authorization": "Bearer abc"}),
])
def test_each_kubeconfig_form_reaches_the_server_as_its_user(
        server: Server, cluster: Any, user: Any, expected: dict[str, Any]) -> None:
    path = write_kubeconfig(server, cluster(server), user(server))
    answer = whoami(kubeconfig.from_kubeconfig(path))
    assert {k: answer[k] for k in expected} == expected
    assert answer["path"] == "/api/v1/namespaces/x"


def test_without_the_ca_the_server_is_not_trusted(server: Server) -> None:
    path = write_kubeconfig(server, {}, token(server))
    with pytest.raises(kubeapi.ApiError) as err:
        whoami(kubeconfig.from_kubeconfig(path))
    assert err.value.status == 0
    assert "CERTIFICATE_VERIFY_FAILED" in err.value.message


def test_a_refusal_carries_the_servers_reason_and_message(server: Server) -> None:
    path = write_kubeconfig(server, ca_data(server), {})
    with pytest.raises(kubeapi.ApiError) as err:
        whoami(kubeconfig.from_kubeconfig(path))
    assert (err.value.status, err.value.reason, err.value.message) == (
        401, "Unauthorized", "no credentials")


def test_a_rotated_token_file_is_used_from_the_next_request_on(server: Server) -> None:
    path = write_kubeconfig(server, ca_data(server), token_file(server))
    creds = kubeconfig.from_kubeconfig(path)
    assert whoami(creds)["authorization"] == "Bearer abc"
    server.write("token", "rotated")
    assert whoami(creds)["authorization"] == "Bearer rotated"


def test_in_cluster_comes_first_and_rereads_its_token(server: Server, tmp_path: Path) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("sa-1")
    (account / "ca.crt").write_bytes(server.ca.cert_pem)
    other = write_kubeconfig(server, ca_data(server), token(server))
    port = server.url.rsplit(":", 1)[1]
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port,
           "KUBECONFIG": str(other)}
    creds = kubeconfig.load(env, account)
    assert creds.server == server.url
    assert whoami(creds)["authorization"] == "Bearer sa-1"
    (account / "token").write_text("sa-2")
    assert whoami(creds)["authorization"] == "Bearer sa-2"


@pytest.mark.parametrize("env", [
    {"KUBERNETES_SERVICE_HOST": "127.0.0.1"},  # no port
    {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "443"},  # no token
    {},
])
def test_outside_a_pod_the_kubeconfig_is_used(server: Server, tmp_path: Path,
                                              env: dict[str, str]) -> None:
    path = write_kubeconfig(server, ca_data(server), token(server))
    creds = kubeconfig.load({**env, "KUBECONFIG": str(path)}, tmp_path / "no-account")
    assert creds.source == "kubeconfig context main"
    assert whoami(creds)["authorization"] == "Bearer abc"


def test_kubeconfig_list_first_file_naming_an_entry_wins(server: Server) -> None:
    first = write_kubeconfig(server, ca_data(server), token(server))
    second = server.write("second", yaml.safe_dump({
        "current-context": "ignored",
        "users": [{"name": "u", "user": {"token": "from-second"}}]}))
    paths = kubeconfig.kubeconfig_paths({"KUBECONFIG": f"{first}:{second}:/nonexistent"})
    assert whoami(kubeconfig.from_kubeconfig(paths))["authorization"] == "Bearer abc"


@pytest.mark.parametrize(("user", "named"), [
    ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws-iam"}},
     "users[u].user.exec (aws-iam)"),
    ({"auth-provider": {"name": "oidc", "config": {}}}, "users[u].user.auth-provider (oidc)"),
])
def test_a_plugin_user_is_refused_naming_it(server: Server, user: dict[str, Any],
                                            named: str) -> None:
    path = write_kubeconfig(server, ca_data(server), user)
    with pytest.raises(kubeconfig.ConfigError, match=r"not supported") as err:
        kubeconfig.from_kubeconfig(path)
    assert named in str(err.value)


@pytest.mark.parametrize(("change", "named"), [
    ({"current-context": ""}, "no current-context"),
    ({"current-context": "elsewhere"}, "no context named 'elsewhere'"),
    ({"contexts": [{"name": "main", "context": {"cluster": "gone", "user": "u"}}]},
     "no cluster named 'gone'"),
    ({"clusters": [{"name": "c", "cluster": {"certificate-authority-data": "x"}}]},
     "clusters[c].cluster.server is missing"),
    ({"clusters": [{"name": "c", "cluster": {"server": "https://h",
                                             "certificate-authority-data": "%%"}}]},
     "certificate-authority-data is not base64"),
    ({"users": [{"name": "u", "user": {"client-certificate": "/x.crt"}}]},
     "client-certificate and client-key go together"),
    ({"users": [{"name": "u", "user": {"client-certificate-data": b64(b"x")}}]},
     "client-key(-data) is missing"),
])
def test_a_bad_kubeconfig_is_refused_naming_the_field(server: Server, change: dict[str, Any],
                                                      named: str) -> None:
    path = write_kubeconfig(server, ca_data(server), token(server), **change)
    with pytest.raises(kubeconfig.ConfigError) as err:
        kubeconfig.from_kubeconfig(path)
    assert named in str(err.value)


def test_a_missing_kubeconfig_is_named(tmp_path: Path) -> None:
    with pytest.raises(kubeconfig.ConfigError, match=str(tmp_path / "absent")):
        kubeconfig.load({"KUBECONFIG": str(tmp_path / "absent")}, tmp_path)


def test_no_answer_within_the_timeout_is_a_timeout_and_no_server_is_unreachable(
        server: Server) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers the handshake
    try:
        creds = kubeconfig.from_kubeconfig(write_kubeconfig(server, ca_data(server),
                                                            token(server)))
        port = silent.getsockname()[1]
        client = kubeapi.Client(dataclasses.replace(creds, server=f"https://127.0.0.1:{port}"))
        with pytest.raises(kubeapi.ApiError) as err:
            kubeapi.call_sync(client, "GET", "/api", timeout=0.5)
        assert (err.value.status, err.value.reason) == (0, "Timeout")
    finally:
        silent.close()
    client = kubeapi.Client(dataclasses.replace(creds, server=f"https://127.0.0.1:{port}"))
    with pytest.raises(kubeapi.ApiError) as err:
        kubeapi.call_sync(client, "GET", "/api", timeout=5)
    assert (err.value.status, err.value.reason) == (0, "Unreachable")
