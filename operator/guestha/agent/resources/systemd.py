"""Systemd: a unit the guest's systemd runs; the agent starts, stops and watches it.

online = `systemctl start`, offline = `systemctl stop`, monitor reads the unit's
LoadState/ActiveState/SubState/Result with `systemctl show`: active and reloading are
Online; inactive and failed are Offline with a message that says which; activating and
deactivating (starting, stopping, or waiting to be restarted) are Unknown: processes of
the unit may run, so it is not Offline; a unit systemd does not know is Offline with
"not found". clean = `systemctl kill --signal=SIGKILL` + `systemctl stop` +
`systemctl reset-failed`, so a failed unit can be started again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from guestha.protocol import TYPE_CHECKING

from .base import ActionError, Attr, MonitorResult, Resource, ResourceContext
from .programs import Completed, run

if TYPE_CHECKING:
    from typing import Any

SYSTEMCTL = "systemctl"
_UNIT = re.compile(r"^[A-Za-z0-9:_.@\\-]+$")
PROPERTIES = ("LoadState", "ActiveState", "SubState", "Result", "MainPID")


def _unit_name(value: Any) -> str | None:
    if not _UNIT.match(value) or value.startswith("-"):
        return f"not a systemd unit name: {value!r} (e.g. postgresql.service)"
    return None


def parse_show(text: str) -> dict[str, str]:
    """`systemctl show` output (KEY=VALUE lines) as a dict."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def unit_status(props: Mapping[str, str]) -> MonitorResult:
    """Online/Offline/Unknown for a unit's properties, with what a person needs to know."""
    load, active = props.get("LoadState", ""), props.get("ActiveState", "")
    sub, result = props.get("SubState", ""), props.get("Result", "")
    detail = f"{active} ({sub})" if sub else active
    if load == "not-found":
        return MonitorResult.offline("unit not found")
    if load in ("error", "bad-setting", "masked"):
        return MonitorResult.offline(f"unit cannot be loaded: {load}")
    if active in ("active", "reloading"):
        pid = props.get("MainPID", "0")
        return MonitorResult.online(f"{detail}, main pid {pid}" if pid not in ("", "0")
                                    else detail)
    if active == "failed":
        return MonitorResult.offline(f"failed: {result or sub}")
    if active in ("inactive", "maintenance"):
        return MonitorResult.offline(detail)
    if active in ("activating", "deactivating"):
        return MonitorResult.unknown(f"{detail}: in transition, not known to be stopped")
    return MonitorResult.unknown(f"unexpected unit state {detail or '(none)'}")


class Systemd(Resource):
    """A systemd unit."""

    type_name = "Systemd"
    schema = {"unit": Attr("string", required=True, check=_unit_name)}

    def __init__(self, context: ResourceContext, attributes: Mapping[str, Any]) -> None:
        super().__init__(context, attributes)
        self.unit: str = attributes["unit"]

    def _systemctl(self, timeout: float, *args: str) -> Completed:
        return run([SYSTEMCTL, *args], timeout, f"systemctl {args[0]} {self.unit}", owner=self)

    def _must(self, timeout: float, *args: str) -> None:
        done = self._systemctl(timeout, *args)
        if done.returncode != 0:
            raise ActionError(f"systemctl {args[0]} {self.unit} exited with status "
                              f"{done.returncode}: {done.tail()}")

    def online(self, timeout: float) -> None:
        self._must(timeout, "start", self.unit)

    def offline(self, timeout: float) -> None:
        self._must(timeout, "stop", self.unit)

    def monitor(self, timeout: float) -> MonitorResult:
        done = self._systemctl(timeout, "show", f"--property={','.join(PROPERTIES)}",
                               self.unit)
        if done.returncode != 0:
            return MonitorResult.unknown(f"systemctl show failed ({done.returncode}): "
                                         f"{done.tail()}")
        return unit_status(parse_show(done.output))

    def clean(self, timeout: float) -> None:
        # Unit names never start with "-" (validated), so no "--" is needed before them.
        self._systemctl(timeout / 3, "kill", "--signal=SIGKILL", self.unit)
        self._systemctl(timeout / 3, "stop", self.unit)
        self._systemctl(timeout / 3, "reset-failed", self.unit)
