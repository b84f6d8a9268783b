"""One user-data document out of the guest's own and guestha's: MIME multipart, the guest's
part(s) first and unchanged, guestha's cloud-config part last, merged with append semantics.

The guest keeps whatever user-data it had, in any form cloud-init reads: none, a
`#cloud-config`, a shell script (or any other single document cloud-init recognises by its
first line: `#include`, `#cloud-boothook`, `## template: jinja`, ...), MIME multipart, any of
them gzip-compressed. Its meaning is kept by building exactly what cloud-init itself builds
from it before handling the parts (cloudinit/user_data.py, `convert_string`): gzip is
undone first; a document with a `MIME-Version:` header in its first 4096 bytes is read as
MIME and its leaf parts are kept as they are (headers, transfer encoding, Merge-Type,
filenames); any other document becomes one `text/x-not-multipart` part, whose real type
cloud-init then finds from its first line exactly as it would have for the bare document.
The guest's parts come first, so parts without a filename keep their `part-NNN` names and a
script keeps its place beside runcmd in scripts-user.

guestha's part comes last and carries `merge_how: MERGE_HOW` (cloud-init's mergers: a dict
merged key by key without replacing what the guest set, lists appended): the guest's
`write_files` and `runcmd` are kept and guestha's entries follow them, whatever merge rules
the guest's own parts use among themselves. Every part is base64 transfer-encoded, so the
bytes cloud-init decodes are the bytes given.

Pure: bytes in, bytes out; the same inputs give the same bytes (the MIME boundary is derived
from the content).
"""

from __future__ import annotations

import email
import email.encoders
import email.message
import email.policy
import hashlib
import zlib
from collections.abc import Mapping
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from typing import Any

from guestha.cloudinit import recipe

GUESTHA_PART = "guestha-agent.cfg"  # the filename of guestha's part
# cloud-init mergers for guestha's part: keys the guest set keep their values, lists
# (write_files, runcmd) get guestha's entries appended.
MERGE_HOW = "dict(recurse_array,no_replace)+list(append)"
NOT_MULTIPART = ("text", "x-not-multipart")  # cloud-init's type for a single document
GZIP_MAGIC = b"\x1f\x8b"
MIME_SNIFF = 4096  # cloud-init looks for "mime-version:" this far into the document
MAX_GUNZIP = 16 * 1024 * 1024  # a user-data document larger than this once inflated is refused


class UserDataError(ValueError):
    """The guest's user-data cannot be carried over; the message names what is wrong."""


def _gunzip(data: bytes, where: str) -> bytes:
    """Inflate gzip data, bounded (a tiny gzip bomb must not take the operator down)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, MAX_GUNZIP + 1)
    except zlib.error as e:
        raise UserDataError(f"{where}: gzip-compressed but does not decompress ({e})") from None
    if len(out) > MAX_GUNZIP or inflater.unconsumed_tail:
        raise UserDataError(f"{where}: decompresses to more than {MAX_GUNZIP} bytes")
    if not inflater.eof:
        raise UserDataError(f"{where}: gzip-compressed but truncated")
    return out


def is_mime(data: bytes) -> bool:
    """cloud-init's test: a MIME-Version header in the first 4096 bytes."""
    return b"mime-version:" in data[:MIME_SNIFF].lower()


def user_parts(user_data: bytes | None, where: str = "user-data") -> list[email.message.Message]:
    """The guest's user-data as the MIME leaf parts cloud-init would handle, in order."""
    if not user_data:
        return []
    data = _gunzip(user_data, where) if user_data.startswith(GZIP_MAGIC) else user_data
    if not is_mime(data):
        part = MIMEBase(*NOT_MULTIPART)
        part.set_payload(data)
        email.encoders.encode_base64(part)
        return [part]
    try:
        message = email.message_from_bytes(data, policy=email.policy.compat32)
    except (ValueError, TypeError) as e:  # the parser is lenient; this is belt and braces
        raise UserDataError(f"{where}: MIME multipart that cannot be read: {e}") from None
    return [p for p in message.walk() if not p.is_multipart()]


def guestha_part(config: Mapping[str, Any]) -> email.message.Message:
    """guestha's cloud-config (recipe.cloud_config's document) as a part with MERGE_HOW."""
    if "merge_how" in config or "merge_type" in config:
        raise UserDataError("guestha's cloud-config: sets its own merge rules (merge_how)")
    text = recipe.user_data({"merge_how": MERGE_HOW, **config})
    part = MIMEBase("text", "cloud-config", charset="utf-8")
    part.set_payload(text)
    email.encoders.encode_base64(part)
    part.add_header("Content-Disposition", "attachment", filename=GUESTHA_PART)
    return part


def merge(user_data: bytes | None, config: Mapping[str, Any],
          where: str = "user-data") -> bytes:
    """The guest's user-data (None or empty: none) and guestha's cloud-config as one MIME
    multipart document. `where` names the source in errors (the VMI field it came from)."""
    parts = [*user_parts(user_data, where), guestha_part(config)]
    document = MIMEMultipart("mixed")
    for part in parts:
        document.attach(part)
    bodies = [p.as_bytes() for p in parts]
    digest = hashlib.sha256(b"\0".join(bodies)).hexdigest()
    for attempt in range(8):
        boundary = f"==guestha-{digest[attempt * 8:attempt * 8 + 24]}=="
        if not any(boundary.encode() in body for body in bodies):
            break
    else:  # pragma: no cover - eight hash slices all inside the content
        raise UserDataError(f"{where}: no MIME boundary that is absent from the content")
    document.set_boundary(boundary)
    return document.as_bytes()
