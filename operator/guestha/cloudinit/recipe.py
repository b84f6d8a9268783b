"""The injection recipe: how the agent is installed in a guest, as pure builders.

Where the agent's files go (``GuestPaths``), its systemd unit (``unit``), its identity file
(``identity``, ``identity_text``) and the cloud-config part that writes them all and starts
the agent (``cloud_config``, ``user_data``). The operator's injection (the per-member
user-data Secret, a later issue) calls these builders; so do the tests and benchmarks that
boot guests the way the operator will (tests/kits), so what is tested is what is shipped.

Pure: data in, text and dicts out. No I/O, no clock, no randomness: the caller brings the
agent bundle (guestha.cloudinit.bundle), the certificates and the heartbeat key, and the
same inputs give the same bytes. Bad input raises ValueError naming the field (the
identity through the agent's own parser, guestha.protocol.identity.Identity, so the operator
refuses what the agent would refuse, before any guest boots with it).
"""

from __future__ import annotations

import base64
import gzip
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from guestha.protocol.constants import AGENT_PORT, HEARTBEAT_PORT, OPERATOR_NAME
from guestha.protocol.desired import FencingConfig
from guestha.protocol.identity import IDENTITY_FILE, Identity

UNIT_NAME = "guestha-agent"
# The interpreter of the unit's ExecStart: the guest's own (RHEL 9, Debian 12, Ubuntu 22.04
# and SLES 15 SP5 all have /usr/bin/python3, 3.9 or newer).
GUEST_PYTHON = "/usr/bin/python3"
# What systemd grants the agent beyond fencing.offlineTimeoutSeconds to stop: the agent's
# own bound on taking its Failover groups offline is that timeout plus a second, then it
# closes the channel, the heartbeats and the watchdog.
STOP_MARGIN_SECONDS = 30
OFFLINE_TIMEOUT_SECONDS = FencingConfig.offline_timeout_seconds
# glibc's malloc settings for the agent's process (its unit's GLIBC_TUNABLES). glibc gives
# threads arenas of their own (up to 8 per core) and each thread a cache of freed chunks
# (tcache); the agent's Python threads (one per resource) take turns under the GIL, so they
# gain nothing from either, and both keep freed memory the others cannot use. One arena
# and no tcache kept about 1.6 MB of the agent's RSS with 50 resources (measured with
# hack/bench/run agent on Python 3.9: arenas 1.3 MB, tcache 0.3 MB). Only the agent's
# process has them: resources' programs get PATH, LANG, LC_ALL, TZ and HOME from the agent
# and nothing else (agent/resources/programs.py: environment), so an application's malloc
# stays its own business. glibc 2.26 or newer reads these (every supported guest has it).
MALLOC_TUNABLES = "glibc.malloc.arena_max=1:glibc.malloc.tcache_count=0"
# Characters that systemd's Exec line or cloud-init's shell would read as more than a path.
_UNSAFE = frozenset(" \t\n\r\"'\\%$`;&|<>*?")


@dataclass(frozen=True)
class GuestPaths:
    """Where the agent's files are in a guest. The TLS files, the heartbeat key and the
    state folder default to the agent's own defaults (guestha.protocol.identity.Identity): an
    identity file that left them out would mean the same places."""

    bundle: str = "/usr/local/lib/guestha/guestha-agent.pyz"
    identity: str = IDENTITY_FILE
    unit: str = f"/etc/systemd/system/{UNIT_NAME}.service"
    tls_cert: str = Identity.tls_cert
    tls_key: str = Identity.tls_key
    tls_ca: str = Identity.tls_ca
    heartbeat_key: str = Identity.heartbeat_key_file
    state_dir: str = Identity.state_dir

    def unit_name(self) -> str:
        """The unit's name as systemctl takes it (its file name without .service)."""
        name = posixpath.basename(self.unit)
        return name[: -len(".service")] if name.endswith(".service") else name


GUEST_PATHS = GuestPaths()


@dataclass(frozen=True)
class AgentSecrets:
    """One member's secrets: the cluster CA's certificate, the agent's serving certificate
    and key (PEM), and the cluster's heartbeat key (raw bytes)."""

    ca: bytes
    cert: bytes
    key: bytes
    heartbeat_key: bytes


def _checked_path(field: str, value: str) -> str:
    if not value.startswith("/") or any(c in _UNSAFE for c in value):
        raise ValueError(f"{field}: must be an absolute path without blanks, quotes or "
                         f"shell and systemd specials, got {value!r}")
    return value


def identity(
    cluster: str,
    member: str,
    *,
    transport: str = Identity.transport,
    listen_address: str = Identity.listen_address,
    port: int = AGENT_PORT,
    heartbeat_port: int = HEARTBEAT_PORT,
    watchdog_device: str | None = None,
    operator_name: str = OPERATOR_NAME,
    paths: GuestPaths = GUEST_PATHS,
) -> dict[str, Any]:
    """The identity file's content (agent.json): who the agent is, where it listens, where
    its secrets and state are. Every field is written out, so the guest's file does not
    depend on one agent version's defaults. Checked by the agent's own parser: a value the
    agent would refuse raises guestha.protocol.fields.FieldError (a ValueError) naming it."""
    document: dict[str, Any] = {
        "cluster": cluster,
        "member": member,
        "transport": transport,
        "listenAddress": listen_address,
        "port": port,
        "heartbeatPort": heartbeat_port,
        "tlsCert": paths.tls_cert,
        "tlsKey": paths.tls_key,
        "tlsCA": paths.tls_ca,
        "operatorName": operator_name,
        "heartbeatKeyFile": paths.heartbeat_key,
        "stateDir": paths.state_dir,
    }
    if watchdog_device is not None:
        document["watchdogDevice"] = watchdog_device
    Identity.from_dict(document, "identity")
    return document


def identity_text(document: Mapping[str, Any]) -> str:
    """The identity file's text: the document as indented JSON, one newline at the end."""
    return json.dumps(dict(document), indent=2) + "\n"


def unit(
    python: str = GUEST_PYTHON,
    paths: GuestPaths = GUEST_PATHS,
    offline_timeout_seconds: int = OFFLINE_TIMEOUT_SECONDS,
) -> str:
    """The agent's systemd unit.

    KillMode=process: systemd stops (or restarts) only the agent's own process, never the
    resources it started; they keep running and the next run adopts them (an agent upgrade
    or crash must not take the application down). TimeoutStopSec: on SIGTERM the agent takes
    its Failover groups offline before it exits, within fencing.offlineTimeoutSeconds
    (`offline_timeout_seconds`; the agent's default unless the cluster sets another), so
    systemd waits that long and STOP_MARGIN_SECONDS more before its SIGKILL. An agent killed
    earlier would leave its groups running with the watchdog armed: safe (the guest is
    reset), but a reset where a clean stop was asked for. Restart=always: the agent is the
    member's vote and its fencing; it comes back whenever it stops on its own, and it
    exits on purpose to restart into a new bundle (PUT /v1/bundle).
    StartLimitIntervalSec=0: systemd never gives up restarting it (by default 5 starts in
    10 s stop a unit for good, and a trial bundle that crashes at start must be started
    again until the launcher rolls it back: guestha.agent.bundles).
    GLIBC_TUNABLES: see MALLOC_TUNABLES.
    """
    _checked_path("python", python)
    _checked_path("paths.bundle", paths.bundle)
    _checked_path("paths.identity", paths.identity)
    if isinstance(offline_timeout_seconds, bool) or offline_timeout_seconds < 1:
        raise ValueError(f"offline_timeout_seconds: must be at least 1, "
                         f"got {offline_timeout_seconds!r}")
    return (
        "[Unit]\n"
        "Description=guestha agent (in-guest high availability)\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "StartLimitIntervalSec=0\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"Environment=GLIBC_TUNABLES={MALLOC_TUNABLES}\n"
        f"ExecStart={python} {paths.bundle} --config {paths.identity}\n"
        "KillMode=process\n"
        f"TimeoutStopSec={offline_timeout_seconds + STOP_MARGIN_SECONDS}\n"
        "Restart=always\n"
        "RestartSec=1\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def cloud_config(
    identity_document: Mapping[str, Any],
    agent_bundle: bytes,
    secrets: AgentSecrets,
    *,
    python: str = GUEST_PYTHON,
    paths: GuestPaths = GUEST_PATHS,
    offline_timeout_seconds: int = OFFLINE_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """The cloud-config that installs the agent and starts it: write_files puts the bundle
    (gzip+base64), the identity file, the TLS files and the heartbeat key (where the identity
    says the agent finds them; the private key and heartbeat key readable by root only) and
    the unit; runcmd enables and starts the unit.

    A part of its own, to be merged into the guest's cloud-init (append semantics for
    write_files and runcmd); `user_data` renders it alone.
    """
    parsed = Identity.from_dict(identity_document, "identity")
    if not agent_bundle:
        raise ValueError("agent_bundle: empty")
    for name in ("ca", "cert", "key", "heartbeat_key"):
        if not getattr(secrets, name):
            raise ValueError(f"secrets.{name}: empty")
    return {
        "write_files": [
            {
                "path": paths.bundle,
                "encoding": "gz+b64",
                "permissions": "0755",
                "content": base64.b64encode(gzip.compress(agent_bundle, mtime=0)).decode(),
            },
            {"path": paths.identity, "permissions": "0644",
             "content": identity_text(identity_document)},
            {"path": parsed.tls_ca, "permissions": "0644", "content": secrets.ca.decode()},
            {"path": parsed.tls_cert, "permissions": "0644", "content": secrets.cert.decode()},
            {"path": parsed.tls_key, "permissions": "0600", "content": secrets.key.decode()},
            {
                "path": parsed.heartbeat_key_file,
                "permissions": "0600",
                "encoding": "b64",
                "content": base64.b64encode(secrets.heartbeat_key).decode(),
            },
            {"path": paths.unit, "permissions": "0644",
             "content": unit(python, paths, offline_timeout_seconds)},
        ],
        "runcmd": ["systemctl daemon-reload", f"systemctl enable --now {paths.unit_name()}"],
    }


def user_data(config: Mapping[str, Any]) -> bytes:
    """A cloud-config as user-data: the ``#cloud-config`` header, then YAML in the order
    given (write_files before runcmd, as cloud-init runs them)."""
    return b"#cloud-config\n" + yaml.safe_dump(dict(config), sort_keys=False).encode()
