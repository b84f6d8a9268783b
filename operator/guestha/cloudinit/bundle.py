"""The agent bundle: guestha.agent and guestha.protocol as one reproducible zipapp, for
injection into guests.

Same sources, same bytes: entries are sorted, every timestamp is 1980-01-01 00:00:00,
every mode is 0644, there are no directory entries, caches or extra fields, and the
compression level is fixed. The bundle's version is a content hash of its sources (the
agent's and the protocol's: guestha.agent.version.content_hash, the same hash an agent run
from a source tree reports), stored in the bundle as guestha/agent/VERSION, so the
operator can tell which agent a guest runs by asking it.

`python3 -m guestha.cloudinit.bundle OUT.pyz` writes the bundle and prints its version.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import guestha.agent
from guestha.agent.version import VERSION_FILE, content_hash, source_files

INTERPRETER = "/usr/bin/env python3"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o100644  # a regular file, rw-r--r--
COMPRESS_LEVEL = 9

# The bundle's own top-level files: fixed text, so they never change the bytes by themselves.
ROOT_MAIN = b'''"""The guestha agent: python3 guestha-agent.pyz --config /etc/guestha/agent.json"""
import sys

if sys.version_info < (3, 9):
    sys.exit("guestha-agent needs Python 3.9 or newer, this is " + sys.version.split()[0])

from guestha.agent.main import main

sys.exit(main())
'''
ROOT_PACKAGE = b'"""guestha, as bundled for guests: only the agent and its protocol are here."""\n'


@dataclass(frozen=True)
class Bundle:
    """A built bundle."""

    data: bytes
    version: str  # content hash of the agent's sources
    files: tuple[str, ...]  # entry names, in order

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def write(self, path: Path) -> None:
        path.write_bytes(self.data)
        path.chmod(0o755)


def package_dir() -> Path:
    """The folder holding guestha's packages (the installed guestha/)."""
    return Path(guestha.agent.__file__).resolve().parent.parent


def crashing_main(message: str) -> bytes:
    """A __main__.py that exits at once with `message`, as an agent with a bug in its
    start-up would: the bundle is well-formed (an agent accepts the upload) and never
    comes up (guestha.agent.bundles rolls it back)."""
    return b"import sys\n\nsys.exit(" + repr(message).encode("utf-8") + b")\n"


def build(interpreter: str = INTERPRETER, source: Path | None = None,
          version: str | None = None, crash: str | None = None) -> Bundle:
    """The zipapp of the agent and protocol sources under `source`, a folder holding
    guestha's packages (default: the installed guestha). `version`: what the bundle's
    VERSION says instead of its content hash; only tests give one, to roll out "a newer
    agent" made of the same sources (GUESTHA_TEST_BUNDLE_VERSION, docs/agent-api.md).
    `crash`: only tests give one, for a bundle whose program exits at once with that
    message (`crashing_main`; GUESTHA_TEST_BUNDLE_CRASH)."""
    root = source or package_dir()
    sources = source_files(str(root))
    paths = {path for path, _ in sources}
    for needed, what in (("guestha/agent/main.py", "agent"),
                         ("guestha/protocol/__init__.py", "protocol")):
        if needed not in paths:
            raise FileNotFoundError(f"{root}: no guestha {what} sources here ({root}/"
                                    f"{needed.removeprefix('guestha/')} is missing)")
    version = version or content_hash(sources)
    entries = sorted([
        ("__main__.py", ROOT_MAIN if crash is None else crashing_main(crash)),
        ("guestha/__init__.py", ROOT_PACKAGE),
        (f"guestha/agent/{VERSION_FILE}", version.encode("ascii") + b"\n"),
        *sources,
    ])
    buffer = io.BytesIO()
    buffer.write(b"#!" + interpreter.encode("utf-8") + b"\n")
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so the mode below is read as one
            info.external_attr = FILE_MODE << 16
            archive.writestr(info, data, compresslevel=COMPRESS_LEVEL)
    return Bundle(buffer.getvalue(), version, tuple(name for name, _ in entries))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m guestha.cloudinit.bundle",
                                     description="Build the guestha agent zipapp.")
    parser.add_argument("output", type=Path, help="where to write the .pyz")
    parser.add_argument("--interpreter", default=INTERPRETER)
    args = parser.parse_args(argv)
    bundle = build(args.interpreter)
    bundle.write(args.output)
    print(f"{args.output}: guestha-agent {bundle.version} ({len(bundle.data)} bytes, "
          f"sha256 {bundle.sha256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
