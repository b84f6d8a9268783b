"""The Argo CD health checks as files: the argocd-cm snippet (docs/argocd.md and
argocd/argocd-cm-patch.yaml) carries the very Lua of argocd/resource_customizations, the
words the scripts look for are the operator's own (condition types, reasons), and each
check's test cases cover its testdata and every status it can give.

They run on gopher-lua in tests/controlplane/test_argocd_health.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import argocdcm
from guestha.controller import cluster_status, departure, group_status, rollout
from guestha.engine import reasons

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CHECKS = REPO / "argocd" / "resource_customizations" / "guestha.io"
KINDS = ("InGuestCluster", "ServiceGroup", "Switchover")
KEY = "resource.customizations.health.guestha.io_{}"


def lua(kind: str) -> str:
    return (CHECKS / kind / "health.lua").read_text()


def docs_snippet() -> dict[str, str]:
    text = (REPO / "docs" / "argocd.md").read_text()
    found = re.search(r"<!-- argocd-cm: [^>]*-->\n```yaml\n(.*?)```\n<!-- end argocd-cm -->",
                      text, re.S)
    assert found, "docs/argocd.md: the argocd-cm snippet's markers"
    data: dict[str, str] = yaml.safe_load(found.group(1))["data"]
    return data


@pytest.mark.parametrize("snippet", ["docs", "patch"])
def test_the_argocd_cm_snippet_carries_the_files_lua(snippet: str) -> None:
    data = docs_snippet() if snippet == "docs" else yaml.safe_load(
        (REPO / "argocd" / "argocd-cm-patch.yaml").read_text())["data"]
    assert set(data) == {KEY.format(kind) for kind in KINDS}
    for kind in KINDS:
        assert data[KEY.format(kind)] == lua(kind), f"{snippet}: {kind}"


def test_hack_argocd_cm_finds_nothing_stale() -> None:
    assert argocdcm.patch_file() == argocdcm.PATCH.read_text(), "run hack/argocd-cm"
    assert argocdcm.docs_file() == argocdcm.DOCS.read_text(), "run hack/argocd-cm"


def _quoted(script: str, variable: str) -> set[str]:
    return set(re.findall(rf'{variable}\.\w+ == "(\w+)"', script))


def test_the_words_the_checks_look_for_are_the_operators() -> None:
    group = lua("ServiceGroup")
    table = re.search(r"local waiting = \{(.*?)\n\}", group, re.S)
    assert table
    waiting = set(re.findall(r"(\w+) = true", table.group(1)))
    assert waiting - {"NoDecision"} <= set(reasons.ALL)  # NoDecision: group_status.build
    assert "NoDecision" in Path(group_status.__file__).read_text()
    conditions = set(re.findall(r'condition\(status, "(\w+)"\)', group))
    assert conditions == {group_status.READY, group_status.DEGRADED, group_status.FROZEN,
                          group_status.PROGRESSING}
    assert _quoted(group, "ready") <= {"True", "False", "ClusterNotFound",
                                       departure.CLUSTER_DELETED}
    assert "ClusterNotFound" in (REPO / "operator/guestha/controller/servicegroups.py"
                                 ).read_text()
    cluster = lua("InGuestCluster")
    assert set(re.findall(r'condition\(status, "(\w+)"\)', cluster)) == {
        cluster_status.AVAILABLE, cluster_status.AGENTS_UP_TO_DATE}
    rollout_source = Path(rollout.__file__).read_text()
    for reason in _quoted(cluster, "upgrade") - {"True", "False"}:
        assert f'"{reason}"' in rollout_source, reason


@pytest.mark.parametrize("kind", KINDS)
def test_every_testdata_object_is_a_case_and_every_status_is_covered(kind: str) -> None:
    cases = yaml.safe_load((CHECKS / kind / "health_test.yaml").read_text())["tests"]
    inputs = [c["inputPath"] for c in cases]
    assert sorted(inputs) == sorted(f"testdata/{p.name}"
                                    for p in (CHECKS / kind / "testdata").glob("*.yaml"))
    returned = set(re.findall(r'hs\.status = "(\w+)"', lua(kind)))
    assert {c["healthStatus"]["status"] for c in cases} == returned
