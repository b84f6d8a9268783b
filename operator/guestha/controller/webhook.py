"""Serving the injection webhook: its TLS, and the MutatingWebhookConfiguration that points
the apiserver at it with a CA bundle the operator keeps right.

A CA of the operator's own (not a cluster's channel CA) signs the webhook's serving
certificate. The CA lives in the Secret WEBHOOK_CA_SECRET in the operator's namespace, so
every replica and every restart serves under the same CA and the caBundle stays valid; the
serving certificate is issued afresh at each start (for the URL's host, or the Service's
DNS names) and written to a private folder for kopf's WebhookServer, which reloads it when
the files change. At each start the operator writes the configuration
(CONFIGURATION_NAME) whole: its URL or Service, its caBundle, its rules.

kopf can manage a webhook configuration itself (settings.admission.managed), but it writes
only rules and an objectSelector, and guestha's scope needs a namespaceSelector: the
configuration here is guestha's own, and kopf only serves. The scope, and why:
- rules: `kubevirt.io/v1` virtualmachineinstances, CREATE only (injection is per instance;
  the VirtualMachine is never touched, so GitOps tools see no drift);
- namespaceSelector `guestha.io/injection: enabled`, a label the operator sets on each
  namespace that holds an InGuestCluster: VMIs elsewhere never reach the webhook, so an
  operator that is down cannot block them;
- failurePolicy Fail within that scope: a member must not start without its agent. A
  non-member VMI in such a namespace is blocked only while the operator is unreachable;
- sideEffects NoneOnDryRun: the webhook writes the member's Secret, never on a dry run;
- reinvocationPolicy Never: nothing another webhook adds concerns the injection, and the
  patch is idempotent anyway (guestha.kubevirt.injection.already_injected).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf

from guestha.channel import pki
from guestha.controller import api, injection
from guestha.controller.credentials import MANAGED_BY
from guestha.kubevirt import kubeapi

CONFIGURATION_NAME = "guestha.io"
WEBHOOK_NAME = "inject.guestha.io"
WEBHOOK_CA_SECRET = "guestha-webhook-ca"
TIMEOUT_SECONDS = 15  # the apiserver's wait for one call (at most 30)


@dataclass(frozen=True)
class WebhookOptions:
    """Where the webhook listens and how the apiserver reaches it (exactly one of `url`,
    for an apiserver that reaches the operator directly, and `service`)."""

    namespace: str  # the operator's: holds WEBHOOK_CA_SECRET
    listen: str  # host:port to listen on
    url: str | None = None  # https://host:port the apiserver calls (dev: 127.0.0.1)
    service: str | None = None  # namespace/name[:port] of the operator's webhook Service

    def __post_init__(self) -> None:
        if (self.url is None) == (self.service is None):
            raise ValueError("webhook: give exactly one of --webhook-url and --webhook-service")
        self.listen_address()
        if self.url is not None:
            parts = urllib.parse.urlsplit(self.url)
            if parts.scheme != "https" or not parts.hostname:
                raise ValueError(f"--webhook-url: must be https://host[:port], got {self.url!r}")
        if self.service is not None:
            self.service_ref()

    def listen_address(self) -> tuple[str, int]:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--webhook-listen: must be host:port, got {self.listen!r}")
        return host.strip("[]") or "0.0.0.0", int(port)

    def service_ref(self) -> tuple[str, str, int]:
        assert self.service is not None
        ref, _, port = self.service.partition(":")
        namespace, slash, name = ref.partition("/")
        if not slash or not namespace or not name or (port and not port.isdigit()):
            raise ValueError(f"--webhook-service: must be namespace/name[:port], "
                             f"got {self.service!r}")
        return namespace, name, int(port or 443)

    def serving_names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The DNS names and IP addresses the serving certificate must carry."""
        if self.url is not None:
            host = urllib.parse.urlsplit(self.url).hostname or ""
            try:
                ipaddress.ip_address(host)
            except ValueError:
                return (host,), ()
            return (), (host,)
        namespace, name, _ = self.service_ref()
        return (f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"), ()

    def client_config(self, ca_pem: bytes) -> dict[str, Any]:
        """The webhook's clientConfig: where the apiserver calls, and the CA it trusts."""
        bundle = base64.b64encode(ca_pem).decode("ascii")
        if self.url is not None:
            return {"url": f"{self.url.rstrip('/')}/{injection.HANDLER_ID}", "caBundle": bundle}
        namespace, name, port = self.service_ref()
        return {"service": {"namespace": namespace, "name": name, "port": port,
                            "path": f"/{injection.HANDLER_ID}"}, "caBundle": bundle}


def build_configuration(client_config: dict[str, Any]) -> dict[str, Any]:
    """The MutatingWebhookConfiguration (pure)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION_NAME, "labels": dict(MANAGED_BY)},
        "webhooks": [{
            "name": WEBHOOK_NAME,
            "admissionReviewVersions": ["v1"],
            "clientConfig": client_config,
            "rules": [{"apiGroups": ["kubevirt.io"], "apiVersions": ["v1"],
                       "resources": ["virtualmachineinstances"], "operations": ["CREATE"],
                       "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {
                injection.NAMESPACE_LABEL: injection.NAMESPACE_LABEL_VALUE}},
            "matchPolicy": "Equivalent",
            "failurePolicy": "Fail",
            "sideEffects": "NoneOnDryRun",
            "reinvocationPolicy": "Never",
            "timeoutSeconds": TIMEOUT_SECONDS,
        }],
    }


def _webhook_ca(namespace: str) -> pki.KeyPair:
    """The webhook CA from its Secret, created once (409: another replica's wins)."""
    for _ in range(5):
        secret = api.get(api.secrets_path(namespace, WEBHOOK_CA_SECRET))
        if secret is not None:
            data = secret.get("data") or {}
            try:
                return pki.KeyPair(base64.b64decode(data["ca.crt"]),
                                   base64.b64decode(data["ca.key"]))
            except (KeyError, ValueError) as e:
                raise ValueError(f"Secret {namespace}/{WEBHOOK_CA_SECRET}: data.ca.crt and "
                                 f"data.ca.key must hold the webhook CA ({e})") from None
        ca = pki.new_ca("guestha-webhook")
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": WEBHOOK_CA_SECRET, "namespace": namespace,
                             "labels": dict(MANAGED_BY)},
                "data": {"ca.crt": base64.b64encode(ca.cert_pem).decode(),
                         "ca.key": base64.b64encode(ca.key_pem).decode()}}
        try:
            api.request("POST", api.secrets_path(namespace), body)
            return ca
        except kubeapi.ApiError as e:
            if not e.conflict:
                raise
    raise RuntimeError(f"Secret {namespace}/{WEBHOOK_CA_SECRET}: could not be read or made")


def _apply_configuration(body: dict[str, Any]) -> None:
    path = f"{api.WEBHOOK_CONFIGURATIONS}/{CONFIGURATION_NAME}"
    existing = api.get(path)
    if existing is None:
        api.request("POST", api.WEBHOOK_CONFIGURATIONS, body)
        return
    body = {**body, "metadata": {**body["metadata"],
                                 "resourceVersion": existing["metadata"]["resourceVersion"]}}
    api.request("PUT", path, body)


def _prepare(options: WebhookOptions) -> tuple[kopf.WebhookServer, dict[str, Any]]:
    ca = _webhook_ca(options.namespace)
    dns, ips = options.serving_names()
    serving = pki.issue_serving(ca, (dns or ips)[0][:64], dns, ips)
    folder = Path(tempfile.mkdtemp(prefix="guestha-webhook-"))  # mode 0700, for kopf's reloads
    cert, key = folder / "tls.crt", folder / "tls.key"
    cert.write_bytes(serving.cert_pem)
    key.touch(mode=0o600)
    key.write_bytes(serving.key_pem)
    _FOLDERS.append(folder)
    host, port = options.listen_address()
    server = kopf.WebhookServer(addr=host, port=port, certfile=str(cert), pkeyfile=str(key),
                                cadata=ca.cert_pem)
    return server, build_configuration(options.client_config(ca.cert_pem))


_FOLDERS: list[Path] = []


def cleanup() -> None:
    """Removes the serving certificate's private folder (at the operator's exit)."""
    while _FOLDERS:
        with contextlib.suppress(OSError):
            shutil.rmtree(_FOLDERS.pop())


async def configure(settings: kopf.OperatorSettings, options: WebhookOptions) -> None:
    """At start-up: serve the webhook over TLS and point the apiserver at it."""
    server, configuration = await asyncio.to_thread(_prepare, options)
    settings.admission.server = server
    settings.admission.managed = None  # guestha's own configuration, with its namespaceSelector
    await asyncio.to_thread(_apply_configuration, configuration)
