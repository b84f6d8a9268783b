"""How long the operator waits for a member its peers lost (controller.probes)."""

from __future__ import annotations

import pytest

from guestha.controller.probes import probe_timeout

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("peer_timeout", "expected"), [
    (0.2, 0.25),  # never shorter than a TLS handshake with a loaded guest needs
    (1.0, 0.25),
    (1.4, 0.35),  # a quarter of the peer timeout between the bounds
    (3.0, 0.4),   # never longer: it is spent on top of the peer timeout
    (60.0, 0.4),
])
def test_a_probe_is_a_quarter_of_the_peer_timeout_within_bounds(
        peer_timeout: float, expected: float) -> None:
    assert probe_timeout(peer_timeout) == pytest.approx(expected)
