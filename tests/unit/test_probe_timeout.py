"""How long the operator waits for a member its peers lost (controller.probes)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from guestha.channel.aio import Contact, Member
from guestha.controller.links import MemberLink
from guestha.controller.probes import Prober, probe_timeout

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("peer_timeout", "expected"), [
    (0.2, 0.25),  # never shorter than a TLS handshake with a loaded guest needs
    (1.0, 0.25),
    (1.1, 0.275),  # a quarter of the peer timeout between the bounds
    (3.0, 0.3),   # never longer: it is spent on top of the peer timeout
    (60.0, 0.3),
])
def test_a_probe_is_a_quarter_of_the_peer_timeout_within_bounds(
        peer_timeout: float, expected: float) -> None:
    assert probe_timeout(peer_timeout) == pytest.approx(expected)


def link(name: str, down: tuple[str, ...] = ()) -> MemberLink:
    made = MemberLink("ns", "web", Member("ns", name, 7480, "10.0.0.1"), "uid",
                      lambda: None)  # type: ignore[arg-type,return-value]
    made.contact = Contact(True, 0.0)
    made.state.peers = {p: SimpleNamespace(up=False) for p in down}  # type: ignore[misc]
    return made


def test_a_suspect_probed_moments_ago_is_due_again_after_an_interval() -> None:
    """The supervisor passes when a suspect may be probed again: a member that froze
    right after it joined (never Up for its peers: no PeerDown to wake anyone) was
    probed again only at the next long poll, 5 s on."""
    prober = Prober("ns", "web", lambda: None)
    links = {"a": link("a", down=("b",)), "b": link("b"), "c": link("c", down=("b",))}
    assert prober.next_due(links, 1.0, 100.0) is None  # never probed: start probes it
    prober._last["b"] = 100.0  # answered a probe then (it had just joined)
    assert prober.next_due(links, 1.0, 100.4) == pytest.approx(101.0)
    assert prober.next_due(links, 3.0, 100.4) == pytest.approx(103.0)
    assert prober.next_due(links, 1.0, 101.0) is None  # due now: start probes it
    links["c"].state.peers = {}  # a peer with no word against it: not a suspect
    links["a"].state.peers = {"b": SimpleNamespace(up=True)}  # type: ignore[dict-item]
    assert prober.next_due(links, 1.0, 100.4) is None
