"""The agent's identity file (/etc/guestha/agent.json): who the agent is and where its
secrets are. The injection renders it (`to_dict`) into the guest's user-data; the agent
reads it (`load`) at start. Everything else (groups, peers, intervals) arrives over the
channel, since cloud-init runs once per instance.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from guestha.protocol import TYPE_CHECKING, fields
from guestha.protocol.constants import (
    AGENT_PORT,
    HEARTBEAT_PORT,
    NETWORK,
    OPERATOR_NAME,
    TRANSPORTS,
)

if TYPE_CHECKING:
    from typing import Any

IDENTITY_FILE = "/etc/guestha/agent.json"
TLS_DIR = "/etc/guestha/tls"
HEARTBEAT_KEY_FILE = "/etc/guestha/heartbeat.key"
STATE_DIR = "/var/lib/guestha"

# JSON name -> attribute, for the fields that are strings (or null, for watchdogDevice).
_TEXT = {"listenAddress": "listen_address", "tlsCert": "tls_cert", "tlsKey": "tls_key",
         "tlsCA": "tls_ca", "operatorName": "operator_name",
         "heartbeatKeyFile": "heartbeat_key_file", "watchdogDevice": "watchdog_device",
         "stateDir": "state_dir", "transport": "transport"}
_PORTS = {"port": "port", "heartbeatPort": "heartbeat_port"}


@dataclass(frozen=True)
class Identity:
    """Who this agent is and where its secrets are."""

    cluster: str
    member: str
    listen_address: str = "0.0.0.0"
    port: int = AGENT_PORT
    # Network: the channel listens on listen_address:port. VSOCK: on the VM's vsock port
    # (guestha.agent.listener), and listen_address is for heartbeats only.
    transport: str = NETWORK
    tls_cert: str = f"{TLS_DIR}/agent.crt"
    tls_key: str = f"{TLS_DIR}/agent.key"
    tls_ca: str = f"{TLS_DIR}/ca.crt"
    operator_name: str = OPERATOR_NAME  # the name the operator's client certificate has
    heartbeat_key_file: str = HEARTBEAT_KEY_FILE
    heartbeat_port: int = HEARTBEAT_PORT
    watchdog_device: str | None = None
    state_dir: str = STATE_DIR

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "agent.json") -> Identity:
        values: dict[str, Any] = {}
        for key in ("cluster", "member"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise fields.FieldError(f"{where}: {key} is required (a non-empty string)")
            values[key] = raw[key]
        for key, attr in _TEXT.items():
            if key in raw:
                if not isinstance(raw[key], str):
                    raise fields.FieldError(f"{where}: {key} must be a string")
                values[attr] = raw[key]
        for key, attr in _PORTS.items():
            if key in raw:
                value = raw[key]
                if (isinstance(value, bool) or not isinstance(value, int)
                        or not 0 < value <= 65535):
                    raise fields.FieldError(f"{where}: {key} must be a port number "
                                            f"(1-65535), got {value!r}")
                values[attr] = value
        if values.get("transport", NETWORK) not in TRANSPORTS:
            raise fields.FieldError(f"{where}: transport must be one of "
                                    f"{', '.join(TRANSPORTS)}, got {values['transport']!r}")
        unknown = set(raw) - {"cluster", "member", *_PORTS, *_TEXT}
        if unknown:
            raise fields.FieldError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The file's JSON: every field spelled out (watchdogDevice only when set)."""
        out: dict[str, Any] = {"cluster": self.cluster, "member": self.member}
        for key, attr in {**_PORTS, **_TEXT}.items():
            value = getattr(self, attr)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def load(cls, path: str) -> Identity:
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except OSError as e:
            raise fields.FieldError(f"{path}: cannot read: {e.strerror}") from e
        except ValueError as e:
            raise fields.FieldError(f"{path}: not valid JSON: {e}") from e
        if not isinstance(raw, dict):
            raise fields.FieldError(f"{path}: must hold a JSON object")
        return cls.from_dict(raw, path)
