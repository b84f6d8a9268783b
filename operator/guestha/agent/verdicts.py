"""What one monitor result means for a resource: the VCS rules as one pure function.

The resource thread (agent/monitor.py) runs monitors and carries out what this module
decides, so the rules can be read, and tested with tables, apart from threads and clocks.
The rule the operator's failover rests on: a resource becomes Offline (or stays Offline
or Faulted) only on a monitor that confirmed it stopped. A monitor that failed, errored,
timed out or found the resource in transition is "Unknown": the resource may be running,
so it is Unknown until a successful stop (offline or clean) confirms it stopped, as
Pacemaker treats a failed monitor (OCF 1-6, 9, a timeout) as "running, failed".
"""

from __future__ import annotations

from dataclasses import dataclass

from guestha.protocol.states import FAULTED, OFFLINE, ONLINE, UNKNOWN

# What a verdict asks of the resource thread.
NOTE = "note"  # keep the state, update the message
SET = "set"  # change the state to Verdict.state (for Verdict.reason)
TOLERATE = "tolerate"  # an offline result within ToleranceLimit: count it, keep the state
RECOVER = "recover"  # clean, then restart in place within RestartLimit, else Faulted


@dataclass(frozen=True)
class Seen:
    """What the resource thread knows when a monitor result arrives."""

    state: str  # the resource's state: Online, Offline, Faulted or Unknown
    was_online: bool = False  # it ran since it was last confirmed stopped
    faulted: bool = False  # it was Faulted before it became Unknown
    tolerated: int = 0  # offline results tolerated in a row so far
    timeouts: int = 0  # monitor timeouts in a row, this one included


@dataclass(frozen=True)
class Limits:
    """The resource's VCS attributes that the rules use."""

    tolerance_limit: int = 0  # ToleranceLimit
    fault_on_monitor_timeouts: int = 4  # FaultOnMonitorTimeouts (0: never)


@dataclass(frozen=True)
class Verdict:
    action: str  # NOTE, SET, TOLERATE or RECOVER
    state: str = ""  # for SET
    reason: str = ""  # for SET and RECOVER: the event reason


def judge(seen: Seen, result: str, timed_out: bool, limits: Limits) -> Verdict:
    """The verdict on one monitor result (Online, Offline or Unknown; Unknown when it
    timed out) for a resource in `seen`.

    Online resource: Online keeps it; Offline is tolerated ToleranceLimit times, then
    recovered (clean, restart or fault); a failed monitor is recovered at once; timeouts
    are noted until FaultOnMonitorTimeouts of them in a row, then recovered.
    Offline or Faulted resource: Online means it was found running; Offline keeps it;
    a failed or timed-out monitor makes it Unknown (it may be running).
    Unknown resource: Online makes it Online; Offline makes it Offline (Faulted if it was),
    unless it ran since it was last confirmed stopped: then it is an unexpected offline,
    handled as for an Online resource; anything else keeps it Unknown.
    """
    state = seen.state
    if timed_out:
        limit = limits.fault_on_monitor_timeouts
        if state == ONLINE or (state == UNKNOWN and seen.was_online):
            if limit and seen.timeouts >= limit:
                return Verdict(RECOVER, reason="MonitorTimeout")
            return Verdict(NOTE)
        if state in (OFFLINE, FAULTED):
            return Verdict(SET, UNKNOWN, "MonitorTimeout")
        return Verdict(NOTE)
    if result == ONLINE:
        if state == ONLINE:
            return Verdict(NOTE)
        if state == UNKNOWN:
            return Verdict(SET, ONLINE, "Monitor")
        return Verdict(SET, ONLINE, "FoundOnline")
    if result == OFFLINE:
        if state == ONLINE or (state == UNKNOWN and seen.was_online):
            if seen.tolerated < limits.tolerance_limit:
                return Verdict(TOLERATE)
            return Verdict(RECOVER, reason="MonitorOffline")
        if state == UNKNOWN:
            return Verdict(SET, FAULTED if seen.faulted else OFFLINE, "Monitor")
        return Verdict(NOTE)
    # Unknown: the monitor failed (or found the resource in transition).
    if state == ONLINE:
        return Verdict(RECOVER, reason="MonitorFailed")
    if state in (OFFLINE, FAULTED):
        return Verdict(SET, UNKNOWN, "MonitorFailed")
    return Verdict(NOTE)
