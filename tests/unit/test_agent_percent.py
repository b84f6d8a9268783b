"""The agent's percent-encoding (guestha.agent.percent) answers as urllib.parse does: the
agent does without urllib.parse only to keep it out of its memory, so a request target,
a query or a folder name must come out the same as before."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guestha.agent.percent import parse_query, quote, unquote

pytestmark = pytest.mark.unit

# What reaches unquote/parse_query: a request target in printable ASCII (http1 refuses
# anything else), rich in the characters that matter here.
TARGET_CHARS = st.lists(st.sampled_from(
    [*"%+=&;#/?aAfFgG09!.-_~", "%2", "%25", "%C3%A9", "%c3%a9", "%ff", "%e2%82", "%zz"]
), max_size=30).map("".join)


@pytest.mark.parametrize("text", [
    "", "/v1/status", "/v1/groups/a%2Fb/online", "%41%4a%4A", "%", "%%", "%4", "%zz",
    "100%", "%C3%A9t%C3%A9", "%c3%a9", "a+b", "%2B", "%00", "%7e~",
])
def test_unquote_as_urllib(text: str) -> None:
    assert unquote(text) == urllib.parse.unquote(text, errors="strict")


@pytest.mark.parametrize("text", ["%ff", "%C3", "%e2%82", "a%80b"])
def test_unquote_refuses_what_is_not_utf8(text: str) -> None:
    with pytest.raises(UnicodeDecodeError):
        urllib.parse.unquote(text, errors="strict")
    with pytest.raises(UnicodeDecodeError):
        unquote(text)


def _urllib_query(query: str, max_fields: int) -> list[tuple[str, str]]:
    return urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False,
                                  errors="strict", max_num_fields=max_fields)


@pytest.mark.parametrize("query", [
    "", "after=3&timeout=5", "a", "a=", "=b", "a=b=c", "&&a=1&&", "a+b=c+d", "x=%26&y=%3D",
    "a=1;b=2", "k=%C3%A9", "a=1&a=2", "%zz=%4",
])
def test_parse_query_as_urllib(query: str) -> None:
    assert parse_query(query, 16) == _urllib_query(query, 16)


def test_too_many_fields_counts_empty_ones_as_urllib_does() -> None:
    for query in ("a=1&b=2&c=3", "a=1&&", "&&"):
        with pytest.raises(ValueError, match="Max number of fields exceeded"):
            _urllib_query(query, 2)
        with pytest.raises(ValueError, match="Max number of fields exceeded"):
            parse_query(query, 2)
    assert parse_query("a=1&b=2", 2) == [("a", "1"), ("b", "2")]


@given(TARGET_CHARS, st.integers(min_value=1, max_value=8))
def test_any_target_and_query_as_urllib(text: str, max_fields: int) -> None:
    def outcome(f, *args):  # type: ignore[no-untyped-def]
        try:
            return f(*args)
        except UnicodeDecodeError:
            return "UnicodeDecodeError"
        except ValueError as e:
            return f"ValueError: {e}"

    assert outcome(unquote, text) == outcome(
        lambda t: urllib.parse.unquote(t, errors="strict"), text)
    assert outcome(parse_query, text, max_fields) == outcome(_urllib_query, text, max_fields)


@pytest.mark.parametrize("name", [
    "web", "app-1", "a/b", "..", ".", "a b", "ünï", "日本", "100%", "a+b", "~x_y.z", "",
])
def test_quote_makes_one_folder_name_as_urllib(name: str) -> None:
    quoted = quote(name)
    assert quoted == urllib.parse.quote(name, safe="")
    assert "/" not in quoted


@given(st.text(max_size=30))
def test_quote_any_name_as_urllib(name: str) -> None:
    try:
        expected = urllib.parse.quote(name, safe="")
    except UnicodeEncodeError:  # a lone surrogate: neither encodes it
        with pytest.raises(UnicodeEncodeError):
            quote(name)
        return
    assert quote(name) == expected
