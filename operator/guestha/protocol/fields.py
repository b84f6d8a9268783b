"""Reading the contract's JSON: typed readers that refuse a bad value naming its field.

Every `from_dict` of the protocol reads through these, so both ends give the same error
for the same mistake ("body.groups[shop].resources[app].restartLimit: must be an integer
>= 0, got -1") and nothing is silently replaced by a default: a field that is present
must be valid; only an absent field takes its default. Booleans are never integers here
(JSON's true is not 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from guestha.protocol import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any


class FieldError(ValueError):
    """A value that breaks the channel's contract; the message names the field."""


def camel(name: str) -> str:
    """The JSON name of a dataclass field: `restart_limit` -> `restartLimit`."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def json_keys(cls: Any) -> frozenset[str]:
    """The JSON names of a dataclass's fields (so the names cannot drift from the class)."""
    return frozenset(camel(f.name) for f in dataclasses.fields(cls))


def default(cls: Any, name: str) -> Any:
    """The default of a dataclass field: a default is written once, on its field."""
    return {f.name: f.default for f in dataclasses.fields(cls)}[name]


def check_keys(raw: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    """Refuses fields not in `allowed` (a typo must not become a default)."""
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise FieldError(f"{where}: unknown field(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(allowed))})")


def obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FieldError(f"{where}: must be an object, got {type(value).__name__}")
    return value


def array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise FieldError(f"{where}: must be a list, got {type(value).__name__}")
    return value


def integer(raw: Mapping[str, Any], key: str, default: int | None, where: str,
            minimum: int = 0, maximum: int | None = None) -> int:
    """raw[key], an integer from `minimum` to `maximum` (no upper bound when None);
    `default` when absent (None: the field is required)."""
    if key not in raw and default is None:
        raise FieldError(f"{where}.{key}: required, an integer")
    value = raw.get(key, default)
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or (maximum is not None and value > maximum)):
        bound = (f"from {minimum} to {maximum}" if maximum is not None
                 else f">= {minimum}")
        raise FieldError(f"{where}.{key}: must be an integer {bound}, got {value!r}")
    return value


def number(raw: Mapping[str, Any], key: str, where: str, minimum: float = 0.0) -> float:
    """raw[key], a required JSON number (integer or not) >= minimum."""
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise FieldError(f"{where}.{key}: required, a number >= {minimum:g}, got {value!r}")
    return float(value)


def optional_number(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    """raw[key], a JSON number or null; the field must be present."""
    if key not in raw:
        raise FieldError(f"{where}.{key}: required, a number or null")
    return None if raw[key] is None else number(raw, key, where, float("-inf"))


def optional_integer(raw: Mapping[str, Any], key: str, where: str) -> int | None:
    """raw[key], an integer >= 0 or null; the field must be present."""
    if key not in raw:
        raise FieldError(f"{where}.{key}: required, an integer or null")
    return None if raw[key] is None else integer(raw, key, None, where)


def boolean(raw: Mapping[str, Any], key: str, default: bool | None, where: str) -> bool:
    """raw[key], true or false; `default` when absent (None: required)."""
    if key not in raw and default is None:
        raise FieldError(f"{where}.{key}: required, true or false")
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise FieldError(f"{where}.{key}: must be true or false, got {value!r}")
    return value


def text(raw: Mapping[str, Any], key: str, where: str, default: str | None = None,
         choices: tuple[str, ...] = ()) -> str:
    """raw[key], a string (one of `choices` when given); `default` when absent (None:
    required, and then non-empty)."""
    if key not in raw:
        if default is None:
            raise FieldError(f"{where}.{key}: required, a non-empty string")
        return default
    value = raw[key]
    if not isinstance(value, str) or (default is None and not value):
        raise FieldError(f"{where}.{key}: must be a {'non-empty ' if default is None else ''}"
                         f"string, got {value!r}"[:300])
    if choices and value not in choices:
        raise FieldError(f"{where}.{key}: must be one of {', '.join(choices)}, "
                         f"got {value!r}"[:300])
    return value


def optional_text(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    """raw[key], a string or null; the field must be present."""
    if key not in raw:
        raise FieldError(f"{where}.{key}: required, a string or null")
    value = raw[key]
    if value is not None and not isinstance(value, str):
        raise FieldError(f"{where}.{key}: must be a string or null, got {value!r}"[:300])
    return value


def texts(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    """raw[key], a list of strings (empty when absent)."""
    value = array(raw.get(key, []), f"{where}.{key}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise FieldError(f"{where}.{key}[{i}]: must be a string, got {item!r}"[:300])
    return tuple(value)


def counters(raw: Mapping[str, Any], key: str, where: str) -> dict[str, int]:
    """raw[key], an object of counters (name -> integer >= 0)."""
    value = obj(raw.get(key), f"{where}.{key}")
    for name in value:
        integer(value, name, None, f"{where}.{key}")
    return dict(value)
