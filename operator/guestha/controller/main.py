"""guestha-operator: the kopf operator's entry point and its process-wide settings."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import kopf

from guestha.controller import clusters  # noqa: F401  (registers the handlers)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Keep kopf's bookkeeping under guestha's own annotation prefix."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="guestha.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="guestha.io")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Credentials from the kubernetes client (in-cluster token or kubeconfig), always.

    kopf picks whichever client library happens to be installed; guestha depends on one,
    so the operator logs in the same way wherever it runs.
    """
    info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guestha-operator", description=__doc__)
    parser.add_argument("--liveness", default=None, metavar="URL",
                        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    kopf.run(standalone=True, clusterwide=True, liveness_endpoint=args.liveness)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
