"""The guest's zipapp: this package as one file with its bytecode, built once per run.

Every guest runs PID 1 from it, and every ``systemctl`` call in a guest starts a Python
that runs it. Source alone would be compiled again at each call: the guest's python runs
with ``-I -S``, a zipapp is never written to, and this environment turns bytecode caching
off anyway. So the bundle carries each module's bytecode next to its source, compiled by
the interpreter that builds it, which is the one that runs the guests (``sys.executable``).
The .pyc files are checked-hash ones (PEP 552): an interpreter whose magic number differs
falls back to the source, and a .pyc whose source hash does not match is never used.

Same sources and interpreter, same bytes: entries sorted, fixed time stamps and modes,
stored uncompressed (no inflating at each call), bytecode marshalled without
reference flags (marshal version 2: those flags follow reference counts, not the code).
Host side only: this module is not in the bundle.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import marshal
import zipfile
from dataclasses import dataclass
from pathlib import Path

from kubevirtsim.guestinit import plan

PACKAGE = "kubevirtsim/guestinit"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o100644  # a regular file, rw-r--r--
MARSHAL_VERSION = 2  # the newest without FLAG_REF: its output is a function of the code
HOST_ONLY = frozenset({"bundle.py"})

ROOT_MAIN = b'''"""A simulated guest's init and commands: `boot GUEST_DIR`, or `TOOL ARGS...`"""
import sys

if sys.argv[1:2] == ["boot"]:
    from kubevirtsim.guestinit import pid1

    sys.exit(pid1.main(sys.argv))
from kubevirtsim.guestinit import client

sys.exit(client.main(sys.argv))
'''
ROOT_PACKAGE = b'"""kubevirtsim, as bundled for a simulated guest: only guestinit is here."""\n'


@dataclass(frozen=True)
class Bundle:
    """A built zipapp."""

    data: bytes
    files: tuple[str, ...]  # entry names, in order

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def sources(folder: Path | None = None) -> list[tuple[str, bytes]]:
    """(entry name, source) of every module the guest runs, the zipapp's own files first."""
    folder = folder or Path(__file__).resolve().parent
    modules = sorted(p for p in folder.glob("*.py") if p.name not in HOST_ONLY)
    if not any(p.name == "pid1.py" for p in modules):
        raise FileNotFoundError(f"{folder}: no guestinit sources here")
    return [
        ("__main__.py", ROOT_MAIN),
        ("kubevirtsim/__init__.py", ROOT_PACKAGE),
        *((f"{PACKAGE}/{p.name}", p.read_bytes()) for p in modules),
    ]


def pyc(source: bytes, filename: str) -> bytes:
    """A checked-hash .pyc of `source` for this interpreter (PEP 552's layout)."""
    code = compile(source, filename, "exec", dont_inherit=True)
    flags = 0b11  # hash-based, check the source
    return (
        importlib.util.MAGIC_NUMBER
        + flags.to_bytes(4, "little")
        + importlib.util.source_hash(source)
        + marshal.dumps(code, MARSHAL_VERSION)
    )


def build(folder: Path | None = None) -> Bundle:
    """The zipapp of the guestinit sources in `folder` (default: this package's)."""
    entries: list[tuple[str, bytes]] = []
    for name, source in sources(folder):
        entries.append((name, source))
        # The file name tracebacks show: the guest's copy, where the shims run it from.
        entries.append((name + "c", pyc(source, f"{plan.GUEST_BUNDLE}/{name}")))
    entries.sort()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.create_system = 3  # unix, so the mode below is read as one
            info.external_attr = FILE_MODE << 16
            archive.writestr(info, data)
    return Bundle(buffer.getvalue(), tuple(name for name, _ in entries))


@functools.cache
def shipped() -> Bundle:
    """The bundle every guest of this process gets: built at the first boot, then kept."""
    return build()
