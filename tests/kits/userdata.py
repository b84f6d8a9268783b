"""A guest's user-data with the agent in it, as the operator's injection will give it.

guestha's own cloud-config part comes from guestha.cloudinit.recipe (the builders the
injection calls), with certificates from a kits.pki.Pki; a test adds the guest's own
files and bootcmd beside it, as a guest whose owner wrote some has them. Used by the guest
hosts of kits.guests and the simulator VMs of kits.agentvms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from guestha.cloudinit import recipe
from guestha.protocol.constants import AGENT_PORT
from kits.pki import Pki


def guest_user_data(
    member: str,
    cluster: str,
    pki: Pki,
    agent_bundle: bytes,
    heartbeat_key: bytes,
    python: str,
    extra_files: Sequence[Mapping[str, Any]] = (),
    bootcmd: Sequence[str] = (),
    *,
    port: int = AGENT_PORT,
    transport: str | None = None,
    watchdog_device: str | None = None,
) -> bytes:
    """A guest's #cloud-config: guestha's part (recipe.cloud_config: the agent listening
    on `port` over `transport`, the agent's default when None, run by `python`, with
    `watchdog_device` in its identity when given), then the guest's own `extra_files` and
    `bootcmd`, as a guest whose owner wrote some has them."""
    document = (recipe.identity(cluster, member, port=port, watchdog_device=watchdog_device)
                if transport is None else
                recipe.identity(cluster, member, port=port, transport=transport,
                                watchdog_device=watchdog_device))
    pair = pki.agent_keypair(member)
    secrets = recipe.AgentSecrets(pki.ca.cert, pair.cert, pair.key, heartbeat_key)
    config = recipe.cloud_config(document, agent_bundle, secrets, python=python)
    config["write_files"] += [dict(f) for f in extra_files]
    if bootcmd:
        config = {"bootcmd": list(bootcmd), **config}
    return recipe.user_data(config)
