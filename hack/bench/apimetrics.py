"""kube-apiserver's own counters (its /metrics, Prometheus text) as a benchmark reads them.

The apiserver counts every request it served (`apiserver_request_total`, by verb, group,
resource, subresource and code) and, with API Priority and Fairness on, what each
FlowSchema dispatched and rejected (`apiserver_flowcontrol_dispatched_requests_total`,
`apiserver_flowcontrol_rejected_requests_total`). Neither names the client: a benchmark
reads two scrapes and the difference between them, and attributes it by FlowSchema or by a
window without the client. Standard library only; pure but for `scrape`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str, names: Iterable[str] | None = None) -> Samples:
    """The samples of a Prometheus text exposition (only metrics `names` when given)."""
    wanted = set(names) if names is not None else None
    found: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None or (wanted is not None and match.group(1) not in wanted):
            continue
        labels = frozenset(_LABEL.findall(match.group(2) or ""))
        try:
            found[(match.group(1), labels)] = float(match.group(3))
        except ValueError:
            continue
    return found


def delta(before: Samples, after: Samples, name: str) -> list[tuple[dict[str, str], float]]:
    """Each series of metric `name` that grew between the two scrapes, and by how much
    (a series new in `after` counts whole)."""
    grown = []
    for (metric, labels), value in after.items():
        if metric != name:
            continue
        change = value - before.get((metric, labels), 0.0)
        if change > 0:
            grown.append((dict(labels), change))
    return grown


def total(series: list[tuple[dict[str, str], float]],
          where: Callable[[Mapping[str, str]], bool] = lambda _: True) -> float:
    return sum(v for labels, v in series if where(labels))


def by(series: list[tuple[dict[str, str], float]], key: Callable[[Mapping[str, str]], str],
       per: float = 1.0) -> dict[str, float]:
    """Sums of the series grouped by `key(labels)`, each divided by `per` (seconds: a
    rate), largest first."""
    sums: dict[str, float] = {}
    for labels, value in series:
        sums[key(labels)] = sums.get(key(labels), 0.0) + value
    return {k: round(v / per, 3) for k, v in sorted(sums.items(), key=lambda kv: -kv[1])}


def request_key(labels: Mapping[str, str]) -> str:
    """'VERB group/resource[/subresource]' of an apiserver_request_total series."""
    group = labels.get("group") or "core"
    sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
    return f"{labels.get('verb')} {group}/{labels.get('resource')}{sub}"
