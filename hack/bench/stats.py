"""The figures every benchmark reports: median, p95, max and the trial count. Standard library
only, so that a benchmark run with the guests' Python (3.9, no test bed packages) has it."""

from __future__ import annotations

import statistics


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3),
            "p95": round(percentile(values, 95), 3), "max": round(max(values), 3),
            "n": len(values)}
