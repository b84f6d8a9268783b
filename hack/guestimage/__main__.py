"""python3 -m guestimage build|path|boot (with hack/ on PYTHONPATH).

build: make the image if the cache lacks it (--force: again); path: print its folder (exit
1 when it is not built); boot: boot it with a NoCloud seed of the given user-data, the
serial console on this terminal (log in as root, no password; Ctrl-a x quits qemu).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from guestimage import build, qemu, seed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m guestimage", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="build the image unless it is cached")
    make.add_argument("--force", action="store_true", help="build it again")
    commands.add_parser("path", help="print the image's folder")
    boot = commands.add_parser("boot", help="boot the image on this terminal")
    boot.add_argument("--user-data", type=Path,
                      help="the user-data file (default: an empty #cloud-config)")
    boot.add_argument("--network-config", type=Path)
    boot.add_argument("--hostname", default="guest")
    boot.add_argument("--forward", action="append", default=[], metavar="HOST:GUEST",
                      help="forward 127.0.0.1:HOST to the guest's TCP port GUEST")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build.build(force=args.force).folder)
        return 0
    if args.command == "path":
        image = build.image()
        print(image.folder)
        return 0 if image.complete() else 1
    image = build.build()
    user_data = args.user_data.read_bytes() if args.user_data else b"#cloud-config\n{}\n"
    network = args.network_config.read_bytes() if args.network_config else None
    forwards = {int(h): int(g) for h, g in (f.split(":", 1) for f in args.forward)}
    with tempfile.TemporaryDirectory(prefix="guestimage-boot-") as folder:
        iso = seed.write_iso(seed.Seed(user_data, f"{args.hostname}.dev", args.hostname,
                                       network), Path(folder) / "cidata.iso")
        machine = qemu.Machine(image, iso, Path(folder), forwards, console=True)
        print(f"guestimage: QMP at {machine.qmp_socket}, guest agent at "
              f"{machine.guest_agent_socket}", file=sys.stderr)
        process = subprocess.Popen(machine.argv())
        # A SIGTERM to this program stops qemu too (and the seed's folder is removed).
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            return process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except build.GuestImageError as e:
        sys.exit(f"guestimage: {e}")
