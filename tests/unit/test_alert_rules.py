"""guestha's alert rules (manifests/monitoring/prometheusrule.yaml) checked by Prometheus's
own promtool: `check rules` (they load, with a linter's eye) and `test rules`, series in
and alerts out (tests/unit/alerts/guestha-alerts.test.yaml), each alert shown firing on
series that should fire it and staying quiet on series that should not.

promtool is built from the Prometheus Go module (hack/testbed/promtool.py) and cached.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed import promtool

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
RULE = REPO / "manifests" / "monitoring" / "prometheusrule.yaml"
TESTS = Path(__file__).with_name("alerts") / "guestha-alerts.test.yaml"
# what issue 17 asks alerts for, by the metric each reads
WANTED = {"GuesthaServiceGroupFaulted": "guestha_group_state",
          "GuesthaMemberLost": "guestha_member_up",
          "GuesthaMemberFenced": "guestha_fencings_total",
          "GuesthaFailoverStorm": "guestha_failovers_total",
          "GuesthaOperatorWithoutLeader": "guestha_leader"}


def rules() -> list[dict[str, Any]]:
    spec = yaml.safe_load(RULE.read_text())["spec"]
    return [r for g in spec["groups"] for r in g["rules"]]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PrometheusRule's groups as a Prometheus rule file, beside the unit tests."""
    where = tmp_path_factory.mktemp("alerts")
    spec = yaml.safe_load(RULE.read_text())["spec"]
    (where / "rules.yaml").write_text(yaml.safe_dump({"groups": spec["groups"]}))
    shutil.copy(TESTS, where / TESTS.name)
    return where


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool.build_promtool()), *args], capture_output=True,
                          text=True, timeout=300)


def test_the_rules_are_the_alerts_asked_for() -> None:
    found = {r["alert"]: r["expr"] for r in rules()}
    assert set(found) == set(WANTED)
    for alert, metric in WANTED.items():
        assert metric in found[alert], alert
    assert "absent(guestha_leader)" in found["GuesthaOperatorWithoutLeader"]
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_promtool_accepts_the_rules(folder: Path) -> None:
    result = run("check", "rules", "--lint=all", "--lint-fatal", str(folder / "rules.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(WANTED)} rules found" in result.stdout


def test_each_alert_fires_when_it_should_and_only_then(folder: Path) -> None:
    result = run("test", "rules", str(folder / TESTS.name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_each_alert_has_cases_both_ways() -> None:
    """No alert is tested only firing, or only quiet."""
    cases = [c for t in yaml.safe_load(TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert firing == set(WANTED)
    assert quiet == set(WANTED)
