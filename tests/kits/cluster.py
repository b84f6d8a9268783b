"""The operator's part in bringing agents together as one cluster: each is told its
groups and its peers (PUT /v1/config), then every one must count all its peers and the
operator's vote before a test or benchmark goes on."""

from __future__ import annotations

import functools
import http.client
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kits.client import Client
from kits.guests import GuestAgent
from kits.waiting import wait_for


def configure(
    agents: Sequence[GuestAgent],
    clients: Mapping[str, Client],
    epoch: int,
    groups: Callable[[GuestAgent], list[dict[str, Any]]],
    heartbeat: Mapping[str, Any] | None = None,
    fencing: Mapping[str, Any] | None = None,
) -> None:
    """PUT /v1/config to every agent: its groups, the others as peers."""
    peers = [{"member": a.member, "address": a.address} for a in agents]
    for a in agents:
        body: dict[str, Any] = {"groups": groups(a), "peers": peers}
        if heartbeat is not None:
            body["heartbeat"] = dict(heartbeat)
        if fencing is not None:
            body["fencing"] = dict(fencing)
        code, answer = clients[a.member].command("PUT", "/v1/config", epoch, body)
        if code != 200:
            raise AssertionError(f"{a.member}: PUT /v1/config answered {code}: {answer}")


def wait_quorum(
    agents: Sequence[GuestAgent], clients: Mapping[str, Client], timeout: float = 15.0
) -> None:
    """Waits until every agent counts all its peers and the operator (the polls of an
    EventReader whose client carries the operator's epoch are the operator's contact)."""
    votes = len(agents) + 1

    def full(a: GuestAgent) -> bool:
        try:
            quorum = clients[a.member].status()["quorum"]
        except (OSError, http.client.HTTPException):
            clients[a.member].close()
            return False
        return bool(quorum["hasQuorum"] and quorum["present"] == votes)

    for a in agents:
        wait_for(
            functools.partial(full, a),
            timeout,
            what=f"{a.member} hearing its {len(agents) - 1} peers and the operator",
        )
