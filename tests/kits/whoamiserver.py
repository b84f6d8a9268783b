"""A TLS server on loopback that asks what an apiserver asks (its CA trusted, and a client
certificate or a bearer token) and answers who it saw; and the kubeconfig forms that reach
it. For the operator's own credentials (kubevirt/kubeconfig.py) and kopf's login with them
(controller/login.py)."""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from guestha.channel import pki


@dataclass
class Server:
    url: str
    ca: pki.KeyPair
    client: pki.KeyPair  # a client certificate the server accepts (CN guestha-operator)
    folder: Path

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.folder / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        peer = self.request.getpeercert()
        subject = dict(item[0] for item in peer["subject"]) if peer else {}
        auth = self.headers.get("Authorization")
        if not auth and not subject:
            self._answer(401, {"kind": "Status", "reason": "Unauthorized",
                               "message": "no credentials"})
            return
        self._answer(200, {"path": self.path, "authorization": auth,
                           "user": subject.get("commonName")})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


@contextmanager
def serving(tmp_path: Path) -> Iterator[Server]:
    ca = pki.new_ca("apiserver")
    serving = pki.issue_serving(ca, "localhost", ("localhost",), ("127.0.0.1",))
    (tmp_path / "srv.crt").write_bytes(serving.cert_pem)
    (tmp_path / "srv.key").write_bytes(serving.key_pem)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "srv.crt", tmp_path / "srv.key")
    ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    ctx.verify_mode = ssl.CERT_OPTIONAL
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"https://127.0.0.1:{httpd.server_address[1]}", ca,
                     pki.issue_operator(ca), tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(srv: Server, cluster: dict[str, Any], user: dict[str, Any],
                     **top: Any) -> Path:
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "main",
           "clusters": [{"name": "c", "cluster": {"server": srv.url, **cluster}}],
           "users": [{"name": "u", "user": user}],
           "contexts": [{"name": "main", "context": {"cluster": "c", "user": "u"}}], **top}
    return srv.write("kubeconfig", yaml.safe_dump(doc))


def ca_data(srv: Server) -> dict[str, Any]:
    return {"certificate-authority-data": b64(srv.ca.cert_pem)}


def ca_file(srv: Server) -> dict[str, Any]:
    return {"certificate-authority": str(srv.write("ca.crt", srv.ca.cert_pem))}


def ca_relative(srv: Server) -> dict[str, Any]:
    srv.write("ca.crt", srv.ca.cert_pem)
    return {"certificate-authority": "ca.crt"}  # relative to the kubeconfig's folder


def insecure(_: Server) -> dict[str, Any]:
    return {"insecure-skip-tls-verify": True}


def cert_data(srv: Server) -> dict[str, Any]:
    return {"client-certificate-data": b64(srv.client.cert_pem),
            "client-key-data": b64(srv.client.key_pem)}


def cert_files(srv: Server) -> dict[str, Any]:
    return {"client-certificate": str(srv.write("op.crt", srv.client.cert_pem)),
            "client-key": str(srv.write("op.key", srv.client.key_pem))}


def token(_: Server) -> dict[str, Any]:
    return {"token": "abc"}


def token_file(srv: Server) -> dict[str, Any]:
    return {"tokenFile": str(srv.write("token", "abc\n"))}
