"""The resource types the agent runs, by the type names of the ServiceGroup API.

A type's module is imported when a resource of that type is first validated or created,
not with the agent: an agent that runs no Mount, IP or Systemd resource never holds
their code (docs/agent-api.md, "The agent's memory"). The classes are still importable
from here by name (`from guestha.agent.resources import Mount`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from guestha.protocol import TYPE_CHECKING

from .base import (
    ActionAborted,
    ActionError,
    ActionTimeout,
    MonitorResult,
    Resource,
    ResourceContext,
)
from .watcher import ExitWatcher

if TYPE_CHECKING:
    from typing import Any

    from .application import Application
    from .ip import IP
    from .mount import Mount
    from .ocf import OCF
    from .process import Process
    from .systemd import Systemd

# Each type name of the API (guestha.protocol.config.RESOURCE_TYPES, in its order) and the
# module of this package that holds its class, a class named like the type.
MODULES: dict[str, str] = {
    "Process": "process",
    "Application": "application",
    "Systemd": "systemd",
    "OCF": "ocf",
    "Mount": "mount",
    "IP": "ip",
}


def resource_class(type_name: str) -> type[Resource]:
    """The class of a type name of MODULES, its module imported on first use."""
    module = importlib.import_module(f"{__name__}.{MODULES[type_name]}")
    cls: type[Resource] = getattr(module, type_name)
    return cls


def __getattr__(name: str) -> Any:
    if name in MODULES:
        return resource_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def validate(type_name: str, attributes: Mapping[str, Any]) -> list[str]:
    """Errors in a resource's attributes, each naming the attribute ("attributes.X: ...")."""
    if type_name not in MODULES:
        return [f"type: must be one of {', '.join(MODULES)}, got {type_name!r}"]
    return resource_class(type_name).validate(attributes)


def create(type_name: str, context: ResourceContext, attributes: Mapping[str, Any]) -> Resource:
    """A resource of a type, for attributes that validate() accepted."""
    return resource_class(type_name)(context, attributes)


__all__ = [
    "IP",
    "MODULES",
    "OCF",
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
    "resource_class",
    "validate",
]
