"""status.fencings and status.lastFencing of an InGuestCluster, as this process counts them.

The count goes on from what this process wrote, not from the status its index shows: a
fencing requested, or confirmed, in the pass after another (a fenced member's stop is
confirmed within ~100 ms) would otherwise read a status the index has not caught up with
and write a count one short, or a lastFencing without its confirmedTime, for good; and a
write that failed would lose them. What is kept is written with every status until the
status shows it; a status that shows more (another replica counted since) wins.

The status is merge-patched, which merges lastFencing key by key: a new fencing writes
`confirmedTime: null` (deleting it), or it showed the previous fencing's confirmation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class FencingTally:
    """One cluster's fencing count and last fencing (see the module docstring)."""

    def __init__(self) -> None:
        self.count: int | None = None
        self.last: dict[str, Any] | None = None

    def _base(self, status: Mapping[str, Any]) -> int:
        shown = int(status.get("fencings") or 0)
        if self.count is None or shown > self.count:
            self.count, self.last = shown, None  # nothing of ours is newer
        return self.count

    def requested(self, status: Mapping[str, Any], member: str, reason: str, message: str,
                  when: str) -> None:
        self.count = self._base(status) + 1
        self.last = {"member": member, "reason": reason, "message": message[:4096],
                     "requestedTime": when, "confirmedTime": None}

    def confirmed(self, status: Mapping[str, Any], member: str, when: str) -> None:
        self._base(status)
        last = self.last if self.last is not None else dict(status.get("lastFencing") or {})
        if last.get("member") == member and last.get("confirmedTime") is None:
            self.last = dict(last, confirmedTime=when)

    def status(self, status: Mapping[str, Any]) -> dict[str, Any]:
        """What the next status write must carry ({}: the status shows it already)."""
        if self.count is None:
            return {}
        self._base(status)
        if self.last is None:
            return {}
        shown = {k: v for k, v in self.last.items() if v is not None}
        if self.count == int(status.get("fencings") or 0) and status.get("lastFencing") == shown:
            return {}
        return {"fencings": self.count, "lastFencing": self.last}
