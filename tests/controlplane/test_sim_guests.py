"""The simulator's record of its guests (virt-handler's view of its domains), on real guest
hosts: a guest is dead to the VMI controller only once its exit status is known.

The VMI controller turns a guest's end into the VMI's final phase from that status (0:
Succeeded, it powered itself off; else Failed, it crashed), and a VM's runStrategy acts on
the phase: RerunOnFailure starts a Failed VMI again but leaves a Succeeded one down. So a
guest that reads as dead before its status is recorded makes a clean power-off look like a
crash, and the VM comes back up.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubevirtsim.guesthost import GuestSpec, cleanup_stale
from kubevirtsim.guests import Guests

pytestmark = [
    pytest.mark.controlplane,
    pytest.mark.skipif(os.geteuid() != 0, reason="guest hosts need root"),
]

# powers itself off once cloud-init has run: the clean end of a guest
POWEROFF_SCRIPT = b"#!/bin/sh\nsystemctl poweroff\n"


@pytest.fixture
def guests(tmp_path: Path) -> Iterator[tuple[Guests, list[str]]]:
    changed: list[str] = []
    record = Guests(tmp_path / "state", changed.append)
    yield record, changed
    record.kill_all()
    cleanup_stale(tmp_path / "state")


def test_a_guest_reads_dead_only_with_its_exit_status(
    guests: tuple[Guests, list[str]],
) -> None:
    record, changed = guests
    uid = str(uuid.uuid4())
    guest = record.boot(GuestSpec(key="ns/poweroff", uid=uid, hostname="poweroff",
                                  datasource="NoCloud", user_data=POWEROFF_SCRIPT,
                                  network_data=None, node="node-1"))
    # What the VMI controller does on every look: alive(), and if not, read the status.
    # Looked at as often as it can be, from two threads, as the workers do.
    verdicts: list[tuple[bool, int | None]] = []
    done = threading.Event()

    def look() -> None:
        while not done.is_set():
            alive = guest.alive()
            verdicts.append((alive, None if alive else guest.exit_code))

    lookers = [threading.Thread(target=look) for _ in range(2)]
    for thread in lookers:
        thread.start()
    try:
        assert guest.exited.wait(60), "the guest did not power itself off"
        time.sleep(0.2)
    finally:
        done.set()
        for thread in lookers:
            thread.join()
    dead = [code for alive, code in verdicts if not alive]
    assert dead, "never seen dead"
    assert set(dead) == {0}, f"seen dead with these statuses: {sorted(set(dead), key=str)}"
    # the exit woke its VMI (the agent poller wakes it too, when the agent comes and goes)
    assert changed and set(changed) == {"ns/poweroff"}
