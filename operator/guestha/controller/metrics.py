"""The operator's Prometheus metrics and the asyncio endpoint that serves them.

prometheus-client (the Prometheus project's own library) keeps the exposition format
and the histogram buckets right; the endpoint is an aiohttp server on the operator's
own event loop (aiohttp comes with kopf), so metrics cost no thread. Label sets stay
bounded: namespace, cluster, group, member and a closed set of reasons or stages.
"""

from __future__ import annotations

import contextlib

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from guestha.protocol.states import GROUP_STATES

REGISTRY = CollectorRegistry(auto_describe=True)

GROUP_STATE = Gauge(
    "guestha_group_state", "1 for the state a service group is in, 0 for the others.",
    ["namespace", "cluster", "group", "state"], registry=REGISTRY)
GROUP_ONLINE_MEMBERS = Gauge(
    "guestha_group_online_members", "Members where the service group is online.",
    ["namespace", "cluster", "group"], registry=REGISTRY)
FAILOVERS = Counter(
    "guestha_failovers_total", "Service group failovers, by their cause.",
    ["namespace", "cluster", "group", "reason"], registry=REGISTRY)
FAILOVER_SECONDS = Histogram(
    "guestha_failover_duration_seconds",
    "From the loss being noticed to the group online on its new member.",
    ["namespace", "cluster"], registry=REGISTRY,
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300))
MEMBER_UP = Gauge(
    "guestha_member_up", "1 while the operator reaches the member's agent.",
    ["namespace", "cluster", "member"], registry=REGISTRY)
FENCINGS = Counter(
    "guestha_fencings_total", "Fencing of members through KubeVirt, by outcome.",
    ["namespace", "cluster", "member", "outcome"], registry=REGISTRY)
CHANNEL_ERRORS = Counter(
    "guestha_channel_errors_total", "Failed exchanges with agents, by stage.",
    ["namespace", "cluster", "member", "stage"], registry=REGISTRY)
PLAN_SECONDS = Histogram(
    "guestha_plan_duration_seconds", "Time the engine took for one plan.",
    registry=REGISTRY, buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5))
LEADER = Gauge("guestha_leader", "1 while this operator replica holds the Lease.",
               registry=REGISTRY)


def set_group_state(namespace: str, cluster: str, group: str, state: str) -> None:
    for candidate in GROUP_STATES:
        GROUP_STATE.labels(namespace, cluster, group, candidate).set(
            1 if candidate == state else 0)


def forget_group(namespace: str, cluster: str, group: str) -> None:
    """Drop a deleted group's series, so they do not linger at their last value."""
    for candidate in GROUP_STATES:
        _remove(GROUP_STATE, namespace, cluster, group, candidate)
    _remove(GROUP_ONLINE_MEMBERS, namespace, cluster, group)


def forget_member(namespace: str, cluster: str, member: str) -> None:
    _remove(MEMBER_UP, namespace, cluster, member)


def _remove(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


async def _serve_metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve(host: str, port: int) -> web.AppRunner:
    """Serve GET /metrics on host:port until the runner is cleaned up."""
    app = web.Application()
    app.router.add_get("/metrics", _serve_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
