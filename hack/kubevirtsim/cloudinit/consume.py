"""What cloud-init makes of each user-data part: merged config, scripts, boothooks, notes.

cloud-init's "consume user-data" step hands each part to a handler by content type:
cloud-config parts are merged, shell scripts go to the instance's scripts folder (run by
scripts-user), per-boot/-instance/-once scripts to their folders, boothooks run at once.
Parts the simulator cannot honour (#include URLs, jinja templates, unknown types) become
notes, and parts that cannot be read at all errors: a guest's cloud-init reports both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kubevirtsim.cloudinit.merging import load_cloud_config, merge_config
from kubevirtsim.cloudinit.parts import UserDataError, split_parts

_SCRIPT_FREQUENCIES = {
    "text/x-shellscript-per-boot": "per-boot",
    "text/x-shellscript-per-instance": "per-instance",
    "text/x-shellscript-per-once": "per-once",
}


@dataclass(frozen=True)
class Script:
    """A script part: its file name in the scripts folder, and its text."""

    name: str
    content: bytes


@dataclass
class UserData:
    """What a guest's cloud-init makes of its user-data."""

    config: dict[str, Any] = field(default_factory=dict)
    scripts: list[Script] = field(default_factory=list)  # scripts-user (instance scripts)
    per_frequency: dict[str, list[Script]] = field(default_factory=dict)
    boothooks: list[Script] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings: refused or unsupported parts
    errors: list[str] = field(default_factory=list)  # failures that make the status "error"


def clean_filename(name: str) -> str:
    """A part's filename made safe as a file name in one folder (as cloud-init does)."""
    cleaned = re.sub(r"[/\\\x00-\x1f]", "_", name).strip().lstrip(".")
    return cleaned or "part"


def parse_user_data(user_data: bytes | None) -> UserData:
    """Split, decode and merge user-data the way cloud-init's part handlers do."""
    result = UserData()
    if not user_data:
        return result
    try:
        parts = split_parts(user_data)
    except UserDataError as exc:
        result.errors.append(str(exc))
        return result
    merged: dict[str, Any] | None = None
    for part in parts:
        ctype = part.content_type
        where = f"part {part.filename!r} ({ctype})"
        if ctype == "text/cloud-config":
            try:
                config, mergers = load_cloud_config(part.payload, part.merge_type)
            except UserDataError as exc:
                result.errors.append(f"Failed at merging in cloud config {where}: {exc}")
                continue
            merged = merge_config(merged if merged is not None else {}, config, mergers)
        elif ctype == "text/x-shellscript":
            result.scripts.append(Script(clean_filename(part.filename), part.payload))
        elif ctype in _SCRIPT_FREQUENCIES:
            frequency = _SCRIPT_FREQUENCIES[ctype]
            result.per_frequency.setdefault(frequency, []).append(
                Script(clean_filename(part.filename), part.payload)
            )
        elif ctype == "text/cloud-boothook":
            body = part.payload
            first, _, rest = body.partition(b"\n")
            if first.strip().lower().startswith(b"#cloud-boothook"):
                body = rest
            result.boothooks.append(Script(clean_filename(part.filename), body))
        elif ctype in ("text/x-include-url", "text/x-include-once-url"):
            result.notes.append(
                f"{where} refused: the simulator fetches no URLs (#include needs network "
                "access outside the guest network)"
            )
        elif ctype == "text/jinja2":
            result.notes.append(f"{where} unsupported: jinja templates are not rendered")
        else:
            result.notes.append(f"{where} unsupported: no handler for this content type")
    result.config = merged or {}
    return result
