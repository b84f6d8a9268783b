"""The heartbeat secret's rotation (controller.heartbeatkeys) as tables: which secret the
agents sign with and which they also accept at each step, when a step may follow, and
that at every moment of a rotation what one agent sends, every other accepts."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from guestha.controller import heartbeatkeys
from guestha.controller.heartbeatkeys import HeartbeatKeys, KeyStore, Phase
from guestha.model.agentconfig import member_config
from guestha.protocol.keys import pair_key

pytestmark = pytest.mark.unit

OLD, NEW = b"old secret" * 4, b"new secret" * 4


@pytest.mark.parametrize(("phase", "send", "accept"), [
    (Phase.IDLE, OLD, ()),
    (Phase.ACCEPT, OLD, (NEW,)),
    (Phase.SEND, NEW, (OLD,)),
])
def test_what_the_agents_sign_with_and_accept(phase: Phase, send: bytes,
                                              accept: tuple[bytes, ...]) -> None:
    assert heartbeatkeys.secrets_for(phase, OLD, NEW) == (send, accept)


@pytest.mark.parametrize(("phase", "confirmed", "expected"), [
    (Phase.IDLE, True, Phase.IDLE),
    (Phase.ACCEPT, False, Phase.ACCEPT),
    (Phase.ACCEPT, True, Phase.SEND),
    (Phase.SEND, False, Phase.SEND),
    (Phase.SEND, True, None),  # done: the new secret replaces the old
])
def test_a_step_follows_only_once_every_running_member_took_it(
        phase: Phase, confirmed: bool, expected: Phase | None) -> None:
    assert heartbeatkeys.advance(phase, confirmed) is expected


def test_two_neighbouring_steps_always_understand_each_other() -> None:
    """Agents are at most one step apart (a step follows only once every running agent
    took the one before): whatever either sends, the other accepts."""
    steps = [(OLD, ()), *(heartbeatkeys.secrets_for(p, OLD, NEW)
                          for p in (Phase.ACCEPT, Phase.SEND)), (NEW, ())]
    for (send_a, accept_a), (send_b, accept_b) in itertools.pairwise(steps):
        assert send_a in (send_b, *accept_b) and send_b in (send_a, *accept_a)


def test_the_configurations_carry_the_overlap() -> None:
    config = member_config("web", "a", ["a", "b"], {"b": "10.0.0.2"}, [], {}, OLD, 15,
                           accept_secrets=(NEW,))
    [peer] = config.peers
    assert peer.heartbeat_key == pair_key(OLD, "web", "a", "b")
    assert peer.accept_keys == (pair_key(NEW, "web", "a", "b"),)


def test_a_rotation_runs_from_the_annotation_to_the_new_secret() -> None:
    stored: dict[str, Any] = {"next": None, "current": OLD}
    events: list[str] = []

    async def begin() -> bytes:
        stored["next"] = stored["next"] or NEW
        return bytes(stored["next"])

    async def finish(upcoming: bytes) -> bool:
        stored["current"], stored["next"] = upcoming, None
        return True

    keys = HeartbeatKeys("ns", "web", OLD, None, KeyStore(begin, finish))
    body: dict[str, Any] = {"metadata": {"annotations": {
        heartbeatkeys.ROTATE_ANNOTATION: "after-incident-7"}}, "status": {}}

    def step() -> bool:
        return asyncio.run(keys.step(body, lambda _k, reason, _m: events.append(reason)))

    assert step() and keys.phase is Phase.ACCEPT and (keys.send, keys.accept) == (OLD, (NEW,))
    keys.took({"a": True, "b": False})  # b has not confirmed: no step
    assert not step() and keys.phase is Phase.ACCEPT
    assert keys.status({}, "t1")["heartbeatKeyRotation"]["message"] == "waiting for b"
    keys.took({"a": True, "b": True})
    assert step() and keys.phase is Phase.SEND and (keys.send, keys.accept) == (NEW, (OLD,))
    keys.took({"a": True, "b": True})
    assert step() and keys.phase is Phase.IDLE and (keys.send, keys.accept) == (NEW, ())
    assert stored == {"next": None, "current": NEW}
    # the status last read may still show a step of this rotation (a write behind)
    behind = {"heartbeatKeyRotation": {"value": "after-incident-7", "phase": "SendingNewKey"}}
    assert keys.status(behind, "t2")["heartbeatKeyRotation"]["phase"] == "Done"
    status = keys.status({}, "t2")["heartbeatKeyRotation"]
    assert (status["value"], status["phase"]) == ("after-incident-7", "Done")
    body["status"] = {"heartbeatKeyRotation": status}
    assert not step()  # that value is done
    assert events == [heartbeatkeys.EVENT_STARTED, heartbeatkeys.EVENT_DONE]


def test_an_operator_that_starts_in_the_middle_starts_again_accepting_both() -> None:
    keys = HeartbeatKeys("ns", "web", OLD, NEW)
    assert keys.phase is Phase.ACCEPT and (keys.send, keys.accept) == (OLD, (NEW,))
