"""The commands the operator sends and the agent's answers to them.

Every mutating request (PUT /v1/config, POST /v1/groups/NAME/ACTION) carries the
operator's `epoch` and an `operationId` in its JSON body: the agent refuses an epoch older
than the newest it has seen and applies an operation id once, answering a retry from its
record (with the header constants.REPLAYED_HEADER). docs/agent-api.md has the rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from guestha.protocol import TYPE_CHECKING, fields

if TYPE_CHECKING:
    from typing import Any

GROUP_ACTIONS = ("online", "offline", "clear", "probe")
MAX_OPERATION_ID = 128  # characters, all printable


@dataclass(frozen=True)
class Command:
    """The envelope every mutating request carries."""

    epoch: int
    operation_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "operationId": self.operation_id}


def parse_command(body: Any, extra: frozenset[str] = frozenset()
                  ) -> tuple[Command, dict[str, Any]]:
    """Splits epoch and operationId off a request body; the rest (only fields in `extra`)
    is returned."""
    raw = fields.obj(body, "body")
    epoch, op = raw.get("epoch"), raw.get("operationId")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise fields.FieldError(f"body.epoch: required, an integer >= 0, got {epoch!r}")
    if not isinstance(op, str) or not 0 < len(op) <= MAX_OPERATION_ID or not op.isprintable():
        raise fields.FieldError(f"body.operationId: required, 1 to {MAX_OPERATION_ID} "
                                f"printable characters, got {op!r}"[:300])
    fields.check_keys(raw, extra | {"epoch", "operationId"}, "body")
    rest = {k: v for k, v in raw.items() if k not in ("epoch", "operationId")}
    return Command(epoch, op), rest


@dataclass(frozen=True)
class ConfigApplied:
    """The answer to PUT /v1/config: the configuration was saved and applied."""

    operation_id: str
    epoch: int
    groups: tuple[str, ...]
    peers: tuple[str, ...]
    replayed: bool = False  # answered from the record of an earlier try (not on the wire)

    def to_dict(self) -> dict[str, Any]:
        return {"applied": True, "operationId": self.operation_id, "epoch": self.epoch,
                "groups": list(self.groups), "peers": list(self.peers)}

    @classmethod
    def from_dict(cls, raw: Any, replayed: bool = False, where: str = "body") -> ConfigApplied:
        body = fields.obj(raw, where)
        if body.get("applied") is not True:
            raise fields.FieldError(f"{where}.applied: must be true, got "
                                    f"{body.get('applied')!r}")
        return cls(fields.text(body, "operationId", where),
                   fields.integer(body, "epoch", None, where),
                   fields.texts(body, "groups", where), fields.texts(body, "peers", where),
                   replayed)


@dataclass(frozen=True)
class ActionAccepted:
    """The answer to POST /v1/groups/NAME/ACTION: the action is queued on the group's
    worker; progress arrives as events. `state` is the group's state when it was queued."""

    group: str
    action: str
    operation_id: str
    epoch: int
    state: str | None
    replayed: bool = False  # answered from the record of an earlier try (not on the wire)

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "action": self.action, "accepted": True,
                "operationId": self.operation_id, "epoch": self.epoch, "state": self.state}

    @classmethod
    def from_dict(cls, raw: Any, replayed: bool = False, where: str = "body"
                  ) -> ActionAccepted:
        body = fields.obj(raw, where)
        if body.get("accepted") is not True:
            raise fields.FieldError(f"{where}.accepted: must be true, got "
                                    f"{body.get('accepted')!r}")
        return cls(fields.text(body, "group", where),
                   fields.text(body, "action", where, choices=GROUP_ACTIONS),
                   fields.text(body, "operationId", where),
                   fields.integer(body, "epoch", None, where),
                   fields.optional_text(body, "state", where), replayed)
