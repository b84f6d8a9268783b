"""User-data split into parts, as cloud-init's user-data processing does.

Raw user-data can be one document, gzip-compressed, or MIME multipart (guestha's injection
makes it multipart, keeping the user's own parts): each part gets its content type (from
its MIME header, or guessed from its first line as cloud-init's "starts with" table does)
and its file name (its filename parameter, or ``part-NNN`` by position), which decide the
handler and the script file name later.
"""

from __future__ import annotations

import email
import email.message
import gzip
from dataclasses import dataclass

GZIP_MAGIC = b"\x1f\x8b"

# First-line prefixes that name a part's type (cloud-init's "starts with" table); longer
# prefixes first so that "#cloud-config-archive" is not taken for "#cloud-config".
_STARTS_WITH: tuple[tuple[str, str], ...] = (
    ("#cloud-config-archive", "text/cloud-config-archive"),
    ("#cloud-config-jsonp", "text/cloud-config-jsonp"),
    ("#cloud-config", "text/cloud-config"),
    ("#cloud-boothook", "text/cloud-boothook"),
    ("#include-once", "text/x-include-once-url"),
    ("#include", "text/x-include-url"),
    ("#upstart-job", "text/upstart-job"),
    ("#part-handler", "text/part-handler"),
    ("## template: jinja", "text/jinja2"),
    ("#!", "text/x-shellscript"),
)

# MIME types whose real type is found from the payload, as cloud-init does.
_GUESS_TYPES = frozenset({"text/plain", "text/x-not-multipart", "application/octet-stream"})


class UserDataError(ValueError):
    """User-data that cannot be used at all (not that a part of it is unsupported)."""


# --------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class Part:
    """One piece of user-data after MIME splitting and decompression."""

    content_type: str
    filename: str
    payload: bytes
    merge_type: str = ""  # the part's Merge-Type / X-Merge-Type header


def _type_from_payload(payload: bytes) -> str:
    head = payload.lstrip(b"\xef\xbb\xbf")[:64].decode("utf-8", "replace").lower()
    for prefix, ctype in _STARTS_WITH:
        if head.startswith(prefix):
            return ctype
    return "text/plain"


def _is_mime(payload: bytes) -> bool:
    head = payload[:4096].lower()
    return head.startswith((b"content-type:", b"mime-version:")) and b"multipart/" in head


def split_parts(user_data: bytes) -> list[Part]:
    """Split raw user-data into parts in document order, naming them as cloud-init does.

    Parts without a filename are named ``part-NNN`` by their position (from 001), which
    is also the name a script part gets in the instance's scripts folder.
    """
    raw: list[tuple[str, str | None, bytes, str]] = []
    _collect(user_data, raw, depth=0)
    parts: list[Part] = []
    for index, (ctype, filename, payload, merge_type) in enumerate(raw, start=1):
        parts.append(Part(ctype, filename or f"part-{index:03d}", payload, merge_type))
    return parts


def _collect(data: bytes, out: list[tuple[str, str | None, bytes, str]], depth: int) -> None:
    if depth > 5:
        raise UserDataError("user-data nests compressed or multipart content too deeply")
    if data.startswith(GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise UserDataError(f"gzip-compressed user-data does not decompress: {exc}") from exc
        _collect(data, out, depth + 1)
        return
    if not _is_mime(data):
        out.append((_type_from_payload(data), None, data, ""))
        return
    message = email.message_from_bytes(data)
    for sub in message.walk():
        if sub.is_multipart():
            continue
        payload = sub.get_payload(decode=True)
        if not isinstance(payload, bytes):
            payload = b""
        ctype = sub.get_content_type().lower()
        filename = sub.get_filename()
        merge_type = str(sub.get("Merge-Type") or sub.get("X-Merge-Type") or "")
        if payload.startswith(GZIP_MAGIC) or ctype in ("application/gzip", "application/x-gzip"):
            nested: list[tuple[str, str | None, bytes, str]] = []
            _collect(payload, nested, depth + 1)
            for n_ctype, n_name, n_payload, n_merge in nested:
                out.append((n_ctype, n_name or filename, n_payload, n_merge or merge_type))
            continue
        if ctype in _GUESS_TYPES:
            ctype = _type_from_payload(payload)
        out.append((ctype, filename, payload, merge_type))
