"""The dependency graph of a service group's resources (VCS resource dependencies).

`dependsOn` names a resource's children: they go online before it and offline after it.
These pure functions check the graph (no cycles) and answer "what may start or stop now",
which is what lets the group runner start independent branches in parallel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def find_cycle(depends_on: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as a list of names (first name repeated at the end), or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(depends_on, white)
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        colour[name] = grey
        stack.append(name)
        for child in depends_on.get(name, ()):
            if child not in colour:
                continue
            if colour[child] == grey:
                return [*stack[stack.index(child):], child]
            if colour[child] == white:
                found = visit(child)
                if found:
                    return found
        stack.pop()
        colour[name] = black
        return None

    for name in depends_on:
        if colour[name] == white:
            found = visit(name)
            if found:
                return found
    return None


def parents_of(depends_on: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """For each resource, the resources that depend on it (must stop before it does)."""
    parents: dict[str, list[str]] = {name: [] for name in depends_on}
    for name, children in depends_on.items():
        for child in children:
            parents.setdefault(child, []).append(name)
    return parents


def ready_to_start(depends_on: Mapping[str, Sequence[str]], online: Iterable[str],
                   started: Iterable[str]) -> list[str]:
    """Resources not yet started whose children are all online, in declaration order."""
    up = set(online)
    begun = set(started) | up
    return [name for name, children in depends_on.items()
            if name not in begun and all(child in up for child in children)]


def ready_to_stop(depends_on: Mapping[str, Sequence[str]], down: Iterable[str],
                  stopping: Iterable[str]) -> list[str]:
    """Resources not yet stopped whose parents are all down, in reverse declaration order."""
    gone = set(down)
    begun = set(stopping) | gone
    parents = parents_of(depends_on)
    return [name for name in reversed(list(depends_on))
            if name not in begun and all(parent in gone for parent in parents[name])]


def start_order(depends_on: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Waves of resources that may start together, children first (for display and tests)."""
    waves: list[list[str]] = []
    done: list[str] = []
    while len(done) < len(depends_on):
        wave = ready_to_start(depends_on, done, ())
        if not wave:
            raise ValueError(f"dependency cycle: {' -> '.join(find_cycle(depends_on) or [])}")
        waves.append(wave)
        done.extend(wave)
    return waves
