"""What the operator knows of one member VM, before any agent reports."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class MemberPhase(enum.StrEnum):
    """A member's phase: its VMI's phase, or why there is none."""

    MISSING = "Missing"  # no VirtualMachine of that name
    STOPPED = "Stopped"  # the VM exists, no VMI runs it
    PENDING = "Pending"
    SCHEDULING = "Scheduling"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class MemberView:
    """One member as KubeVirt's objects show it."""

    name: str
    phase: MemberPhase
    address: str | None = None
    node: str | None = None
    guest_agent: bool = False  # the VMI's AgentConnected condition
    uid: str | None = None  # the VMI's uid: which run of the VM this is
    deleting: bool = False  # the VMI has a deletionTimestamp (a stop was asked for)
    # why the running instance must restart to run what the VM's template says (Template
    # mode: guestha's agent); None: it need not
    restart_required: str | None = None
    created: float | None = None  # the VMI's creationTimestamp (epoch seconds)

    @property
    def running(self) -> bool:
        return self.phase is MemberPhase.RUNNING
