"""Keeps the `kubernetes` package out of the operator process; imported before kopf.

One operator holds hundreds of clusters, and its resident memory is the budget that
limits how many (docs/architecture.md "The operator at scale"). `import kubernetes.client`
alone costs about 32 MB (a generated, pydantic-based client and its dependencies), and kopf
imports it whenever it is importable, only to recognise its objects and to offer a login
through it; likewise pykube-ng (with requests and oauthlib: 17 MB between them on this
machine, where a test plugin installs pykube). The operator talks to the apiserver
through guestha's own client (kubevirt/kubeapi.py), so this module marks both as not
importable, Python's documented way: a `None` entry in `sys.modules` makes `import kubernetes` raise
ModuleNotFoundError, and kopf's optional imports fall back. kopf then logs in with its own
service-account and kubeconfig handlers (controller/main.py's `login`).

It must be imported before kopf and before anything that imports kopf; a process that has
loaded `kubernetes` already (a test run, a tool) is left alone.
"""

from __future__ import annotations

import sys

BLOCKED = ("kubernetes", "pykube")


def block() -> None:
    """Make the blocked packages unimportable in this process, unless already loaded."""
    for name in BLOCKED:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


block()
