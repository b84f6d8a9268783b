"""The channel's endpoints (/v1): routing, the command envelope, and request validation.

Every mutating request carries the operator's `epoch` and an `operationId` in its JSON
body. A command from an epoch lower than the highest this agent has seen is refused (409
StaleEpoch); a higher epoch is persisted before the command is applied. An operation id
already applied is answered with the recorded result and not applied again (the recent
ids are persisted, so this holds across agent restarts too). docs/agent-api.md is the
reference for the wire format; docs/agent-openapi.yaml describes the same endpoints, and
guestha.protocol defines the bodies.

The API sees the agent only through `Backend`, the few things it asks of it, so the agent
(guestha.agent.agent), which builds the API, is not imported here: no import circle.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass, field

from guestha.agent.events import EventGone, EventLog
from guestha.agent.http1 import HttpError, Request, Response, error_response
from guestha.agent.store import SaveError, Store
from guestha.protocol import TYPE_CHECKING
from guestha.protocol import events as kinds
from guestha.protocol.bundle import BUNDLE_FIELDS, BundleUpload
from guestha.protocol.commands import GROUP_ACTIONS, Command, ConfigApplied, parse_command
from guestha.protocol.constants import REPLAYED_HEADER
from guestha.protocol.desired import DESIRED_FIELDS, DesiredConfig
from guestha.protocol.events import EventsGone
from guestha.protocol.fields import FieldError
from guestha.protocol.status import Health, StatusReport
from guestha.protocol.tls import TLS_FIELDS, TlsApplied, TlsStatus, TlsUpdate

if TYPE_CHECKING:
    from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)

_GROUP_PATH = re.compile(r"^/v1/groups/([^/]{1,253})/([a-z]+)$")
MAX_POLL_SECONDS = 60.0
INFLIGHT_WAIT_SECONDS = 10.0  # a retry of an operation still running waits this long at most


if TYPE_CHECKING:
    class Backend(Protocol):
        """What the API needs of the agent (guestha.agent.agent.Agent is one)."""

        member: str
        store: Store  # the epoch and the operations applied
        events: EventLog

        def status(self) -> StatusReport: ...
        def health(self) -> Health: ...
        def config_document(self) -> dict[str, Any]: ...
        def operator_lease(self) -> float: ...
        def emit(self, kind: str, payload: dict[str, Any]) -> None: ...

        def apply_config(self, desired: DesiredConfig, raw: dict[str, Any]) -> None:
            """Validates, saves and applies; FieldError when invalid, SaveError when not
            saved, ValueError when it cannot be applied now."""

        def group_action(self, group: str, action: str, command: Command,
                         reason: str | None) -> Response: ...

        def install_bundle(self, upload: BundleUpload, command: Command) -> Response:
            """Installs and restarts into a bundle (HttpError when refused, SaveError
            when it could not be written: nothing is kept then)."""

        def put_tls(self, update: TlsUpdate) -> TlsStatus:
            """Stores and serves a new certificate; ValueError naming the field when it
            does not load (nothing changed)."""


@dataclass
class _InFlight:
    command: str
    done: threading.Event = field(default_factory=threading.Event)
    response: Response | None = None


class Api:
    """Turns requests into calls on the agent."""

    def __init__(self, agent: Backend) -> None:
        self.agent = agent
        self._lock = threading.Lock()
        self._inflight: dict[str, _InFlight] = {}

    def handle(self, request: Request) -> Response:
        path = request.path
        routes: dict[str, dict[str, Callable[[Request], Response]]] = {
            "/v1/status": {"GET": self.status},
            "/v1/healthz": {"GET": self.healthz},
            "/v1/events": {"GET": self.events},
            "/v1/config": {"GET": self.get_config, "PUT": self.put_config},
            "/v1/bundle": {"PUT": self.put_bundle},
            "/v1/tls": {"PUT": self.put_tls},
        }
        methods = routes.get(path)
        if methods is None:
            match = _GROUP_PATH.match(path)
            if match is None or match.group(2) not in GROUP_ACTIONS:
                raise HttpError(404, f"no endpoint {path[:200]!r}; see docs/agent-api.md",
                                "NotFound")
            group, action = match.group(1), match.group(2)

            def run(r: Request) -> Response:
                return self.group_action(r, group, action)

            methods = {"POST": run}
        handler = methods.get(request.method)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            raise HttpError(405, f"{request.method} is not allowed on {path} "
                            f"(allowed: {allowed})", "MethodNotAllowed")
        return handler(request)

    # -- reads

    def status(self, request: Request) -> Response:
        _no_query(request, frozenset())
        return Response(200, self.agent.status().to_dict())

    def healthz(self, request: Request) -> Response:
        _no_query(request, frozenset())
        return Response(200, self.agent.health().to_dict())

    def get_config(self, request: Request) -> Response:
        _no_query(request, frozenset())
        return Response(200, self.agent.config_document())

    def events(self, request: Request) -> Response:
        _no_query(request, frozenset({"after", "timeout", "stream", "limit"}))
        after = _query_int(request, "after", None, 0)
        if after is None:
            raise HttpError(400, "query after: required (the last sequence number seen; "
                            "/v1/status gives the newest)")
        limit = _query_int(request, "limit", 500, 1, 1000) or 500
        raw_timeout = request.query.get("timeout", "0")
        try:
            timeout = float(raw_timeout)
        except ValueError as e:
            raise HttpError(400, f"query timeout: not a number of seconds: "
                            f"{raw_timeout[:20]!r}") from e
        if not math.isfinite(timeout) or timeout < 0:
            raise HttpError(400, f"query timeout: must be >= 0 seconds, got {raw_timeout[:20]!r}")
        # A poll counts as contact when it arrives (Agent.operator_request): it must end,
        # and the operator poll again, well within the lease.
        timeout = min(timeout, MAX_POLL_SECONDS, self.agent.operator_lease() / 2)
        try:
            batch = self.agent.events.read(after, timeout, limit, request.query.get("stream"))
        except EventGone as e:
            return Response(410, EventsGone(str(e), self.agent.events.stream, e.first_seq,
                                            e.last_seq).to_dict())
        return Response(200, batch.to_dict())

    # -- commands

    def put_config(self, request: Request) -> Response:
        def apply(command: Command, rest: dict[str, Any]) -> Response:
            try:
                desired = DesiredConfig.from_dict(rest, self.agent.member, "body")
                self.agent.apply_config(desired, rest)
            except FieldError as e:
                raise HttpError(400, str(e), "Invalid") from e
            except ValueError as e:  # e.g. the agent is shutting down
                raise HttpError(409, str(e), "Conflict") from e
            return Response(200, ConfigApplied(
                command.operation_id, command.epoch, tuple(g.name for g in desired.groups),
                tuple(p.member for p in desired.peers)).to_dict())

        return self._command(request, "PUT /v1/config", DESIRED_FIELDS, apply)

    def put_bundle(self, request: Request) -> Response:
        def apply(command: Command, rest: dict[str, Any]) -> Response:
            try:
                upload = BundleUpload.from_dict(rest, "body")
            except FieldError as e:
                raise HttpError(400, str(e), "Invalid") from e
            return self.agent.install_bundle(upload, command)

        return self._command(request, "PUT /v1/bundle", BUNDLE_FIELDS, apply)
    def put_tls(self, request: Request) -> Response:
        def apply(command: Command, rest: dict[str, Any]) -> Response:
            try:
                served = self.agent.put_tls(TlsUpdate.from_dict(rest, "body"))
            except ValueError as e:  # FieldError too: the message names the field
                raise HttpError(400, str(e), "Invalid") from e
            return Response(200, TlsApplied(command.operation_id, command.epoch,
                                            served).to_dict())

        return self._command(request, "PUT /v1/tls", TLS_FIELDS, apply)

    def group_action(self, request: Request, group: str, action: str) -> Response:
        def apply(command: Command, rest: dict[str, Any]) -> Response:
            return self.agent.group_action(group, action, command, rest.get("reason"))

        return self._command(request, f"POST /v1/groups/{group}/{action}",
                             frozenset({"reason"}), apply)

    def _command(self, request: Request, command_name: str, extra: frozenset[str],
                 apply: Callable[[Command, dict[str, Any]], Response]) -> Response:
        _no_query(request, frozenset())
        try:
            command, rest = parse_command(request.json(), extra)
        except FieldError as e:
            raise HttpError(400, str(e), "Invalid") from e
        if "reason" in rest and not isinstance(rest["reason"], str):
            raise HttpError(400, "body.reason: must be a string", "Invalid")
        store = self.agent.store
        waiting: _InFlight | None = None
        mine = _InFlight(command_name)
        # Only the table of operations in flight is guarded here: no disk write, no event
        # and no wait happens under this lock.
        with self._lock:
            _check_epoch(command.epoch, store.epoch)
            prior = store.operation(command.operation_id)
            if prior is None and command.operation_id in self._inflight:
                waiting = self._inflight[command.operation_id]
                prior_command = waiting.command
            elif prior is not None:
                prior_command = str(prior.get("command"))
            else:
                prior_command = command_name
            if prior_command != command_name:
                raise HttpError(409, f"operationId {command.operation_id!r} was already used "
                                f"for {prior_command}", "OperationIdReused")
            if prior is not None:
                return _replayed(Response(int(prior["status"]), prior["body"]))
            if waiting is None:
                self._inflight[command.operation_id] = mine
        if waiting is not None:
            return _replayed(self._await(command.operation_id, waiting))
        response: Response | None = None
        try:
            response = self._apply(command, command_name, rest, apply)
            return response
        finally:
            with self._lock:
                mine.response = response
                self._inflight.pop(command.operation_id, None)
                mine.done.set()

    def _apply(self, command: Command, command_name: str, rest: dict[str, Any],
               apply: Callable[[Command, dict[str, Any]], Response]) -> Response:
        """Record the epoch (saved first), apply the command, record its result."""
        store = self.agent.store
        try:
            raised = store.record_epoch(command.epoch)
            # Another command may have raised the epoch since the check above.
            _check_epoch(command.epoch, store.epoch)
        except SaveError as e:
            return _not_saved(f"{e}; the command was not applied and the epoch is still "
                              f"{store.epoch}: retry it (the same operationId may be used)")
        except HttpError as e:
            return error_response(e)
        if raised:
            self.agent.emit(kinds.EPOCH_CHANGED, {"epoch": command.epoch})
        try:
            response = apply(command, rest)
        except SaveError as e:
            return _not_saved(f"{e}; nothing was applied: retry it (the same operationId "
                              f"may be used)")
        except HttpError as e:
            response = error_response(e)
        if response.status < 500:
            try:
                store.record_operation(command.operation_id, command_name, command.epoch,
                                       response.status, response.body)
            except SaveError as e:
                return _not_saved(f"{e}; the command was applied (status {response.status}) "
                                  f"but its result could not be recorded, so a retry with "
                                  f"the same operationId applies it again")
        return response

    def _await(self, operation_id: str, waiting: _InFlight) -> Response:
        """The answer of the same operation id running on another connection: waited for
        at most INFLIGHT_WAIT_SECONDS, so retries cannot take every connection for ever."""
        if not waiting.done.wait(INFLIGHT_WAIT_SECONDS):
            raise HttpError(503, f"operation {operation_id!r} is still being applied (for "
                            f"more than {INFLIGHT_WAIT_SECONDS:g} s): ask again later for "
                            f"its answer", "OperationInProgress")
        if waiting.response is None:
            raise HttpError(409, f"operation {operation_id!r} failed; retry it",
                            "OperationFailed")
        return waiting.response


def _check_epoch(epoch: int, highest: int) -> None:
    if epoch < highest:
        raise HttpError(409, f"epoch {epoch} is older than epoch {highest}, the newest this "
                        f"agent has seen: the command comes from an operator that is no "
                        f"longer in charge", "StaleEpoch")


def _not_saved(message: str) -> Response:
    return error_response(HttpError(503, message, "StateNotSaved"))


def _replayed(response: Response) -> Response:
    return Response(response.status, response.body, {**response.headers,
                                                     REPLAYED_HEADER: "true"})


def _no_query(request: Request, allowed: frozenset[str]) -> None:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise HttpError(400, f"query: unknown parameter(s) {', '.join(unknown)[:200]}"
                        + (f" (known: {', '.join(sorted(allowed))})" if allowed else ""),
                        "Invalid")


def _query_int(request: Request, key: str, default: int | None, minimum: int,
               maximum: int = 2**63 - 1) -> int | None:
    raw = request.query.get(key)
    if raw is None:
        return default
    if not raw.isdigit() or not raw.isascii() or len(raw) > 19 or not (
            minimum <= int(raw) <= maximum):
        raise HttpError(400, f"query {key}: must be an integer from {minimum} to {maximum}, "
                        f"got {raw[:20]!r}", "Invalid")
    return int(raw)
