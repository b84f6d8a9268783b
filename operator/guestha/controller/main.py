"""guestha-operator: the kopf operator's entry point and its process-wide settings."""

from __future__ import annotations

# isort: off
from guestha.controller import nokube  # noqa: F401  (first: before kopf looks for `kubernetes`)
# isort: on

import argparse
import atexit
import logging
import os
from typing import Any

import kopf

from guestha.controller import (  # noqa: F401  (importing registers their handlers)
    clusters,
    heap,
    indexes,
    injection,
    leader,
    logfilter,
    login,
    metrics,
    nodeleases,
    outputs,
    servicegroups,
    template,
    upgradeslots,
    webhook,
)

# kopf's event handlers: called on every watch event, their success is not news
# (tests/unit/test_logfilter.py holds this list to kopf's registry)
EVENT_HANDLERS = ("vmi_event",  # outputs
                  "group_changed", "switchover_created")  # servicegroups


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Keep kopf's bookkeeping under guestha's own annotation prefix."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="guestha.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="guestha.io")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300


def serve_webhook(options: webhook.WebhookOptions) -> None:
    """Register the injection webhook's handlers and serve it from start-up on."""
    injection.register()
    atexit.register(webhook.cleanup)

    async def start_webhook(settings: kopf.OperatorSettings, **_: Any) -> None:
        await webhook.configure(settings, options)

    kopf.on.startup(id="webhook")(start_webhook)


def serve_metrics(listen: str) -> None:
    """Serve /metrics (Prometheus) from start-up on."""
    host, _, port = listen.rpartition(":")

    async def start_metrics(**_: Any) -> None:
        await metrics.serve(host or "0.0.0.0", int(port))

    kopf.on.startup(id="metrics")(start_metrics)


def main(argv: list[str] | None = None) -> int:
    heap.limit_arenas()  # before any thread allocates (controller.heap)
    parser = argparse.ArgumentParser(prog="guestha-operator", description=__doc__)
    parser.add_argument("--liveness", default=None, metavar="URL",
                        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--verbose", action="store_true")
    env = os.environ.get
    parser.add_argument("--namespace", default=env("GUESTHA_NAMESPACE", "guestha-system"),
                        help="the operator's own namespace (the webhook CA's Secret)")
    parser.add_argument("--webhook-listen", default=env("GUESTHA_WEBHOOK_LISTEN"),
                        metavar="HOST:PORT", help="serve the injection webhook here (TLS); "
                        "without it the operator injects nothing")
    parser.add_argument("--webhook-url", default=env("GUESTHA_WEBHOOK_URL"), metavar="URL",
                        help="https://host:port where the apiserver reaches the webhook "
                        "(an apiserver outside the cluster's network, as the test bed's)")
    parser.add_argument("--webhook-service", default=env("GUESTHA_WEBHOOK_SERVICE"),
                        metavar="NAMESPACE/NAME[:PORT]",
                        help="the Service in front of the webhook (in a cluster)")
    parser.add_argument("--metrics-listen", default=env("GUESTHA_METRICS_LISTEN"),
                        metavar="HOST:PORT", help="serve Prometheus metrics on /metrics here")
    parser.add_argument("--max-agent-upgrades", type=int,
                        default=int(env("GUESTHA_MAX_AGENT_UPGRADES",
                                        str(upgradeslots.DEFAULT_LIMIT))),
                        metavar="N", help="at most N clusters restart an agent into a new "
                        "bundle at once (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        upgradeslots.configure(args.max_agent_upgrades)
    except ValueError as e:
        parser.error(str(e))
    # a timestamp on every line: the log is read beside the apiserver's and the Events
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logfilter.install(EVENT_HANDLERS)
    if args.webhook_listen:
        try:
            options = webhook.WebhookOptions(args.namespace, args.webhook_listen,
                                             args.webhook_url, args.webhook_service)
        except ValueError as e:
            parser.error(str(e))
        serve_webhook(options)
    if args.metrics_listen:
        serve_metrics(args.metrics_listen)
    kopf.run(standalone=True, clusterwide=True, liveness_endpoint=args.liveness)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
