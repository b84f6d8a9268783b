"""Resource dependency order: children first on the way up, parents first on the way down."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guestha.agent.dependencies import (
    find_cycle,
    parents_of,
    ready_to_start,
    ready_to_stop,
    start_order,
)
from guestha.agent.groups import validate_groups
from guestha.protocol.config import GroupConfig
from guestha.protocol.fields import FieldError

pytestmark = pytest.mark.unit

# web depends on app1 and app2, which both depend on data; log stands alone.
SHOP = {"data": (), "app1": ("data",), "app2": ("data",), "web": ("app1", "app2"), "log": ()}


def test_start_order_runs_independent_branches_together() -> None:
    assert start_order(SHOP) == [["data", "log"], ["app1", "app2"], ["web"]]


def test_ready_to_start_waits_for_every_child() -> None:
    assert ready_to_start(SHOP, online=["data"], started=["data", "log"]) == ["app1", "app2"]
    assert ready_to_start(SHOP, online=["data", "app1"], started=["app2", "log"]) == []
    assert ready_to_start(SHOP, online=["data", "app1", "app2"], started=[]) == ["web", "log"]


def test_ready_to_stop_waits_for_every_parent() -> None:
    assert ready_to_stop(SHOP, down=[], stopping=[]) == ["log", "web"]
    assert ready_to_stop(SHOP, down=["web", "log"], stopping=[]) == ["app2", "app1"]
    assert ready_to_stop(SHOP, down=["web", "app1"], stopping=["app2"]) == ["log"]
    assert ready_to_stop(SHOP, down=["web", "app1", "app2"], stopping=["log"]) == ["data"]


def test_parents_of() -> None:
    assert parents_of(SHOP)["data"] == ["app1", "app2"]
    assert parents_of(SHOP)["web"] == []


def test_find_cycle_names_it() -> None:
    assert find_cycle(SHOP) is None
    cycle = find_cycle({"a": ("b",), "b": ("c",), "c": ("a",), "d": ()})
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert find_cycle({"a": ("a",)}) == ["a", "a"]
    with pytest.raises(ValueError, match="cycle"):
        start_order({"a": ("b",), "b": ("a",)})


def test_configuration_with_a_cycle_is_refused_naming_the_field() -> None:
    config = GroupConfig.from_dict({"name": "g", "resources": [
        {"name": "a", "type": "Process", "attributes": {"command": ["true"]}, "dependsOn": ["b"]},
        {"name": "b", "type": "Process", "attributes": {"command": ["true"]}, "dependsOn": ["a"]},
    ]})
    errors = validate_groups([config])
    assert len(errors) == 1
    assert errors[0].startswith("groups[g].resources[a].dependsOn: dependency cycle a -> b -> a")
    with pytest.raises(FieldError, match=r"dependsOn: 'c' is not another resource"):
        GroupConfig.from_dict({"name": "g", "resources": [
            {"name": "a", "type": "Process", "attributes": {"command": ["true"]},
             "dependsOn": ["c"]}]})


@st.composite
def dags(draw: st.DrawFn) -> dict[str, tuple[str, ...]]:
    n = draw(st.integers(1, 8))
    names = [f"r{i}" for i in range(n)]
    graph: dict[str, tuple[str, ...]] = {}
    for i, name in enumerate(names):
        graph[name] = tuple(draw(st.sets(st.sampled_from(names[:i]))) if i else ())
    order = draw(st.permutations(names))
    return {name: graph[name] for name in order}


@given(dags())
def test_start_order_respects_every_dependency(graph: dict[str, tuple[str, ...]]) -> None:
    waves = start_order(graph)
    position = {name: i for i, wave in enumerate(waves) for name in wave}
    assert sorted(position) == sorted(graph)
    for name, children in graph.items():
        for child in children:
            assert position[child] < position[name]


@given(dags())
def test_stopping_never_stops_a_child_before_its_parents(
        graph: dict[str, tuple[str, ...]]) -> None:
    down: list[str] = []
    while len(down) < len(graph):
        ready = ready_to_stop(graph, down, [])
        assert ready
        for name in ready:
            assert all(name not in graph[p] or p in down for p in graph)
        down.extend(ready)
