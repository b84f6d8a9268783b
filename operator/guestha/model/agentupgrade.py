"""`status.agentUpgrade` of an InGuestCluster: the agent upgrade in flight, as the operator
that started it wrote it down.

It exists so that the upgrade outlives the operator process: an operator that starts (or
takes over) while a member's agent restarts into a new bundle reads it, and so knows that
member's silence is expected (it is not fenced for it before the migration allowance),
that no other member may start before it is done, and when it is out of time
(controller.rollout). Present only while an upgrade is in flight; the operator removes it
when the member is done or failed.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from guestha.protocol import fields

STATUS_KEY = "agentUpgrade"


def parse_time(text: str, where: str) -> float:
    """Seconds since the epoch of an RFC 3339 time; ValueError naming `where`."""
    try:
        at = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{where}: not an RFC 3339 time: {text!r}") from None
    if at.tzinfo is None:
        raise ValueError(f"{where}: an RFC 3339 time needs its offset (Z): {text!r}")
    return at.timestamp()


@dataclass(frozen=True)
class AgentUpgrade:
    """One member's agent upgrade in flight: the member, the version sent to it, the
    version it ran, when its agent accepted the bundle, and the groups Online (or
    Partial) there then, which must be so again for the upgrade to be done."""

    member: str
    version: str
    previous_version: str
    started_time: str  # RFC 3339, as the operator writes every status time
    groups: tuple[str, ...] = ()

    @property
    def started(self) -> float:
        """started_time in seconds since the epoch."""
        return parse_time(self.started_time, f"status.{STATUS_KEY}.startedTime")

    def to_status(self) -> dict[str, Any]:
        return {"member": self.member, "version": self.version,
                "previousVersion": self.previous_version, "startedTime": self.started_time,
                "groups": sorted(self.groups)}

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> AgentUpgrade | None:
        """The record in an InGuestCluster's status (None: none); a bad one is a
        ValueError naming the field."""
        raw = status.get(STATUS_KEY)
        if raw is None:
            return None
        where = f"status.{STATUS_KEY}"
        body = fields.obj(raw, where)
        started = fields.text(body, "startedTime", where)
        parse_time(started, f"{where}.startedTime")  # refused here with the rest
        return cls(fields.text(body, "member", where), fields.text(body, "version", where),
                   fields.text(body, "previousVersion", where), started,
                   tuple(sorted(fields.texts(body, "groups", where))))
