"""The simulator's virt-api: `subresources.kubevirt.io/v1` through the aggregation layer.

KubeVirt's virt-api is an aggregated API server: the kube-apiserver authenticates the
caller, checks RBAC on the subresource (e.g. `update virtualmachines/stop`), and proxies
the request over TLS with its front-proxy client certificate, naming the caller in
X-Remote-User / X-Remote-Group. This server does what virt-api does with that:

- serves HTTPS with its own certificate for `virt-api.kubevirt.svc`, whose CA goes into
  the APIService's caBundle (made here at every start);
- accepts only connections whose client certificate chains to the front-proxy CA with an
  allowed common name, both read from `kube-system/extension-apiserver-authentication`
  as every aggregated server reads them; nothing reaches it but through the apiserver;
- takes the caller's identity from the request headers and, as virt-api does, asks the
  apiserver again with a SubjectAccessReview before acting;
- answers discovery and the endpoints of `subresources.Subresources`, and upgrades
  `vsock` to a websocket (subprotocol `plain.kubevirt.io`) piped to the guest's port.

The APIService, its ExternalName Service and the RBAC roles are the YAML files in
`manifests/`, applied at start; the APIService is deleted again at stop so that the
apiserver's discovery does not keep failing on a server that is gone.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import socket
import ssl
import string
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from kubevirtsim import websocket as ws
from kubevirtsim.api import Api, ApiError, Obj
from kubevirtsim.guestdial import DialError, dial, wrap_tls
from kubevirtsim.subresources import StatusError, Subresources, bad_request, forbidden
from testbed import pki

log = logging.getLogger(__name__)

GROUP = "subresources.kubevirt.io"
VERSION = "v1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
APISERVICE = f"{VERSION}.{GROUP}"
SERVICE_NAME = "virt-api.kubevirt.svc"
MANIFESTS = Path(__file__).with_name("manifests")
FIELD_MANAGER = "kubevirtsim"
AUTH_CONFIGMAP = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"

# discovery: the two root resources (as virt-api lists them) and the subresources here
RESOURCES: list[tuple[str, str, list[str]]] = [
    ("virtualmachineinstances", "VirtualMachineInstance", []),
    ("virtualmachineinstances/guestosinfo", "VirtualMachineInstance", ["get"]),
    ("virtualmachineinstances/vsock", "VirtualMachineInstance", ["get"]),
    ("virtualmachines", "VirtualMachine", []),
    ("virtualmachines/start", "VirtualMachine", ["update"]),
    ("virtualmachines/stop", "VirtualMachine", ["update"]),
    ("virtualmachines/restart", "VirtualMachine", ["update"]),
    ("virtualmachines/migrate", "VirtualMachine", ["update"]),
]
VM_ACTIONS = ("start", "stop", "restart", "migrate")
VMI_GETS = ("guestosinfo", "vsock")

_PATH = re.compile(
    rf"^/apis/{re.escape(GROUP)}/{VERSION}/namespaces/(?P<ns>[^/]+)/"
    r"(?P<resource>virtualmachines|virtualmachineinstances)/(?P<name>[^/]+)/(?P<sub>[^/]+)/?$"
)


@dataclass(frozen=True)
class FrontProxy:
    """How the apiserver's front proxy authenticates itself and names the caller."""

    ca_pem: str
    allowed_names: tuple[str, ...]
    user_headers: tuple[str, ...]
    group_headers: tuple[str, ...]
    extra_prefixes: tuple[str, ...]

    @classmethod
    def from_configmap(cls, data: dict[str, str]) -> FrontProxy:
        ca = data.get("requestheader-client-ca-file", "")
        if not ca.strip():
            raise ValueError(
                "extension-apiserver-authentication: requestheader-client-ca-file is empty; "
                "start the apiserver with --requestheader-client-ca-file"
            )

        def names(key: str, default: list[str]) -> tuple[str, ...]:
            raw = data.get(key)
            return tuple(json.loads(raw)) if raw else tuple(default)

        return cls(
            ca,
            names("requestheader-allowed-names", []),
            names("requestheader-username-headers", ["X-Remote-User"]),
            names("requestheader-group-headers", ["X-Remote-Group"]),
            names("requestheader-extra-headers-prefix", ["X-Remote-Extra-"]),
        )


@dataclass(frozen=True)
class Caller:
    user: str
    groups: tuple[str, ...]
    extra: dict[str, list[str]]


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path
    handler_cert: Path  # virt-handler's client certificate for vsock tls=true
    handler_key: Path


def make_certificates(folder: Path) -> Certificates:
    """A fresh CA, a serving certificate for virt-api.kubevirt.svc and a virt-handler one."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = pki.make_ca("kubevirtsim-virt-api-ca")
    ca.write(folder, "ca")
    cert, key = pki.issue(
        ca,
        SERVICE_NAME,
        dns=(SERVICE_NAME, "virt-api.kubevirt.svc.cluster.local", "virt-api.kubevirt", "localhost"),
        ips=("127.0.0.1",),
        server=True,
    ).write(folder, "virt-api")
    handler_cert, handler_key = pki.issue(
        ca, "kubevirt.io:system:node:virt-handler", client=True
    ).write(folder, "virt-handler")
    return Certificates(folder / "ca.crt", cert, key, handler_cert, handler_key)


def render_manifests(port: int, ca_bundle: bytes) -> list[Obj]:
    """The objects of manifests/*.yaml with ${PORT} and ${CA_BUNDLE} filled in."""
    values = {"PORT": str(port), "CA_BUNDLE": base64.b64encode(ca_bundle).decode()}
    objects: list[Obj] = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        text = string.Template(path.read_text()).substitute(values)
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    # the Namespace before what lives in it
    return sorted(objects, key=lambda o: 0 if o.get("kind") == "Namespace" else 1)


def _collection_path(obj: Obj) -> str:
    api_version = str(obj["apiVersion"])
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    plural = {
        "Namespace": "namespaces",
        "Service": "services",
        "APIService": "apiservices",
        "ClusterRole": "clusterroles",
        "ClusterRoleBinding": "clusterrolebindings",
        "Role": "roles",
        "RoleBinding": "rolebindings",
    }[str(obj["kind"])]
    ns = obj.get("metadata", {}).get("namespace")
    return f"{prefix}/namespaces/{ns}/{plural}" if ns else f"{prefix}/{plural}"


def apply(api: Api, obj: Obj) -> None:
    """Server-side apply, owned by the simulator's field manager."""
    path = f"{_collection_path(obj)}/{obj['metadata']['name']}"
    api.request(
        "PATCH",
        path,
        query={"fieldManager": FIELD_MANAGER, "force": "true"},
        body=json.dumps(obj),
        content_type="application/apply-patch+yaml",
    )


def discovery_documents() -> dict[str, Obj]:
    version = {"groupVersion": GROUP_VERSION, "version": VERSION}
    group = {"name": GROUP, "versions": [version], "preferredVersion": version}
    return {
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]},
        f"/apis/{GROUP}": {"kind": "APIGroup", "apiVersion": "v1", **group},
        f"/apis/{GROUP_VERSION}": {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": GROUP_VERSION,
            "resources": [
                {"name": name, "singularName": "", "namespaced": True, "kind": kind, "verbs": verbs}
                for name, kind, verbs in RESOURCES
            ],
        },
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: VirtApi) -> None:
        self.app = app
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # the TLS handshake runs in the connection's own thread, never in the accept loop
        try:
            request.settimeout(10)
            conn = self.app.tls.wrap_socket(request, server_side=True)
            conn.settimeout(None)
        except (OSError, ssl.SSLError) as exc:
            log.info("virt-api: refused a connection from %s: %s", client_address, exc)
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            with contextlib.suppress(OSError):
                conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    connection: ssl.SSLSocket

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("virt-api: " + format, *args)

    # --- plumbing --------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass  # trailers
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, body: Obj | None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _fail(self, exc: StatusError) -> None:
        self._send(exc.code, exc.body())

    def _caller(self) -> Caller:
        """The identity the front proxy vouched for (its certificate was checked already)."""
        proxy = self.server.app.front_proxy
        cert = self.connection.getpeercert() or {}
        subject: Any = cert.get("subject", ())
        names = [str(v) for rdn in subject for k, v in rdn if k == "commonName"]
        if proxy.allowed_names and not set(names) & set(proxy.allowed_names):
            raise StatusError(
                401, "Unauthorized", f"client certificate {names} is not an allowed front proxy"
            )
        user = next((self.headers[h] for h in proxy.user_headers if self.headers.get(h)), "")
        if not user:
            raise StatusError(401, "Unauthorized", "no user in the front proxy's headers")
        groups = tuple(g for h in proxy.group_headers for g in self.headers.get_all(h) or [])
        extra: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            for prefix in proxy.extra_prefixes:
                if name.lower().startswith(prefix.lower()):
                    extra.setdefault(name[len(prefix) :].lower(), []).append(value)
        return Caller(user, groups, extra)

    # --- dispatch --------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        app = self.server.app
        code = 0
        caller = ""
        try:
            if path in ("/healthz", "/readyz", "/livez"):
                self._body()
                code = 200
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                return
            who = self._caller()
            caller = who.user
            documents = app.discovery
            if path in documents:
                self._body()
                code = 200
                self._send(200, documents[path])
                return
            match = _PATH.match(path)
            if match is None:
                raise StatusError(
                    404, "NotFound", "the server could not find the requested resource"
                )
            ns, resource, name, sub = match.group("ns", "resource", "name", "sub")
            allowed = VM_ACTIONS if resource == "virtualmachines" else VMI_GETS
            if sub not in allowed:
                raise StatusError(
                    404, "NotFound", "the server could not find the requested resource"
                )
            want = "PUT" if resource == "virtualmachines" else "GET"
            if method != want:
                raise StatusError(
                    405,
                    "MethodNotAllowed",
                    f"{method} is not supported on {resource}/{sub}: use {want}",
                )
            verb = "update" if want == "PUT" else "get"
            app.authorize(who, verb, ns, resource, sub, name)
            raw = self._body()
            if resource == "virtualmachines":
                getattr(app.subresources, sub)(ns, name, raw)
                code = 202
                self._send(202, None)
            elif sub == "guestosinfo":
                code = 200
                self._send(200, app.subresources.guestosinfo(ns, name))
            else:
                code = self._vsock(ns, name, query)
        except StatusError as exc:
            code = exc.code
            self._fail(exc)
        except (BrokenPipeError, ConnectionResetError):
            code = code or 499
        except Exception as exc:
            log.exception("virt-api: %s %s failed", method, self.path)
            code = 500
            with contextlib.suppress(OSError):
                self._fail(StatusError(500, "InternalError", f"Internal error occurred: {exc}"))
        finally:
            quiet = path in app.discovery or path.startswith("/openapi") or code == 200
            level = logging.DEBUG if quiet else logging.INFO
            log.log(level, "virt-api: %s %s by %s: %s", method, self.path, caller or "-", code)

    # --- vsock -----------------------------------------------------------------------------
    def _vsock(self, ns: str, name: str, query: dict[str, str]) -> int:
        app = self.server.app
        headers = self._headers()
        if not ws.is_upgrade(headers) or not headers.get("sec-websocket-key"):
            raise bad_request("vsock is a websocket: send Connection: Upgrade, Upgrade: websocket")
        guest, port, use_tls, vmi = app.subresources.vsock_target(
            ns, name, query.get("port"), query.get("tls")
        )
        cid = vmi.get("status", {}).get("VSOCKCID", "?")
        try:
            stream: socket.socket = dial(guest.host.netns, guest.host.address, port)
        except DialError as exc:
            raise bad_request(
                f"VSOCK port {port} of VMI {ns}/{name} (cid {cid}) cannot be reached: {exc}"
            ) from None
        try:
            if use_tls:
                try:
                    stream = wrap_tls(stream, app.certs.handler_cert, app.certs.handler_key)
                except (OSError, ssl.SSLError) as exc:
                    raise StatusError(
                        500,
                        "InternalError",
                        f"Internal error occurred: TLS to VSOCK port {port} of VMI {ns}/{name} "
                        f"failed: {exc} (tls=false for a plain stream)",
                    ) from None
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", ws.accept_key(headers["sec-websocket-key"]))
            protocol = ws.chosen_protocol(headers)
            if protocol:
                self.send_header("Sec-WebSocket-Protocol", protocol)
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            log.info("virt-api: vsock %s/%s port %d (tls=%s) open", ns, name, port, use_tls)
            _pipe(ws.ServerSocket(self.connection, self.rfile), stream)
            return 101
        finally:
            with contextlib.suppress(OSError):
                stream.close()


def _pipe(sock: ws.ServerSocket, stream: socket.socket) -> None:
    """Bytes both ways until either side closes; then both are closed."""
    done = threading.Event()

    def guest_to_client() -> None:
        try:
            while True:
                data = stream.recv(65536)
                if not data:
                    break
                sock.send_binary(data)
        except OSError:
            pass
        finally:
            sock.close(ws.CLOSE_NORMAL)
            done.set()

    reader = threading.Thread(target=guest_to_client, name="vsock-out", daemon=True)
    reader.start()
    try:
        sock.pump_to(stream.sendall)
    except (OSError, ws.WebSocketError) as exc:
        log.debug("virt-api: vsock client side ended: %s", exc)
    finally:
        with contextlib.suppress(OSError):
            stream.shutdown(socket.SHUT_RDWR)
        done.wait(5)
        sock.close(ws.CLOSE_NORMAL)


class VirtApi:
    """The HTTPS server, its certificates and its registration with the apiserver."""

    def __init__(self, api: Api, subresources: Subresources, folder: Path, port: int = 0) -> None:
        self.api = api
        self.subresources = subresources
        self.folder = folder
        self.port = port
        self.discovery = discovery_documents()
        self.front_proxy = FrontProxy("", (), (), (), ())
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._certs: Certificates | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def certs(self) -> Certificates:
        if self._certs is None:
            raise RuntimeError("virt-api: start() makes the certificates")
        return self._certs

    def authorize(
        self, who: Caller, verb: str, ns: str, resource: str, sub: str, name: str
    ) -> None:
        """virt-api's own check: a SubjectAccessReview for the proxied caller."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": who.user,
                "groups": list(who.groups),
                "extra": who.extra,
                "resourceAttributes": {
                    "namespace": ns,
                    "verb": verb,
                    "group": GROUP,
                    "version": VERSION,
                    "resource": resource,
                    "subresource": sub,
                    "name": name,
                },
            },
        }
        try:
            answer = self.api.request(
                "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review
            )
        except ApiError as exc:
            raise StatusError(
                500, "InternalError", f"Internal error occurred: SubjectAccessReview failed: {exc}"
            ) from None
        if not answer.get("status", {}).get("allowed"):
            reason = answer.get("status", {}).get("reason", "")
            raise forbidden(
                f'User "{who.user}" cannot {verb} resource "{resource}/{sub}" in API group '
                f'"{GROUP}" in the namespace "{ns}"' + (f": {reason}" if reason else "")
            )

    def start(self) -> None:
        """Read the front proxy's settings, listen, then register with the apiserver."""
        data = self.api.request("GET", AUTH_CONFIGMAP).get("data") or {}
        self.front_proxy = FrontProxy.from_configmap(data)
        self._certs = make_certificates(self.folder)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.tls.load_cert_chain(str(self.certs.cert), str(self.certs.key))
        self.tls.verify_mode = ssl.CERT_REQUIRED
        self.tls.load_verify_locations(cadata=self.front_proxy.ca_pem)
        self.tls.set_alpn_protocols(["http/1.1"])
        self._server = _Server(("127.0.0.1", self.port), self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="virt-api", daemon=True
        )
        self._thread.start()
        for obj in render_manifests(self.port, self.certs.ca.read_bytes()):
            apply(self.api, obj)
        log.info(
            "virt-api: %s served on 127.0.0.1:%d (APIService %s)",
            GROUP_VERSION,
            self.port,
            APISERVICE,
        )

    def stop(self) -> None:
        """Unregister (so discovery does not fail on a server that is gone), stop serving."""
        if self._server is None:
            return
        path = f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE}"
        try:
            current = self.api.request("GET", path)
            service = current.get("spec", {}).get("service") or {}
            ours = base64.b64encode(self.certs.ca.read_bytes()).decode()
            if service.get("port") == self.port and current["spec"].get("caBundle") == ours:
                # only our own registration (another simulator may have taken over since)
                self.api.request(
                    "DELETE",
                    path,
                    body={
                        "preconditions": {
                            "uid": current["metadata"]["uid"],
                            "resourceVersion": current["metadata"]["resourceVersion"],
                        }
                    },
                )
        except ApiError as exc:
            if not exc.not_found and not exc.conflict:
                log.warning("virt-api: deleting APIService %s failed: %s", APISERVICE, exc)
        self._server.shutdown()
        self._server.server_close()
        self._server = None
