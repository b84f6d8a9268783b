"""The VCS rules for one resource as pure functions: its state and counters, a monitor
result and the time in; what to do and the new counters out.

The resource thread (agent/monitor.py) runs entry points, reads the clock and carries out
what these functions decide, so the rules can be read, and tested with tables, apart from
threads and clocks. Nothing here reads a clock: `now` is an argument (monotonic seconds).

The rule the operator's failover rests on: a resource becomes Offline (or stays Offline
or Faulted) only on a monitor that confirmed it stopped. A monitor that failed, errored,
timed out or found the resource in transition is "Unknown": the resource may be running,
so it is Unknown until a successful stop (offline or clean) confirms it stopped, as
Pacemaker treats a failed monitor (OCF 1-6, 9, a timeout) as "running, failed".

The rules, under VCS's names (a resource "runs" here when it is Online, or Unknown after
it ran: a clean failed, or it was found running and then in doubt):
- ToleranceLimit: that many offline results in a row are tolerated while it runs;
- FaultOnMonitorTimeouts: that many monitor timeouts in a row recover a running resource
  (0: never); a monitor that answers ends the row;
- a monitor that failed recovers an Online resource at once;
- recovering is restarting in place (clean, then online) while the restarts counted are
  fewer than RestartLimit and restarts are not held (abort() holds them until the next
  online command), else faulting: ResourceFaulted at once, clean, then Faulted;
- ConfInterval: once the resource has stayed online that long, every monitor saying so
  (a tolerated offline or a monitor timeout starts the clock again), its restart count
  starts afresh; 0: only clear resets it. Restarts in one ConfInterval therefore never
  exceed RestartLimit;
- OnlineWaitLimit: after online, monitors have OnlineWaitLimit x MonitorInterval seconds
  to report online, checked every CONFIRM_POLL_SECONDS at most, else the online failed
  (a fault);
- a fault or a restart cleans first: the resource is Faulted only once a monitor
  confirmed clean stopped it; a clean that fails (or is not confirmed) leaves it Unknown;
- intervals: MonitorInterval while Online or Unknown, OfflineMonitorInterval while
  Offline or Faulted (0: no offline monitoring), none while Starting or Stopping (the
  action's own monitors run then).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from guestha.protocol.config import ResourceConfig
from guestha.protocol.states import FAULTED, OFFLINE, ONLINE, STARTING, UNKNOWN

# What a verdict asks of the resource thread.
NOTE = "note"  # keep the state, update the message
SET = "set"  # change the state to Verdict.state (for Verdict.reason)
TOLERATE = "tolerate"  # an offline result within ToleranceLimit: keep the state
RESTART = "restart"  # clean, then online again in place (Seen.restarts counted it)
FAULT = "fault"  # ResourceFaulted at once, clean, then Faulted (after_clean)
WAIT = "wait"  # not online yet (confirm_online): monitor again after Verdict.wait seconds

CONFIRM_POLL_SECONDS = 1.0  # longest pause between monitors while confirming an online

_DEFAULTS = ResourceConfig("", "Process")  # the one definition of the defaults is there


@dataclass(frozen=True)
class Seen:
    """A resource's state and the counters the rules keep, as the resource thread knows
    them when something happens. The functions here return the next one."""

    state: str  # Online, Offline, Faulted, Unknown; Starting or Stopping during actions
    was_online: bool = False  # it ran since it was last confirmed stopped
    faulted: bool = False  # it is Faulted, or Unknown since it was (clear or online ends it)
    tolerated: int = 0  # offline results tolerated in a row (VCS ToleranceCount)
    timeouts: int = 0  # monitor timeouts in a row (VCS CurrentMonitorTimeoutCount)
    restarts: int = 0  # restarts in place counted against RestartLimit (VCS RestartCount)
    steady_since: float | None = None  # since when every monitor said Online (ConfInterval)
    held: bool = False  # restarts held: abort() until the next online command


@dataclass(frozen=True)
class Limits:
    """The resource's VCS attributes that the rules use (seconds for times)."""

    tolerance_limit: int = _DEFAULTS.tolerance_limit  # ToleranceLimit
    fault_on_monitor_timeouts: int = _DEFAULTS.fault_on_monitor_timeouts  # 0: never
    restart_limit: int = _DEFAULTS.restart_limit  # RestartLimit
    conf_interval: float = _DEFAULTS.conf_interval_seconds  # ConfInterval; 0: never
    online_wait_limit: int = _DEFAULTS.online_wait_limit  # OnlineWaitLimit (cycles)
    monitor_interval: float = _DEFAULTS.monitor.interval_seconds  # MonitorInterval
    offline_interval: float = _DEFAULTS.monitor.offline_interval_seconds  # 0: none

    @classmethod
    def of(cls, config: ResourceConfig) -> Limits:
        return cls(config.tolerance_limit, config.fault_on_monitor_timeouts,
                   config.restart_limit, float(config.conf_interval_seconds),
                   config.online_wait_limit, float(config.monitor.interval_seconds),
                   float(config.monitor.offline_interval_seconds))


@dataclass(frozen=True)
class Verdict:
    action: str  # NOTE, SET, TOLERATE, RESTART, FAULT or WAIT
    state: str = ""  # for SET
    reason: str = ""  # for SET, RESTART and FAULT: the event reason
    wait: float = 0.0  # for WAIT: seconds until the next monitor


def _runs(seen: Seen) -> bool:
    """It is expected to run: an offline or a timeout now is a problem to recover."""
    return seen.state == ONLINE or (seen.state == UNKNOWN and seen.was_online)


def judge(seen: Seen, result: str, timed_out: bool, limits: Limits,
          now: float) -> tuple[Verdict, Seen]:
    """The verdict on one monitor result (Online, Offline or Unknown; Unknown when it
    timed out) at `now`, and the counters after it.

    Online resource: Online keeps it; Offline is tolerated ToleranceLimit times in a row,
    then recovered (restart or fault); a failed monitor is recovered at once; timeouts
    are noted until FaultOnMonitorTimeouts of them in a row, then recovered.
    Offline or Faulted resource: Online means it was found running; Offline keeps it;
    a failed or timed-out monitor makes it Unknown (it may be running).
    Unknown resource: Online makes it Online; Offline makes it Offline (Faulted if it was),
    unless it ran since it was last confirmed stopped: then it is an unexpected offline,
    handled as for an Online resource; anything else keeps it Unknown.
    Before any of that, ConfInterval: a resource steady (every monitor Online) for
    ConfInterval seconds by `now` has its restart count start afresh.
    """
    restarts = seen.restarts
    if seen.steady_since is not None and limits.conf_interval > 0 \
            and now - seen.steady_since >= limits.conf_interval:
        restarts = 0
    seen = replace(seen, restarts=restarts, timeouts=seen.timeouts + 1 if timed_out else 0)
    state = seen.state
    if timed_out:
        if _runs(seen):
            limit = limits.fault_on_monitor_timeouts
            if limit and seen.timeouts >= limit:
                return _recover(seen, "MonitorTimeout", limits)
            return Verdict(NOTE), replace(seen, steady_since=None)
        if state in (OFFLINE, FAULTED):
            return Verdict(SET, UNKNOWN, "MonitorTimeout"), moved(seen, UNKNOWN)
        return Verdict(NOTE), seen
    if result == ONLINE:
        if state == ONLINE:
            steady = now if seen.steady_since is None else seen.steady_since
            return Verdict(NOTE), replace(seen, tolerated=0, steady_since=steady)
        reason = "Monitor" if state == UNKNOWN else "FoundOnline"
        return Verdict(SET, ONLINE, reason), came_online(seen, now)
    if result == OFFLINE:
        if _runs(seen):
            if seen.tolerated < limits.tolerance_limit:
                return Verdict(TOLERATE), replace(seen, tolerated=seen.tolerated + 1,
                                                  steady_since=None)
            return _recover(seen, "MonitorOffline", limits)
        if state == UNKNOWN:
            target = FAULTED if seen.faulted else OFFLINE
            return Verdict(SET, target, "Monitor"), moved(seen, target)
        return Verdict(NOTE), seen
    # Unknown: the monitor failed (or found the resource in transition).
    if state == ONLINE:
        return _recover(seen, "MonitorFailed", limits)
    if state in (OFFLINE, FAULTED):
        return Verdict(SET, UNKNOWN, "MonitorFailed"), moved(seen, UNKNOWN)
    # A failed monitor is an answer other than offline: it ends a row of offline results.
    return Verdict(NOTE), replace(seen, tolerated=0, steady_since=None)


def _recover(seen: Seen, reason: str, limits: Limits) -> tuple[Verdict, Seen]:
    """RestartLimit: restart in place while restarts are left and not held, else fault."""
    seen = replace(seen, tolerated=0, steady_since=None)
    if seen.restarts < limits.restart_limit and not seen.held:
        return Verdict(RESTART, reason=reason), replace(seen, restarts=seen.restarts + 1)
    return Verdict(FAULT, reason=reason), seen


def confirm_online(since: float, now: float, result: str, timed_out: bool,
                   limits: Limits) -> Verdict:
    """OnlineWaitLimit: the verdict on a monitor at `now` after an online action that
    returned at `since`. SET Online when it answered Online; else WAIT while the window
    (OnlineWaitLimit x MonitorInterval) is not over, FAULT (OnlineFailed) once it is: a
    monitor at exactly its end that does not say Online faults it."""
    if result == ONLINE and not timed_out:
        return Verdict(SET, ONLINE)
    left = since + limits.online_wait_limit * limits.monitor_interval - now
    if left <= 0:
        return Verdict(FAULT, reason="OnlineFailed")
    return Verdict(WAIT, wait=min(CONFIRM_POLL_SECONDS, limits.monitor_interval, left))


def online_failed(timed_out: bool) -> Verdict:
    """An online action that failed or timed out: the resource faults (no restart)."""
    return Verdict(FAULT, reason="OnlineTimeout" if timed_out else "OnlineFailed")


def after_clean(seen: Seen, stopped: bool, then: str, reason: str) -> tuple[Verdict, Seen]:
    """A clean to recover the resource has run; `stopped`: a monitor (answered in time)
    confirmed it stopped. Then the resource goes on to `then` (Faulted for a fault,
    Starting for a restart); otherwise it is Unknown (CleanFailed): it may still run."""
    if not stopped:
        return Verdict(SET, UNKNOWN, "CleanFailed"), replace(
            moved(seen, UNKNOWN), was_online=True, steady_since=None)
    return Verdict(SET, then, reason), moved(stopped_counters(seen), then)


def next_monitor(state: str, limits: Limits) -> float | None:
    """Seconds until the next periodic monitor in `state`; None: none is due."""
    if state in (ONLINE, UNKNOWN):
        return limits.monitor_interval
    if state in (OFFLINE, FAULTED) and limits.offline_interval > 0:
        return limits.offline_interval
    return None


# --- how the counters follow the resource's life (used above and by the thread) --------


def moved(seen: Seen, state: str) -> Seen:
    """The resource is now in `state`: Faulted sets the faulted mark; Online, Offline and
    Starting end it (Unknown and Stopping keep it: a faulted resource in doubt is still
    faulted once confirmed stopped)."""
    if state == FAULTED:
        return replace(seen, state=state, faulted=True)
    if state in (ONLINE, OFFLINE, STARTING):
        return replace(seen, state=state, faulted=False)
    return replace(seen, state=state)


def came_online(seen: Seen, now: float) -> Seen:
    """A monitor confirmed it Online (after a start, or found so): it runs, steady from
    now, with nothing tolerated and no timeouts counted."""
    return replace(moved(seen, ONLINE), was_online=True, tolerated=0, timeouts=0,
                   steady_since=now)


def stopped_counters(seen: Seen) -> Seen:
    """It was confirmed stopped (offline, or clean): it no longer runs."""
    return replace(seen, was_online=False, tolerated=0, steady_since=None)


def cleared(seen: Seen) -> Seen:
    """hagrp -clear: every counter starts afresh and the fault is forgotten."""
    return replace(seen, faulted=False, tolerated=0, timeouts=0, restarts=0)
