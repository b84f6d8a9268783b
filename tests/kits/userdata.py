"""A guest's user-data with the agent in it, as the operator's injection will give it.

guestha's own cloud-config part comes from guestha.cloudinit.recipe (the builders the
injection calls), with certificates from a kits.pki.Pki; a test adds the guest's own
files and bootcmd beside it, as a guest whose owner wrote some has them. Used by the guest
hosts of kits.guests and the simulator VMs of kits.agentvms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
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
    merge_how: Sequence[Mapping[str, Any]] = (),
) -> bytes:
    """A guest's #cloud-config: guestha's part (recipe.cloud_config: the agent listening
    on `port` over `transport`, the agent's default when None, run by `python`, holding
    `watchdog_device` when given), then the guest's own `extra_files` and `bootcmd`, as a
    guest whose owner wrote some has them. `merge_how` (e.g. APPEND) makes it a part that
    adds its lists to the parts before it in a MIME multipart (`multipart`)."""
    options: dict[str, Any] = {"port": port, "watchdog_device": watchdog_device}
    if transport is not None:
        options["transport"] = transport
    document = recipe.identity(cluster, member, **options)
    pair = pki.agent_keypair(member)
    secrets = recipe.AgentSecrets(pki.ca.cert, pair.cert, pair.key, heartbeat_key)
    config = recipe.cloud_config(document, agent_bundle, secrets, python=python)
    config["write_files"] += [dict(f) for f in extra_files]
    if bootcmd:
        config = {"bootcmd": list(bootcmd), **config}
    if merge_how:
        config["merge_how"] = [dict(m) for m in merge_how]
    return recipe.user_data(config)


# cloud-init's merge rules for a part that adds to what came before it: lists appended
# (write_files, runcmd), mappings merged without replacing the earlier parts' keys.
APPEND: tuple[Mapping[str, Any], ...] = (
    {"name": "list", "settings": ["append"]},
    {"name": "dict", "settings": ["no_replace", "recurse_list"]},
)
# A part's MIME type from its first line, as cloud-init's "starts with" table has them.
_STARTS = (("#cloud-config", "text/cloud-config"), ("#!", "text/x-shellscript"),
           ("#cloud-boothook", "text/cloud-boothook"), ("#include", "text/x-include-url"))


def multipart(*parts: bytes) -> bytes:
    """User-data as MIME multipart/mixed of `parts` in order, each typed by its first line
    (the shape guestha's injection gives a guest with user-data of its own)."""
    message = MIMEMultipart()
    for i, part in enumerate(parts):
        text = part.decode()
        subtype = next((t for start, t in _STARTS if text.startswith(start)), None)
        if subtype is None:
            raise ValueError(f"parts[{i}]: not a cloud-config, script, boothook or include")
        item = MIMEText(text, subtype.split("/", 1)[1], "utf-8")
        item.add_header("Content-Disposition", "attachment", filename=f"part-{i:03d}")
        message.attach(item)
    return message.as_bytes()
