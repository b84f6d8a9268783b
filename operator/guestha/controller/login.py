"""kopf logs in with the operator's own credentials (kubevirt/kubeconfig.py).

The process has two clients: kopf's (watches, its bookkeeping PATCHes, Events) and
guestha's (everything else). kopf's readers, without a client library installed, are
narrower than guestha's and differ from them: in a pod kopf dials the DNS name
kubernetes.default.svc where guestha (and client-go) dial KUBERNETES_SERVICE_HOST, and
kopf's kubeconfig reader knows no `tokenFile`. Two readers could send the two clients to
different servers as different users. Here kopf is given what guestha read: one source,
one server, one identity. A token from a file (a projected service-account token, rotated
by the kubelet) is read at each login; kopf logs in again when the apiserver answers 401.
"""

from __future__ import annotations

from typing import Any

import kopf

from guestha.kubevirt import kubeconfig


def connection_info(credentials: kubeconfig.Credentials) -> kopf.ConnectionInfo:
    """kopf's view of guestha's credentials, the token as it is now."""
    material = credentials.material
    authorization = credentials.authorization()
    scheme, _, token = (authorization or "").partition(" ")
    return kopf.ConnectionInfo(
        server=credentials.server,
        ca_path=material.ca_file,
        ca_data=material.ca_data,
        insecure=credentials.insecure or None,
        scheme=scheme or None,
        token=token or None,
        certificate_path=material.cert_file,
        certificate_data=material.cert_pem,
        private_key_path=material.key_file,
        private_key_data=material.key_pem,
        default_namespace=material.namespace,
        proxy_url=credentials.proxy,
    )


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """In a pod the service account, the kubeconfig otherwise, as guestha's own client."""
    try:
        return connection_info(kubeconfig.load())
    except kubeconfig.ConfigError as e:
        raise kopf.LoginError(f"no credentials: {e}") from None
