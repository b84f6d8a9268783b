"""The operator's Kubernetes credentials, read without the `kubernetes` package.

The operator process only needs a REST client, and `import kubernetes.client` costs about
32 MB of resident memory (a generated, pydantic-based client and its dependencies), which
kopf would pay again on import. This module reads the same sources, in the same order, as
the client's `load_incluster_config()` then `load_kube_config()`:

1. in a pod: KUBERNETES_SERVICE_HOST/PORT, the service-account token file and its CA.
   The token file is re-read on every `authorization()`: a projected token is rotated by
   the kubelet, and the process must use the current one (a file read is microseconds);
2. otherwise the kubeconfig: $KUBECONFIG (a list; for each named entry the first file
   that names it wins, as kubectl merges) or ~/.kube/config; its current context's
   server, certificate-authority(-data), client-certificate(-data)/client-key(-data),
   token or tokenFile, insecure-skip-tls-verify and proxy-url. Relative file paths are
   relative to the kubeconfig file that names them.

An exec plugin or an auth-provider runs code or talks to an identity provider on the
process's behalf; guestha does neither, and refuses such a user with a ConfigError
naming it rather than connecting anonymously.

The TLS context is built once: the client certificate and key are loaded into it (from a
private temporary file for the -data forms, removed at once), so nothing is left on disk.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = Path("~/.kube/config")


class ConfigError(Exception):
    """The credentials cannot be read or are not usable; the message names the field."""


class NotInCluster(ConfigError):
    """Not running in a pod (no service environment or no token file)."""


@dataclass(frozen=True)
class Material:
    """What the TLS context was built from, as read: for a second client of the same
    process (kopf's, through the operator's login handler) to connect exactly as this one.
    Each pair is a path or the data itself, never both."""

    ca_file: str | None = None
    ca_data: str | None = None
    cert_file: str | None = None
    cert_pem: bytes | None = None
    key_file: str | None = None
    key_pem: bytes | None = None
    namespace: str | None = None  # the pod's, or the context's


@dataclass(frozen=True)
class Credentials:
    """How to reach and authenticate to one apiserver.

    server: https://host:port[/prefix], no trailing slash. context: verifies the server
    and presents the client certificate, if any. token or token_file: the bearer token
    (the file is re-read on each use). insecure: the server's certificate is not checked.
    """

    server: str
    context: ssl.SSLContext
    token: str | None = None
    token_file: str | None = None
    insecure: bool = False
    proxy: str | None = None
    source: str = ""  # where these came from, for messages
    material: Material = Material()

    def authorization(self) -> str | None:
        """The Authorization header's value now (None: no bearer token)."""
        if self.token_file:
            try:
                token = Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{self.source}: cannot read the token file "
                                  f"{self.token_file}: {exc.strerror}") from None
            return f"Bearer {token}" if token else None
        return f"Bearer {self.token}" if self.token else None

    def headers(self) -> dict[str, str]:
        value = self.authorization()
        return {"Authorization": value} if value else {}


def _context(*, ca_file: str | None, ca_data: str | None, cert_pem: bytes | None,
             key_pem: bytes | None, cert_file: str | None, key_file: str | None,
             insecure: bool, where: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        if ca_file:
            ctx.load_verify_locations(cafile=ca_file)
        if ca_data:
            ctx.load_verify_locations(cadata=ca_data)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}: certificate-authority: {exc}") from None
    try:
        if cert_pem is not None or key_pem is not None:
            _load_chain_from_memory(ctx, cert_pem or b"", key_pem or b"")
        elif cert_file or key_file:
            ctx.load_cert_chain(cert_file or "", key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}: client-certificate/client-key: {exc}") from None
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _load_chain_from_memory(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """`ssl` loads a chain only from a file: write one readable by us alone, load, delete."""
    fd, name = tempfile.mkstemp(prefix="guestha-client-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        ctx.load_cert_chain(name)
    finally:
        os.unlink(name)


def from_incluster(environ: Mapping[str, str] | None = None,
                   directory: Path = SERVICE_ACCOUNT_DIR) -> Credentials:
    """The pod's service account. Raises NotInCluster outside a pod."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    token_file = directory / "token"
    if not host or not port:
        raise NotInCluster("KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set")
    if not token_file.is_file():
        raise NotInCluster(f"no service-account token at {token_file}")
    ca_file = directory / "ca.crt"
    if not ca_file.is_file():
        raise ConfigError(f"in-cluster: no service-account CA at {ca_file}")
    netloc = f"[{host}]" if ":" in host else host
    where = "in-cluster"
    ctx = _context(ca_file=str(ca_file), ca_data=None, cert_pem=None, key_pem=None,
                   cert_file=None, key_file=None, insecure=False, where=where)
    ns_file = directory / "namespace"
    namespace = ns_file.read_text().strip() if ns_file.is_file() else None
    return Credentials(f"https://{netloc}:{port}", ctx, token_file=str(token_file),
                       source=where,
                       material=Material(ca_file=str(ca_file), namespace=namespace or None))


def kubeconfig_paths(environ: Mapping[str, str] | None = None) -> list[Path]:
    """$KUBECONFIG's files (os.pathsep-separated), else ~/.kube/config."""
    env = os.environ if environ is None else environ
    listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return [Path(p).expanduser() for p in listed]
    return [DEFAULT_KUBECONFIG.expanduser()]


def _read(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"kubeconfig {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"kubeconfig {path}: not YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"kubeconfig {path}: not a mapping")
    return loaded


def _named(docs: Sequence[tuple[Path, dict[str, Any]]], section: str, key: str,
           name: str) -> tuple[Path, dict[str, Any]]:
    """The first entry named `name` in `section` across the files (first file wins)."""
    for path, doc in docs:
        for entry in doc.get(section) or ():
            if isinstance(entry, dict) and entry.get("name") == name:
                body = entry.get(key)
                if not isinstance(body, dict):
                    raise ConfigError(f"kubeconfig {path}: {section}[{name}].{key} is missing")
                return path, body
    raise ConfigError(f"kubeconfig {', '.join(str(p) for p, _ in docs)}: "
                      f"no {section[:-1]} named {name!r}")


def _decode_data(value: Any, where: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        raise ConfigError(f"{where} is not base64") from None


def _relative(base: Path, value: Any) -> str:
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else base.parent / path)


def _pem(user: Mapping[str, Any], path: Path, field: str, where: str) -> bytes:
    """The PEM of `field`-data, or of the file `field` names."""
    if user.get(f"{field}-data"):
        return _decode_data(user[f"{field}-data"], f"{where}.user.{field}-data")
    if not user.get(field):
        raise ConfigError(f"{where}.user: {field}(-data) is missing")
    try:
        return Path(_relative(path, user[field])).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}.user.{field}: {exc}") from None


def from_kubeconfig(paths: Sequence[Path] | Path | str,
                    context: str | None = None) -> Credentials:
    """The credentials of a kubeconfig's current context (or of `context`)."""
    files = [Path(paths)] if isinstance(paths, (str, Path)) else list(paths)
    existing = [p for p in files if p.exists()] or files[:1]
    docs = [(p, _read(p)) for p in existing]
    name = context or next((d.get("current-context") for _, d in docs
                            if d.get("current-context")), None)
    if not name:
        raise ConfigError(f"kubeconfig {', '.join(map(str, existing))}: no current-context")
    _, ctx_body = _named(docs, "contexts", "context", str(name))
    cluster_name, user_name = ctx_body.get("cluster"), ctx_body.get("user")
    if not cluster_name:
        raise ConfigError(f"kubeconfig: contexts[{name}].context.cluster is missing")
    cluster_path, cluster = _named(docs, "clusters", "cluster", str(cluster_name))
    user_path, user = (_named(docs, "users", "user", str(user_name)) if user_name
                       else (cluster_path, {}))
    where = f"kubeconfig {user_path} users[{user_name}]"
    for plugin in ("exec", "auth-provider"):
        if user.get(plugin):
            detail = user[plugin].get("command") or user[plugin].get("name") or ""
            raise ConfigError(f"{where}.user.{plugin} ({detail}) is not supported by the "
                              f"operator: give it a token, a tokenFile or a client "
                              f"certificate")
    server = str(cluster.get("server") or "").rstrip("/")
    if not server:
        raise ConfigError(f"kubeconfig {cluster_path}: clusters[{cluster_name}].cluster.server "
                          f"is missing")
    cwhere = f"kubeconfig {cluster_path} clusters[{cluster_name}].cluster"
    insecure = bool(cluster.get("insecure-skip-tls-verify"))
    ca_data = None
    if cluster.get("certificate-authority-data"):
        ca_data = _decode_data(cluster["certificate-authority-data"],
                               f"{cwhere}.certificate-authority-data").decode()
    ca_file = (_relative(cluster_path, cluster["certificate-authority"])
               if cluster.get("certificate-authority") and not ca_data else None)
    cert_pem = key_pem = None
    cert_file = key_file = None
    if user.get("client-certificate-data") or user.get("client-key-data"):
        cert_pem = _pem(user, user_path, "client-certificate", where)
        key_pem = _pem(user, user_path, "client-key", where)
    elif user.get("client-certificate") or user.get("client-key"):
        if not (user.get("client-certificate") and user.get("client-key")):
            raise ConfigError(f"{where}.user: client-certificate and client-key go together")
        cert_file = _relative(user_path, user["client-certificate"])
        key_file = _relative(user_path, user["client-key"])
    tls = _context(ca_file=ca_file, ca_data=ca_data, cert_pem=cert_pem, key_pem=key_pem,
                   cert_file=cert_file, key_file=key_file, insecure=insecure, where=where)
    token = str(user["token"]) if user.get("token") else None
    token_file = (_relative(user_path, user["tokenFile"])
                  if user.get("tokenFile") and not token else None)
    proxy = str(cluster["proxy-url"]) if cluster.get("proxy-url") else None
    material = Material(ca_file=ca_file, ca_data=ca_data, cert_file=cert_file,
                        cert_pem=cert_pem, key_file=key_file, key_pem=key_pem,
                        namespace=str(ctx_body["namespace"]) if ctx_body.get("namespace")
                        else None)
    return Credentials(server, tls, token=token, token_file=token_file, insecure=insecure,
                       proxy=proxy, source=f"kubeconfig context {name}", material=material)


def load(environ: Mapping[str, str] | None = None,
         directory: Path = SERVICE_ACCOUNT_DIR) -> Credentials:
    """In-cluster credentials in a pod, the kubeconfig otherwise (the client's order)."""
    try:
        return from_incluster(environ, directory)
    except NotInCluster:
        return from_kubeconfig(kubeconfig_paths(environ))
