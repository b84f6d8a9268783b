"""The `kubectl guestha status` layout."""

from __future__ import annotations

import pytest

from guestha.cli import summary

pytestmark = pytest.mark.unit


def test_summary_lists_clusters_members_and_groups() -> None:
    cluster = {"metadata": {"name": "web", "namespace": "apps"},
               "status": {"memberCount": 2, "readyMembers": 1, "quorum": True,
                          "conditions": [{"type": "Available", "status": "True"}],
                          "members": [{"name": "web-a", "phase": "Running",
                                       "address": "10.213.0.2", "node": "node-1"},
                                      {"name": "web-b", "phase": "Stopped"}]}}
    group = {"metadata": {"name": "shop", "namespace": "apps"},
             "spec": {"cluster": "web", "frozen": True},
             "status": {"state": "Online", "onlineOn": ["web-a"], "failovers": 3}}
    lines = summary.render([cluster], [group]).splitlines()
    assert lines[0] == "-- CLUSTERS"
    assert lines[2].split() == ["apps", "web", "2", "1", "true", "True"]
    assert ["web", "web-a", "Running", "10.213.0.2", "node-1", "-"] in [
        line.split() for line in lines]
    assert ["web", "web-b", "Stopped", "-", "-", "-"] in [line.split() for line in lines]
    assert lines[-1].split() == ["apps", "shop", "web", "Online", "web-a", "true", "3"]


def test_summary_of_nothing_says_so() -> None:
    assert summary.render([], []) == "No InGuestClusters or ServiceGroups found."
