"""`kubectl guestha status`: the summary document (-o json|yaml) and its text layout."""

from __future__ import annotations

import json
from typing import Any

import pytest

from guestha.cli import colour, summary

pytestmark = pytest.mark.unit

CLUSTER = {"metadata": {"name": "web", "namespace": "apps"},
           "status": {"memberCount": 2, "readyMembers": 1, "quorum": True,
                      "conditions": [{"type": "Available", "status": "True"}],
                      "members": [{"name": "web-a", "phase": "Running", "agent": "Connected",
                                   "address": "10.213.0.2", "node": "node-1",
                                   "agentVersion": "abc"},
                                  {"name": "web-b", "phase": "Stopped"}]}}
GROUP = {"metadata": {"name": "shop", "namespace": "apps"},
         "spec": {"cluster": "web", "frozen": True},
         "status": {"state": "Online", "onlineOn": ["web-a"], "failovers": 3,
                    "members": [{"name": "web-a", "state": "Online",
                                 "resources": [{"name": "app", "state": "Online"}]},
                                {"name": "web-b", "state": "Faulted", "faulted": True,
                                 "resources": [{"name": "app", "state": "Faulted",
                                                "message": "exited 1",
                                                "lastFaultTime": "2026-11-30T10:00:00Z"}]}]}}
PENDING = {"metadata": {"name": "shop-x1", "namespace": "apps"},
           "spec": {"serviceGroup": "shop", "to": "web-b"},
           "status": {"phase": "Running", "from": "web-a", "to": "web-b",
                      "message": "stopping"}}
DONE = {"metadata": {"name": "shop-old", "namespace": "apps"},
        "spec": {"serviceGroup": "shop"}, "status": {"phase": "Succeeded"}}


def test_the_document_has_every_block_with_stable_names() -> None:
    doc = summary.document([CLUSTER], [GROUP], [PENDING, DONE])
    assert doc == {
        "clusters": [{"namespace": "apps", "name": "web", "memberCount": 2, "readyMembers": 1,
                      "quorum": True, "available": "True", "members": [
                          {"name": "web-a", "phase": "Running", "agent": "Connected",
                           "agentVersion": "abc", "address": "10.213.0.2", "node": "node-1"},
                          {"name": "web-b", "phase": "Stopped", "agent": None,
                           "agentVersion": None, "address": None, "node": None}]}],
        "groups": [{"namespace": "apps", "name": "shop", "cluster": "web", "type": "Failover",
                    "state": "Online", "onlineOn": ["web-a"], "frozen": True, "failovers": 3,
                    "members": [{"name": "web-a", "state": "Online", "faulted": False},
                                {"name": "web-b", "state": "Faulted", "faulted": True}]}],
        "faultedResources": [{"namespace": "apps", "group": "shop", "member": "web-b",
                              "resource": "app", "message": "exited 1",
                              "lastFaultTime": "2026-11-30T10:00:00Z"}],
        "pendingSwitchovers": [{"namespace": "apps", "name": "shop-x1", "group": "shop",
                                "phase": "Running", "from": "web-a", "to": "web-b",
                                "message": "stopping"}],
    }
    json.dumps(doc)  # plain data: it prints as JSON and YAML


def test_objects_without_status_yet_give_nulls_not_missing_fields() -> None:
    doc = summary.document([{"metadata": {"name": "web", "namespace": "apps"}}],
                           [{"metadata": {"name": "shop", "namespace": "apps"},
                             "spec": {"cluster": "web"}}],
                           [{"metadata": {"name": "s", "namespace": "apps"},
                             "spec": {"serviceGroup": "shop"}}])
    assert doc["clusters"][0]["quorum"] is None
    assert doc["clusters"][0]["available"] == "Unknown"
    assert doc["groups"][0]["state"] == "Unknown"
    assert doc["pendingSwitchovers"][0]["phase"] == "Pending"


def blocks(text: str) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith("-- "):
            name = line[3:]
            out[name] = []
        elif line.strip():
            out[name].append(line.split())
    return out


def test_the_text_shows_each_block_like_hastatus_sum() -> None:
    text = summary.render(summary.document([CLUSTER], [GROUP], [PENDING, DONE]))
    found = blocks(text)
    assert list(found) == ["CLUSTERS", "MEMBERS", "SERVICE GROUPS", "GROUP STATE",
                           "FAULTED RESOURCES", "PENDING SWITCHOVERS"]
    assert found["CLUSTERS"][1] == ["apps", "web", "2", "1", "true", "True"]
    assert found["MEMBERS"][1:] == [
        ["apps", "web", "web-a", "Running", "Connected", "10.213.0.2", "node-1"],
        ["apps", "web", "web-b", "Stopped", "-", "-", "-"]]
    assert found["SERVICE GROUPS"][1] == ["apps", "shop", "web", "Online", "web-a", "true", "3"]
    assert found["GROUP STATE"][1:] == [["apps", "shop", "web-a", "Online", "false"],
                                        ["apps", "shop", "web-b", "Faulted", "true"]]
    assert found["FAULTED RESOURCES"][1] == ["apps", "shop", "web-b", "app", "exited", "1"]
    assert found["PENDING SWITCHOVERS"][1][:6] == ["apps", "shop-x1", "shop", "Running",
                                                  "web-a", "web-b"]
    assert "\x1b[" not in text


def test_faults_and_switchovers_blocks_only_when_there_are_any() -> None:
    calm: dict[str, Any] = {**GROUP, "status": {"state": "Online", "onlineOn": ["web-a"]}}
    found = blocks(summary.render(summary.document([CLUSTER], [calm], [DONE])))
    assert list(found) == ["CLUSTERS", "MEMBERS", "SERVICE GROUPS", "GROUP STATE"]


def test_colour_paints_state_words_and_keeps_the_columns_aligned() -> None:
    doc = summary.document([CLUSTER], [GROUP], [])
    plain = summary.render(doc)
    painted = summary.render(doc, paint=True)
    assert f"{colour.GREEN}Online{colour.RESET}" in painted
    assert f"{colour.RED}Faulted{colour.RESET}" in painted
    unpainted = painted
    for code in (colour.GREEN, colour.YELLOW, colour.RED, colour.RESET):
        unpainted = unpainted.replace(code, "")
    assert unpainted == plain


@pytest.mark.parametrize(("terminal", "environ", "output", "wanted"), [
    (True, {}, None, True),
    (False, {}, None, False),  # piped or redirected: a script reads it
    (True, {"NO_COLOR": "1"}, None, False),
    (True, {"NO_COLOR": ""}, None, True),  # no-color.org: only a non-empty value counts
    (True, {}, "json", False),
    (True, {}, "yaml", False),
])
def test_colour_only_on_a_terminal_without_no_color_in_text(
        terminal: bool, environ: dict[str, str], output: str | None, wanted: bool) -> None:
    assert colour.wanted(terminal, environ, output) is wanted


def test_summary_of_nothing_says_so() -> None:
    assert summary.render(summary.document([], [], [])) == \
        "No InGuestClusters or ServiceGroups found."
