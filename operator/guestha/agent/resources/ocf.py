"""OCF: any Open Cluster Framework resource agent (OCF 1.0/1.1), as Pacemaker runs them.

`agent` is provider:type (or ocf:provider:type), run from OCF_ROOT/resource.d/provider/type
with the action as its argument and the parameters as OCF_RESKEY_name. The agent's own
meta-data is read to validate the parameters (unknown and missing required ones are refused
by name); its XML is parsed in a short-lived `python3 -I -S` child (see parse_meta_data).
Exit codes follow the OCF specification: 0 success/running, 7 not running, 8 running
promoted, 9 failed promoted, 1-6 errors; a monitor's code other than 0, 7 and 8 means
"failed, may still run" (monitor_result).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from guestha.protocol import TYPE_CHECKING

from .base import ActionError, Attr, MonitorResult, Resource, ResourceContext
from .programs import Completed, environment, run

if TYPE_CHECKING:
    from typing import Any

OCF_ROOT = "/usr/lib/ocf"  # where agents and their shell functions are installed
META_DATA_TIMEOUT = 10.0
META_DATA_LIMIT = 1 << 20  # characters of meta-data XML read at most

SUCCESS, NOT_RUNNING, RUNNING_PROMOTED, FAILED_PROMOTED = 0, 7, 8, 9
EXIT_TEXT = {
    0: "success",
    1: "generic error (OCF_ERR_GENERIC)",
    2: "invalid or missing parameters (OCF_ERR_ARGS)",
    3: "action not implemented (OCF_ERR_UNIMPLEMENTED)",
    4: "insufficient privileges (OCF_ERR_PERM)",
    5: "required software not installed (OCF_ERR_INSTALLED)",
    6: "not configured correctly (OCF_ERR_CONFIGURED)",
    7: "not running (OCF_NOT_RUNNING)",
    8: "running promoted (OCF_RUNNING_PROMOTED)",
    9: "failed while promoted (OCF_FAILED_PROMOTED)",
}
_AGENT = re.compile(r"^(?:ocf:)?([A-Za-z0-9][-A-Za-z0-9_.]*):([A-Za-z0-9][-A-Za-z0-9_.]*)$")
_PARAMETER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def exit_text(code: int) -> str:
    return EXIT_TEXT.get(code, f"exit status {code}")


def parse_agent(value: str) -> tuple[str, str] | None:
    """(provider, type) of "provider:type" or "ocf:provider:type", None if malformed."""
    match = _AGENT.match(value)
    return (match.group(1), match.group(2)) if match else None


def agent_path(provider: str, kind: str) -> str:
    return os.path.join(OCF_ROOT, "resource.d", provider, kind)


def monitor_result(code: int, output: str) -> MonitorResult:
    """The state an OCF monitor exit code means, as Pacemaker reads it.

    0 running, 8 running promoted: Online. 7 not running: Offline, the only code that says
    the resource is stopped. Every other code (1 generic error, 2 arguments, 3
    unimplemented, 4 permissions, 5 not installed, 6 not configured, 9 failed promoted,
    anything else) means the resource failed and may still run: Unknown, so that it is
    stopped, and the stop confirmed, before it runs anywhere again.
    """
    text = exit_text(code)
    detail = f"{text}: {output}" if output else text
    if code in (SUCCESS, RUNNING_PROMOTED):
        return MonitorResult.online(output if code == SUCCESS else detail)
    if code == NOT_RUNNING:
        return MonitorResult.offline(output)
    if code in EXIT_TEXT:
        return MonitorResult.unknown(f"failed: {detail}")
    return MonitorResult.unknown(f"monitor returned {detail}")


@dataclass(frozen=True)
class Parameter:
    name: str
    required: bool
    default: str | None


@dataclass(frozen=True)
class MetaData:
    """The parts of an agent's meta-data that validation needs."""

    parameters: dict[str, Parameter]
    actions: tuple[str, ...]


# The child that parses meta-data: the XML on stdin, one JSON answer on stdout.
_PARSE_CHILD = r"""
import io, json, sys
from xml.etree import ElementTree
text = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8").read()
try:
    root = ElementTree.fromstring(text)
except ElementTree.ParseError as e:
    sys.stdout.write(json.dumps({"error": str(e)}))
    sys.exit(0)
parameters = []
for node in root.iter("parameter"):
    name = node.get("name")
    if not name:
        continue
    content = node.find("content")
    default = content.get("default") if content is not None else None
    parameters.append([name, node.get("required") in ("1", "true"), default])
actions = [a.get("name", "") for a in root.iter("action")]
sys.stdout.write(json.dumps({"parameters": parameters, "actions": actions}))
"""


def parse_meta_data(text: str, timeout: float = META_DATA_TIMEOUT) -> MetaData:
    """Parse the XML an OCF agent prints for `meta-data`; ActionError when it is not XML.

    The parsing runs in a `python3 -I -S` child, once per agent type (read_meta_data caches
    it): xml.etree and pyexpat would otherwise stay in the agent's memory for its whole
    run, about half a megabyte, for one look at each OCF agent's meta-data."""
    done = run([sys.executable or "python3", "-I", "-S", "-c", _PARSE_CHILD], timeout,
               "parsing meta-data", keep=META_DATA_LIMIT, stderr=False,
               stdin=text.encode("utf-8"))
    try:
        answer = json.loads(done.output) if done.returncode == 0 else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ActionError(f"meta-data could not be parsed (the parser exited with status "
                          f"{done.returncode}: {done.tail(100)!r})")
    if "error" in answer:
        raise ActionError(f"meta-data is not valid XML: {answer['error']}")
    parameters = {name: Parameter(name, bool(required), default)
                  for name, required, default in answer["parameters"]}
    return MetaData(parameters, tuple(answer["actions"]))


_cache: dict[tuple[str, float], MetaData] = {}
_cache_lock = threading.Lock()


def read_meta_data(path: str, timeout: float = META_DATA_TIMEOUT) -> MetaData:
    """An installed agent's meta-data (cached until the agent file changes)."""
    key = (path, os.stat(path).st_mtime)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    env = environment({"OCF_ROOT": OCF_ROOT, "OCF_RA_VERSION_MAJOR": "1",
                       "OCF_RA_VERSION_MINOR": "1"})
    done = run([path, "meta-data"], timeout, f"{path} meta-data", env=env, keep=META_DATA_LIMIT,
               stderr=False)
    if done.returncode != 0:
        raise ActionError(f"meta-data exited with {exit_text(done.returncode)}: {done.tail()}")
    data = parse_meta_data(done.output, timeout)
    with _cache_lock:
        _cache[key] = data
    return data


def _agent_check(value: Any) -> str | None:
    if parse_agent(value) is None:
        return f"must be provider:type or ocf:provider:type (e.g. heartbeat:Dummy), got {value!r}"
    return None


def _depth_check(value: Any) -> str | None:
    return None if value >= 0 else f"must be >= 0 (an OCF_CHECK_LEVEL such as 0, 10, 20), " \
        f"got {value}"


class OCF(Resource):
    """A resource managed by an OCF resource agent."""

    type_name = "OCF"
    schema = {
        "agent": Attr("string", required=True, check=_agent_check),
        "parameters": Attr("scalars", non_empty=False),
        "depth": Attr("int", check=_depth_check),
    }

    def __init__(self, context: ResourceContext, attributes: Mapping[str, Any]) -> None:
        super().__init__(context, attributes)
        parsed = parse_agent(attributes["agent"])
        assert parsed is not None, "validated"
        self.provider, self.kind = parsed
        self.agent = f"{self.provider}:{self.kind}"
        self.path = agent_path(self.provider, self.kind)
        self.parameters = {k: str(v) for k, v in (attributes.get("parameters") or {}).items()}
        self.depth = int(attributes.get("depth") or 0)
        self.instance = f"{context.group}_{context.name}"

    @classmethod
    def validate(cls, attributes: Mapping[str, Any]) -> list[str]:
        errors = super().validate(attributes)
        if errors:
            return errors
        provider, kind = parse_agent(attributes["agent"]) or ("", "")
        parameters: Mapping[str, Any] = attributes.get("parameters") or {}
        for name in parameters:
            if not _PARAMETER.match(name):
                errors.append(f"attributes.parameters.{name}: not a valid parameter name "
                              "(letters, digits and _)")
        path = agent_path(provider, kind)
        if not os.access(path, os.X_OK):
            errors.append(f"attributes.agent: {provider}:{kind} is not installed in this "
                          f"guest (no executable {path})")
            return errors
        try:
            meta = read_meta_data(path)
        except ActionError as e:
            errors.append(f"attributes.agent: {provider}:{kind}: {e}")
            return errors
        for name in parameters:
            if _PARAMETER.match(name) and name not in meta.parameters:
                errors.append(f"attributes.parameters.{name}: not a parameter of "
                              f"{provider}:{kind} (it has: {', '.join(meta.parameters)})")
        for param in meta.parameters.values():
            if param.required and param.name not in parameters:
                errors.append(f"attributes.parameters.{param.name}: required by "
                              f"{provider}:{kind}")
        return errors

    def _env(self, timeout: float) -> dict[str, str]:
        env = environment({
            "OCF_ROOT": OCF_ROOT,
            "OCF_RA_VERSION_MAJOR": "1",
            "OCF_RA_VERSION_MINOR": "1",
            "OCF_RESOURCE_INSTANCE": self.instance,
            "OCF_RESOURCE_TYPE": self.kind,
            "OCF_RESOURCE_PROVIDER": self.provider,
            "OCF_RESKEY_CRM_meta_timeout": str(int(timeout * 1000)),
            "OCF_CHECK_LEVEL": str(self.depth),
        })
        env.update({f"OCF_RESKEY_{k}": v for k, v in self.parameters.items()})
        return env

    def _action(self, action: str, timeout: float) -> Completed:
        return run([self.path, action], timeout, f"{self.agent} {action}",
                   env=self._env(timeout), owner=self)

    def _must(self, action: str, timeout: float) -> None:
        done = self._action(action, timeout)
        # Some agents answer stop on a stopped resource with "not running": that is success.
        if done.returncode != SUCCESS and not (action == "stop"
                                               and done.returncode == NOT_RUNNING):
            output = done.tail()
            raise ActionError(f"{self.agent} {action}: {exit_text(done.returncode)}"
                              + (f": {output}" if output else ""))

    def online(self, timeout: float) -> None:
        self._must("start", timeout)

    def offline(self, timeout: float) -> None:
        self._must("stop", timeout)

    def monitor(self, timeout: float) -> MonitorResult:
        done = self._action("monitor", timeout)
        return monitor_result(done.returncode, done.tail(200))

    def clean(self, timeout: float) -> None:
        # OCF has no clean action: stop is required to succeed on a failed resource too.
        self._must("stop", timeout)
