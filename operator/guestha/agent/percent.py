"""Percent-encoding as the agent uses it: request targets decoded, query strings split
(`name=value&...`, `+` a space), and group and resource names turned into folder names.

urllib.parse does the same, but importing it (with the urllib package) would keep about
0.1 MB in the agent's memory for good, for these three functions (docs/agent-api.md,
"The agent's memory"). They answer exactly as urllib.parse's `unquote(text,
errors="strict")`, `parse_qsl(query, keep_blank_values=True, errors="strict",
max_num_fields=N)` and `quote(name, safe="")` do on Python 3.9.2 and later (only `&`
separates fields); tests/unit/test_agent_percent.py compares them with urllib.parse.
"""

from __future__ import annotations

_HEX = frozenset("0123456789abcdefABCDEF")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(name: str) -> str:
    """`name` with every byte of its UTF-8 form other than A-Z a-z 0-9 `_.-~` written as
    %XX (upper-case hex): a name that is one folder name, whatever characters it has."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in name.encode("utf-8"))


def unquote(text: str) -> str:
    """ASCII `text` with each %XX (two hex digits, either case) replaced by its byte and
    the bytes read as UTF-8 (UnicodeDecodeError when they are not). A `%` not followed by
    two hex digits stays as it is."""
    if "%" not in text:
        return text
    first, *rest = text.split("%")
    out = bytearray(first.encode("ascii"))
    for part in rest:
        if len(part) >= 2 and part[0] in _HEX and part[1] in _HEX:
            out.append(int(part[:2], 16))
            out += part[2:].encode("ascii")
        else:
            out += b"%" + part.encode("ascii")
    return out.decode("utf-8")


def parse_query(query: str, max_fields: int) -> list[tuple[str, str]]:
    """The (name, value) pairs of an ASCII query string, in order: fields separated by `&`
    (empty ones skipped), a field without `=` has the value "", `+` is a space, then
    unquote(). ValueError when it has more than `max_fields` fields (empty ones counted),
    UnicodeDecodeError when an escape is not UTF-8."""
    if max_fields < 1 + query.count("&"):
        raise ValueError("Max number of fields exceeded")
    pairs = []
    for field in query.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        pairs.append((unquote(name.replace("+", " ")), unquote(value.replace("+", " "))))
    return pairs
