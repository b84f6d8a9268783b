"""The agent's channel-side state: the event log, the persistent store, the boot record,
and the watchdog. Heartbeats and quorum have files of their own (test_agent_heartbeat.py,
test_agent_quorum.py).
"""

from __future__ import annotations

import calendar
import json
import math
import os
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from guestha.agent.events import RING_CAPACITY, EventGone, EventLog, rfc3339
from guestha.agent.store import BootRecord, FaultRecord, Store, StoreError
from guestha.agent.watchdog import Watchdog, stall_start
from kits.waiting import wait_for

pytestmark = pytest.mark.unit


# -- events

def test_events_are_ordered_and_read_after_a_sequence() -> None:
    log = EventLog(capacity=10)
    for i in range(5):
        log.emit("K", {"i": i})
    batch = log.read(2, timeout=0)
    assert [e.seq for e in batch.events] == [3, 4, 5]
    assert batch.last_seq == 5 and not batch.more
    assert log.read(5, timeout=0).events == ()
    limited = log.read(0, timeout=0, limit=2)
    assert [e.seq for e in limited.events] == [1, 2] and limited.more


def _stamp_seconds(stamp: str) -> float:
    seconds = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    return seconds + int(stamp[20:23]) / 1000


def _times_near_second_boundaries() -> list[float]:
    """Wall-clock times a float step below, at and above whole seconds and milliseconds."""
    times = []
    for second in (0.0, 1.0, 1_764_460_800.0, 1_795_626_291.0, 4_102_444_799.0):
        for base in (second, second + 0.5, second + 0.999, second + 1):
            t = base
            for _ in range(40):
                t = math.nextafter(t, 0.0)
                times.append(t)
            times.extend([base, math.nextafter(base, math.inf)])
    return times


def test_event_and_resource_stamps_are_the_time_truncated_to_milliseconds() -> None:
    """Events and resources' lastChange share this one definition (RFC 3339, UTC, ms):
    a time is stamped in its own second, never rounded into the next one."""
    for t in _times_near_second_boundaries():
        stamp = rfc3339(t)
        assert len(stamp) == 24 and stamp.endswith("Z"), stamp
        assert t - 0.001 - 1e-6 <= _stamp_seconds(stamp) <= t + 1e-6, (repr(t), stamp)
    assert rfc3339(1_795_626_291.7739) == "2026-11-25T17:04:51.773Z"


def test_a_waiting_reader_wakes_at_once() -> None:
    """Woken by the event, not by its own timeout (60 s): how fast is the bench's."""
    log = EventLog()
    got: list[float] = []
    kinds: list[str] = []

    def reader() -> None:
        batch = log.read(0, timeout=60)
        got.append(time.monotonic())
        kinds.extend(e.kind for e in batch.events)

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.1)
    sent = time.monotonic()
    log.emit("Now", {})
    t.join(30)
    assert kinds == ["Now"] and got and got[0] - sent < 30


def test_events_that_left_the_ring_and_other_streams_are_gone() -> None:
    log = EventLog(capacity=3)
    for i in range(6):
        log.emit("K", {"i": i})
    with pytest.raises(EventGone, match="no longer held") as e:
        log.read(1, timeout=0)
    assert (e.value.first_seq, e.value.last_seq) == (4, 6)
    assert [ev.seq for ev in log.read(3, timeout=0).events] == [4, 5, 6]
    with pytest.raises(EventGone, match="ahead"):
        log.read(99, timeout=0)
    with pytest.raises(EventGone, match="restarted"):
        log.read(3, timeout=0, stream="another-run")


def test_a_full_ring_of_typical_events_stays_within_its_memory_budget() -> None:
    """The default ring, full of ResourceState events as 50 resources make them, holds at
    most 420 KiB: what a long-running agent adds to the benchmark's figure, which sees a
    nearly empty ring (guestha.agent.events, docs/agent-api.md "The agent's memory")."""
    log = EventLog()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(3 * RING_CAPACITY):  # more than it holds: the oldest leave
            log.emit("ResourceState", {
                "group": f"bench{i % 5}", "resource": f"sleep{i % 10}", "state": "Online",
                "previous": "Starting", "reason": "Online", "restarts": 0,
                "message": f"running (pid {100000 + i})"})
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    with pytest.raises(EventGone) as gone:  # it holds exactly the newest RING_CAPACITY
        log.read(0, timeout=0)
    assert (gone.value.first_seq, gone.value.last_seq) == (2 * RING_CAPACITY + 1,
                                                           3 * RING_CAPACITY)
    assert held <= 420 * 1024, f"a full ring holds {held} bytes"


# -- store

def test_store_persists_atomically_and_reloads(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    inc = store.next_incarnation()
    assert store.record_epoch(3) and not store.record_epoch(3) and not store.record_epoch(2)
    store.set_config({"groups": []})
    store.record_operation("op-1", "PUT /v1/config", 3, 200, {"applied": True})
    assert [p.name for p in tmp_path.iterdir()] == ["channel-state.json"]  # no tmp left
    again = Store(str(tmp_path))
    assert (again.epoch, again.config) == (3, {"groups": []})
    assert again.operation("op-1") is not None
    assert again.operation("op-1")["body"] == {"applied": True}  # type: ignore[index]
    assert again.next_incarnation() > inc


def test_store_keeps_only_recent_operations(tmp_path: Path) -> None:
    store = Store(str(tmp_path), max_operations=3)
    for i in range(5):
        store.record_operation(f"op-{i}", "c", 1, 200, None)
    assert store.operation("op-1") is None and store.operation("op-4") is not None
    assert Store(str(tmp_path), max_operations=3).operation("op-2") is not None


def test_a_fault_record_is_kept_until_dropped_and_a_damaged_one_still_counts(
        tmp_path: Path) -> None:
    record = FaultRecord(str(tmp_path / "resources" / "shop" / "app"))
    assert record.load() is None
    record.save("monitor found it offline", "2026-11-30T10:00:00.000Z")
    assert FaultRecord(str(tmp_path / "resources" / "shop" / "app")).load() == \
        "monitor found it offline"
    record.drop()
    assert record.load() is None
    record.drop()  # nothing to drop: no error
    Path(record.path).write_bytes(b"{not json")
    damaged = record.load()
    assert damaged is not None and "cannot be read" in damaged


def test_store_refuses_a_damaged_file(tmp_path: Path) -> None:
    (tmp_path / "channel-state.json").write_text("{half")
    with pytest.raises(StoreError, match=r"channel-state\.json"):
        Store(str(tmp_path))


def test_incarnation_grows_even_when_the_clock_steps_back(tmp_path: Path) -> None:
    (tmp_path / "channel-state.json").write_text(json.dumps(
        {"format": 1, "epoch": 0, "incarnation": 10**15, "config": None, "operations": []}))
    assert Store(str(tmp_path)).next_incarnation() == 10**15 + 1



# -- watchdog

def test_watchdog_pets_a_stand_in_and_stops_when_the_loop_hangs(tmp_path: Path) -> None:
    device = tmp_path / "watchdog"
    device.write_bytes(b"")
    stopped: list[str] = []
    dog = Watchdog(str(device), stopped.append, hang_seconds=0.5, check_interval=0.05)
    dog.open()
    for _ in range(3):
        dog._last_pet -= 2  # as if a second had passed since the last pet
        dog.tick(time.monotonic())
    assert os.path.getsize(device) >= 3
    wait_for(lambda: stopped, 3, 0.01, what="the hung loop noticed")  # no tick for 0.5 s: hung
    size = os.path.getsize(device)
    dog.tick(time.monotonic())
    assert os.path.getsize(device) == size and "main loop" in stopped[0]
    dog.close()
    assert os.path.getsize(device) == size  # no magic close after a stop: the reset stands


def test_watchdog_clean_close_writes_the_magic_character(tmp_path: Path) -> None:
    device = tmp_path / "watchdog"
    device.write_bytes(b"")
    dog = Watchdog(str(device), lambda r: None)
    dog.open()
    dog.close()
    assert device.read_bytes().endswith(b"V")


def test_events_with_odd_payloads_stay_readable() -> None:
    log = EventLog()
    log.emit("Odd", {"path": Path("/x"), "when": {1: "a"}, "set": {1}})
    [event] = log.read(0, timeout=0).events
    assert event.data == {"path": "/x", "when": {"1": "a"}, "set": "{1}"}


def test_a_missing_watchdog_device_is_reported_not_fatal(tmp_path: Path) -> None:
    dog = Watchdog(str(tmp_path / "absent"), lambda r: None)
    dog.open()
    assert not dog.armed and "cannot open" in (dog.status().error or "")
    dog.close()


def test_the_boot_record_is_read_back_only_in_the_same_boot(tmp_path: Path) -> None:
    record = BootRecord(str(tmp_path), boot="boot-1")
    assert record.load() is None
    record.save({"quorum": {"lastHeld": 12.5}, "watchdogReleased": ""})
    assert BootRecord(str(tmp_path), boot="boot-1").load() == {
        "quorum": {"lastHeld": 12.5}, "watchdogReleased": ""}
    assert BootRecord(str(tmp_path), boot="boot-2").load() is None  # another boot
    assert BootRecord(str(tmp_path), boot="").load() is None  # no boot id: never
    (tmp_path / "boot-record.json").write_text("{half")
    with pytest.raises(StoreError, match=r"boot-record\.json"):
        record.load()


def test_the_boot_id_is_the_kernels() -> None:
    from guestha.agent.store import boot_id

    assert len(boot_id()) == 36 and boot_id() == boot_id()


# The watchdog checker's count of a stalled main loop: (last tick, last check, now) ->
# when the stall began. A checker gap over 2 s is a pause of the whole process: it is not
# the loop's stall, but what was stalled before it still counts.
STALLS = [
    ("the loop ticks: nothing stalled", 10.0, 10.0, 10.25, 10.0),
    ("the loop stalls, no pause", 5.0, 10.0, 10.25, 5.0),
    ("a 3 s pause of a ticking loop: no stall", 10.0, 10.0, 13.0, 13.0),
    ("a 3 s pause of a loop stalled 4 s: still 4 s", 6.0, 10.0, 13.0, 9.0),
    ("a 1.5 s gap is no pause", 6.0, 10.0, 11.5, 6.0),
]


@pytest.mark.parametrize("last_tick,last_check,now,start", [r[1:] for r in STALLS],
                         ids=[r[0] for r in STALLS])
def test_a_pause_does_not_restart_the_stall_count(last_tick: float, last_check: float,
                                                  now: float, start: float) -> None:
    assert stall_start(last_tick, last_check, now, pause=2.0) == start


def test_pauses_every_few_seconds_do_not_hide_a_hung_loop() -> None:
    """The loop hangs at 0; a 3 s pause every 4 s (1 s of running between): it counts as
    hung once 10 s of running time have passed, where a reset of the count on each pause
    never reached 10 s."""
    last_tick, last_check, now = 0.0, 0.0, 0.0
    found = None
    while now < 100 and found is None:
        now = round(now + 0.25, 2)
        if now % 4 == 0:
            now += 3.0  # paused
        last_tick = max(last_tick, stall_start(last_tick, last_check, now, 2.0))
        last_check = now
        if now - last_tick > 10:
            found = now
    assert found is not None and found < 45
