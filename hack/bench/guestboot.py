"""Benchmark: a real qemu guest's boot, from qemu's start to the agent answering the operator.

    hack/bench/run guestboot --trials 3 [--cold-build] [--out result.json]

Root only (the image build uses debootstrap and chroot). Boots the cached Debian image
(hack/guestimage) under qemu's software emulation, `--trials` times, each from a fresh seed
made as the guest tier makes it (the per-member Secret of the operator's injection, an
owner's #cloud-config first), and measures, as
median, p95 and n, seconds from qemu's start to:

- `guest_agent_s`: qemu-guest-agent answers guest-sync;
- `cloud_init_finished_s`: "Cloud-init ... finished" on the serial console;
- `agent_answers_s`: the operator's channel client (guestha.channel, mutual TLS through
  the forwarded port) gets a StatusReport from the guestha agent.

Milestones are polled about every second, so each figure is late by up to that much.
`image_cached_ms` is the cached image's lookup (guestimage.build.build() with the image
present); `--cold-build` first rebuilds the image (`image_cold_s`, one trial: it takes
minutes and replaces the cached one).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.stats import summary
from guestha.channel.transport import ChannelError
from guestha.protocol.constants import AGENT_PORT
from guestimage import build, qemu
from guestimage.qapi import GuestAgent
from kits.qemuguest import BOOT_TIMEOUT, CLOUD_INIT_FINISHED, QemuGuest, member_seed

OWNER_USER_DATA = b"#cloud-config\nruncmd:\n  - [touch, /run/owner-ran]\n"
POLL = 1.0


def trial(folder: Path, index: int) -> dict[str, float]:
    member = f"bench-{index}"
    made = member_seed("bench", "bench", member, OWNER_USER_DATA)
    port = qemu.free_port()
    guest = QemuGuest(folder / member, made.seed, {port: AGENT_PORT})
    seen: dict[str, float] = {}
    with guest:
        while len(seen) < 3:
            if guest.elapsed() > BOOT_TIMEOUT:
                raise RuntimeError(f"{member}: only {sorted(seen)} after {BOOT_TIMEOUT:g} s")
            if guest.process is not None and guest.process.poll() is not None:
                raise RuntimeError(f"{member}: qemu exited ({guest.process.returncode})")
            polled = time.monotonic()
            if "cloud_init_finished_s" not in seen and CLOUD_INIT_FINISHED.search(guest.serial()):
                seen["cloud_init_finished_s"] = guest.elapsed()
            if "guest_agent_s" not in seen:
                try:
                    GuestAgent(guest.machine.guest_agent_socket, timeout=POLL).close()
                    seen["guest_agent_s"] = guest.elapsed()
                except (OSError, TimeoutError):
                    pass
            if "agent_answers_s" not in seen:
                try:
                    with made.channel_client(port, timeout=POLL) as client:
                        client.status()
                    seen["agent_answers_s"] = guest.elapsed()
                except ChannelError:
                    pass
            time.sleep(max(0.0, POLL - (time.monotonic() - polled)))
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/bench/run guestboot",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--cold-build", action="store_true",
                        help="rebuild the image first and time it (minutes)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report: dict[str, object] = {}
    if args.cold_build:
        started = time.monotonic()
        build.build(force=True)
        report["image_cold_s"] = summary([time.monotonic() - started])
    cached = []
    for _ in range(5):
        started = time.monotonic()
        build.build()
        cached.append((time.monotonic() - started) * 1000)
    report["image_cached_ms"] = summary(cached)
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="guestboot-") as folder:
        for index in range(max(1, args.trials)):
            for name, value in trial(Path(folder), index).items():
                figures.setdefault(name, []).append(value)
    report.update({name: summary(values) for name, values in sorted(figures.items())})
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
