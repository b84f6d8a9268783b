"""The resource types the agent runs, by the type names of the ServiceGroup API."""

from __future__ import annotations

from collections.abc import Mapping

from guestha.protocol import TYPE_CHECKING

from .application import Application
from .base import (
    ActionAborted,
    ActionError,
    ActionTimeout,
    MonitorResult,
    Resource,
    ResourceContext,
)
from .ip import IP
from .mount import Mount
from .ocf import OCF
from .process import Process
from .systemd import Systemd
from .watcher import ExitWatcher

if TYPE_CHECKING:
    from typing import Any

TYPES: dict[str, type[Resource]] = {
    cls.type_name: cls for cls in (Process, Application, Systemd, OCF, Mount, IP)
}


def validate(type_name: str, attributes: Mapping[str, Any]) -> list[str]:
    """Errors in a resource's attributes, each naming the attribute ("attributes.X: ...")."""
    cls = TYPES.get(type_name)
    if cls is None:
        return [f"type: must be one of {', '.join(TYPES)}, got {type_name!r}"]
    return cls.validate(attributes)


def create(type_name: str, context: ResourceContext, attributes: Mapping[str, Any]) -> Resource:
    """A resource of a type, for attributes that validate() accepted."""
    return TYPES[type_name](context, attributes)


__all__ = [
    "IP",
    "OCF",
    "TYPES",
    "ActionAborted",
    "ActionError",
    "ActionTimeout",
    "Application",
    "ExitWatcher",
    "MonitorResult",
    "Mount",
    "Process",
    "Resource",
    "ResourceContext",
    "Systemd",
    "create",
    "validate",
]
