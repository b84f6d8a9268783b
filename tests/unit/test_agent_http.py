"""The agent's HTTP/1.1 request reader and the channel's request validation.

The reader is the first code that touches bytes from the network, so it is fuzzed: any
bytes, cut into any chunks, end as a parsed request, a clean end of stream, or an
HttpError with a 4xx status — never another exception, and never a hang (every read in
these tests is from a finite source). The desired-configuration parser gets the same
treatment with arbitrary JSON.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guestha.agent.http1 import HttpError, Limits, Request, RequestReader, Response
from guestha.protocol.bundle import BUNDLE_FIELDS
from guestha.protocol.commands import GROUP_ACTIONS, parse_command
from guestha.protocol.desired import DESIRED_FIELDS, DesiredConfig
from guestha.protocol.fields import FieldError
from guestha.protocol.tls import TLS_FIELDS

pytestmark = pytest.mark.unit

LIMITS = Limits(max_head_bytes=4096, max_headers=32, max_body_bytes=8192, max_target_bytes=512)


def reader_over(chunks: list[bytes], limits: Limits = LIMITS,
                clock: Callable[[], float] | None = None) -> tuple[RequestReader, list[bytes]]:
    sent: list[bytes] = []
    queue = list(chunks)

    def recv(n: int, timeout: float) -> bytes:
        assert timeout > 0
        if not queue:
            return b""
        chunk = queue.pop(0)
        if len(chunk) > n:
            queue.insert(0, chunk[n:])
            chunk = chunk[:n]
        return chunk

    kwargs = {} if clock is None else {"clock": clock}
    return RequestReader(recv, sent.append, limits, **kwargs), sent


def read_all(data: bytes | list[bytes], limits: Limits = LIMITS) -> list[Request | HttpError]:
    reader, _ = reader_over([data] if isinstance(data, bytes) else data, limits)
    out: list[Request | HttpError] = []
    for _ in range(100):
        try:
            request = reader.read()
        except HttpError as e:
            out.append(e)
            return out
        if request is None:
            return out
        out.append(request)
    raise AssertionError("more than 100 requests from a finite input")


def test_a_request_with_a_body_and_a_query() -> None:
    body = b'{"epoch": 1}'
    raw = (b"PUT /v1/config?after=3&x=%20y HTTP/1.1\r\nHost: agent\r\n"
           b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
           + b"\r\nX-Multi: a\r\nx-multi: b\r\n\r\n" + body)
    [request] = read_all(raw)
    assert isinstance(request, Request)
    assert (request.method, request.path, request.version) == ("PUT", "/v1/config", "HTTP/1.1")
    assert request.query == {"after": "3", "x": " y"}
    assert request.headers["x-multi"] == "a, b"
    assert request.json() == {"epoch": 1}
    assert request.keep_alive


def test_pipelined_requests_and_keep_alive_rules() -> None:
    raw = (b"GET /v1/status HTTP/1.1\r\n\r\n"
           b"\r\nGET /v1/healthz HTTP/1.1\r\nConnection: close\r\n\r\n"
           b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
    requests = read_all([raw[i:i + 7] for i in range(0, len(raw), 7)])
    assert [r.path for r in requests if isinstance(r, Request)] == [
        "/v1/status", "/v1/healthz", "/a", "/b"]
    assert [r.keep_alive for r in requests if isinstance(r, Request)] == [
        True, False, False, True]


@pytest.mark.parametrize(("raw", "status", "words"), [
    (b"GET /x HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n", 431, "head larger"),
    (b"GET /x HTTP/1.1\r\n" + b"A: b\r\n" * 40 + b"\r\n", 431, "header fields"),
    (b"PUT /x HTTP/1.1\r\nContent-Length: 9000\r\n\r\n", 413, "larger than the limit"),
    (b"PUT /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "content-length"),
    (b"PUT /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, "conflicting"),
    (b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411, "Content-Length"),
    (b"GET /x HTTP/1.1\r\nA: b\r\n  folded\r\n\r\n", 400, "folding"),
    (b"BREW /x HTTP/1.1\r\n\r\n", 405, "BREW"),
    (b"GET /x HTTP/2.0\r\n\r\n", 400, "HTTP/1.1"),
    (b"GET http://x/ HTTP/1.1\r\n\r\n", 400, "starting with '/'"),
    (b"GET /" + b"a" * 600 + b" HTTP/1.1\r\n\r\n", 414, "longer"),
    (b"GET /x\x00 HTTP/1.1\r\n\r\n", 400, "printable"),
    (b"GET /%ff HTTP/1.1\r\n\r\n", 400, "UTF-8"),
    (b"GET /x?" + b"&".join(b"a=%d" % i for i in range(40)) + b" HTTP/1.1\r\n\r\n", 400,
     "query"),
    (b"GET /x HTTP/1.1\r\nBad Header: x\r\n\r\n", 400, "token name"),
    (b"GET /x HTTP/1.1\r\nA: b\x01\r\n\r\n", 400, "control characters"),
    (b"GET  /x HTTP/1.1\r\n\r\n", 400, "request line"),
    (b"GET /x HTTP/1.1\r\nExpect: something\r\n\r\n", 417, "Expect"),
    (b"GET /x HTTP/1.1\r\nHost: a", 400, "closed in the middle"),
    (b"PUT /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 400, "3 of 10"),
])
def test_bad_requests_are_refused_with_a_clear_4xx(raw: bytes, status: int, words: str) -> None:
    [*_, outcome] = read_all(raw)
    assert isinstance(outcome, HttpError), outcome
    assert outcome.status == status
    assert words in outcome.message


def test_expect_100_continue_is_answered_before_the_body() -> None:
    reader, sent = reader_over([b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\n"
                                b"Content-Length: 2\r\n\r\n", b"{}"])
    request = reader.read()
    assert request is not None and request.body == b"{}"
    assert sent == [b"HTTP/1.1 100 Continue\r\n\r\n"]


def test_a_slow_head_times_out_with_408() -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    def recv(n: int, timeout: float) -> bytes:
        now[0] += 1.0  # one byte a second: a slowloris
        return b"G" if now[0] < 2 else b"x"

    reader = RequestReader(recv, lambda b: None, Limits(head_seconds=5.0), clock)
    with pytest.raises(HttpError) as e:
        reader.read()
    assert e.value.status == 408


def test_a_slow_body_times_out_with_408() -> None:
    now = [0.0]
    chunks = [b"PUT /x HTTP/1.1\r\nContent-Length: 100\r\n\r\n"] + [b"a"] * 100

    def recv(n: int, timeout: float) -> bytes:
        now[0] += 0.5
        if now[0] > 2 and timeout <= 0:
            raise TimeoutError
        return chunks.pop(0)

    reader = RequestReader(recv, lambda b: None, Limits(body_seconds=3.0), lambda: now[0])
    with pytest.raises(HttpError) as e:
        reader.read()
    assert e.value.status == 408


def test_an_idle_connection_ends_quietly() -> None:
    def recv(n: int, timeout: float) -> bytes:
        raise TimeoutError

    assert RequestReader(recv, lambda b: None, LIMITS).read() is None


@pytest.mark.parametrize(("body", "words"), [
    (b"{", "not valid JSON"), (b"\xff", "not UTF-8"), (b"[" * 100000, "nested too deeply"),
    (b'{"a": ' + b"9" * 40 + b"}", "too long"), (b'{"a": NaN}', "NaN"),
])
def test_bad_json_bodies(body: bytes, words: str) -> None:
    request = Request("PUT", "/", "/", {}, "HTTP/1.1", {}, body)
    with pytest.raises(HttpError) as e:
        request.json()
    assert e.value.status == 400 and words in e.value.message


def test_response_encoding() -> None:
    raw = Response(409, {"b": 1, "a": "x"}, {"X-A": "1"}).encode(keep_alive=False)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 409 Conflict\r\n")
    assert b"Connection: close" in head and b"Content-Length: %d" % len(body) in head
    assert json.loads(body) == {"a": "x", "b": 1}


# -- fuzzing

def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def _assert_clean(outcomes: list[Request | HttpError]) -> None:
    for outcome in outcomes:
        if isinstance(outcome, HttpError):
            assert 400 <= outcome.status < 500, outcome.status
            assert outcome.message
            Response(outcome.status, {"message": outcome.message}).encode(False)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000), st.lists(st.integers(0, 4000), max_size=8))
def test_fuzz_any_bytes(data: bytes, cuts: list[int]) -> None:
    _assert_clean(read_all(_chunked(data, cuts)))


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC-_.!#0123456789", min_size=0,
                 max_size=12)
_field_value = st.binary(max_size=60).map(lambda b: b.replace(b"\r\n", b""))
_header = st.one_of(
    st.tuples(_token.map(str.encode), _field_value).map(lambda t: t[0] + b": " + t[1]),
    st.sampled_from([b"Content-Length: 5", b"Content-Length: 99999999", b"Content-Length: x",
                     b"Transfer-Encoding: chunked", b"Expect: 100-continue",
                     b"Connection: close", b"Host: a", b" folded", b"NoColon", b":empty"]),
)
_request = st.builds(
    lambda method, target, version, headers, body, sep: (
        method + b" " + target + b" " + version + sep + sep.join(headers) + sep + sep + body),
    st.sampled_from([b"GET", b"PUT", b"POST", b"get", b"", b"G\x00T", b"DELETE"]),
    st.one_of(st.sampled_from([b"/v1/status", b"/v1/events?after=1&timeout=0.1", b"/",
                               b"*", b"/%zz", b"/a?%ff=1", b"/a#frag"]),
              st.binary(max_size=40)),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/11", b""]),
    st.lists(_header, max_size=8),
    st.binary(max_size=50),
    st.sampled_from([b"\r\n", b"\n", b"\r\n\r\n"]),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_request, min_size=1, max_size=3), st.lists(st.integers(0, 4000), max_size=6))
def test_fuzz_request_shaped_bytes(requests: list[bytes], cuts: list[int]) -> None:
    outcomes = read_all(_chunked(b"".join(requests), cuts))
    _assert_clean(outcomes)
    for outcome in outcomes:
        if isinstance(outcome, Request):
            try:
                outcome.json()
            except HttpError as e:
                assert e.status == 400


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["groups", "peers", "heartbeat", "fencing", "name", "type",
                         "resources", "member", "address", "port", "attributes", "monitor",
                         "timeouts", "dependsOn", "intervalMilliseconds",
                         "peerTimeoutMilliseconds", "selfFenceTimeoutSeconds", "epoch",
                         "operationId", "x"]), children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=1500, deadline=None)
@given(_json)
def test_fuzz_the_desired_configuration(raw: object) -> None:
    for parse in (lambda: DesiredConfig.from_dict(raw, "web-a"),
                  lambda: parse_command(raw, frozenset({"groups", "peers"}))):
        try:
            parse()
        except FieldError as e:
            assert str(e)


def test_desired_configuration_errors_name_the_field() -> None:
    cases = {
        "body.groups[shop].resources[app]: unknown field(s) restartLimmit": {
            "groups": [{"name": "shop", "resources": [
                {"name": "app", "type": "Process", "restartLimmit": 1}]}]},
        "body.peers[web-b].address: must be an IP address": {
            "peers": [{"member": "web-b", "address": "web-b.example"}]},
        "body.heartbeat.peerTimeoutMilliseconds: must be at least twice": {
            "heartbeat": {"intervalMilliseconds": 1000, "peerTimeoutMilliseconds": 1500}},
        "body.fencing.selfFenceTimeoutSeconds: must be an integer": {
            "fencing": {"selfFenceTimeoutSeconds": "10"}},
        "body: unknown field(s) quorum": {"quorum": {}},
        "body.groups[shop]: duplicate group name": {"groups": [{"name": "shop"},
                                                               {"name": "shop"}]},
        "body.groups[shop].resources[a].monitor: unknown field(s) every": {
            "groups": [{"name": "shop", "resources": [
                {"name": "a", "type": "Process", "monitor": {"every": 1}}]}]},
    }
    for words, raw in cases.items():
        with pytest.raises(FieldError) as e:
            DesiredConfig.from_dict(raw, "web-a", "body")
        assert words in str(e.value), str(e.value)
    with pytest.raises(FieldError, match=r"body\.epoch"):
        parse_command({"operationId": "x"})
    with pytest.raises(FieldError, match=r"body\.operationId"):
        parse_command({"epoch": 1})
    with pytest.raises(FieldError, match="unknown field"):
        parse_command({"epoch": 1, "operationId": "x", "what": 1})


def test_desired_configuration_defaults_and_self_in_peers() -> None:
    config = DesiredConfig.from_dict({
        "groups": [{"name": "shop", "type": "Failover", "resources": [
            {"name": "app", "type": "Process", "attributes": {"command": ["/bin/true"]},
             "monitor": {"intervalSeconds": 5}, "restartLimit": 1}]}],
        "peers": [{"member": "web-a", "address": "10.0.0.1"},
                  {"member": "web-b", "address": "10.0.0.2", "port": 9000}],
    }, "web-a")
    assert [p.member for p in config.peers] == ["web-b"]
    assert config.peers[0].port == 9000
    assert config.heartbeat.interval_milliseconds == 500
    assert config.fencing.self_fence_timeout_seconds == 10
    group = config.group("shop")
    assert group is not None and group.resources[0].monitor.interval_seconds == 5


# -- the OpenAPI document

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "agent-openapi.yaml"


def test_the_openapi_document_is_valid_and_covers_every_endpoint() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    yaml = pytest.importorskip("yaml")
    spec = yaml.safe_load(OPENAPI.read_text())
    validator.validate(spec)
    paths = spec["paths"]
    assert set(paths) == {"/v1/status", "/v1/healthz", "/v1/config", "/v1/events",
                          "/v1/groups/{name}/{action}", "/v1/bundle", "/v1/tls"}
    upload = paths["/v1/bundle"]["put"]["requestBody"]["content"]["application/json"]
    assert set(upload["schema"]["allOf"][1]["properties"]) == set(BUNDLE_FIELDS)
    assert set(paths["/v1/config"]) == {"get", "put"}
    tls_body = paths["/v1/tls"]["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(tls_body["allOf"][1]["properties"]) == set(TLS_FIELDS)
    actions = paths["/v1/groups/{name}/{action}"]["post"]["parameters"][1]["schema"]["enum"]
    assert tuple(actions) == GROUP_ACTIONS
    fields = spec["components"]["schemas"]
    assert set(fields["DesiredConfig"]["properties"]) == set(DESIRED_FIELDS)
    resource = set(fields["Resource"]["properties"])
    assert resource == {"name", "type", "attributes", "dependsOn", "critical", "restartLimit",
                        "toleranceLimit", "confIntervalSeconds", "onlineWaitLimit",
                        "faultOnMonitorTimeouts", "monitor", "timeouts"}
    # The document and the parser agree on what a resource may hold.
    DesiredConfig.from_dict({"groups": [{"name": "g", "resources": [
        {k: v for k, v in {"name": "r", "type": "Process", "attributes": {},
                           "dependsOn": [], "critical": True, "restartLimit": 0,
                           "toleranceLimit": 0, "confIntervalSeconds": 1,
                           "onlineWaitLimit": 1, "faultOnMonitorTimeouts": 1,
                           "monitor": {}, "timeouts": {}}.items() if k in resource}]}]})
