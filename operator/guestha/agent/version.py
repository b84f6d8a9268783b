"""The agent's version: a content hash of its sources, the same one its bundle carries.

The agent runs with two of guestha's packages: itself and the protocol it shares with the
operator (PACKAGES). The bundle builder (guestha.cloudinit.bundle) computes the hash over
exactly the files of both that it puts in the zipapp and stores it there as
`guestha/agent/VERSION`. An agent run from a source tree computes the same hash over the
same files, so the operator can compare what a guest runs with what it would inject, and
a change to the protocol is a new agent version too.
"""

from __future__ import annotations

import hashlib
import os

VERSION_FILE = "VERSION"
HASH_CHARS = 16
PACKAGES = ("agent", "protocol")  # guestha's packages the agent runs with


def source_files(root: str) -> list[tuple[str, bytes]]:
    """(path inside the bundle, bytes) of every source of PACKAGES, sorted by path.

    `root` is the folder holding guestha's packages (guestha/ of the source tree). Paths
    are relative to the import root (`guestha/agent/...`, `guestha/protocol/...`); only
    .py files count, never caches. A package missing from `root` contributes nothing.
    """
    files: list[tuple[str, bytes]] = []
    for package in PACKAGES:
        package_dir = os.path.join(root, package)
        for folder, dirs, names in os.walk(package_dir):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            for name in sorted(names):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                with open(path, "rb") as f:
                    files.append((f"guestha/{rel}", f.read()))
    return sorted(files)


def content_hash(files: list[tuple[str, bytes]]) -> str:
    """The version: sha256 over each path and its bytes, length-prefixed, shortened."""
    digest = hashlib.sha256()
    for path, data in files:
        encoded = path.encode("utf-8")
        digest.update(len(encoded).to_bytes(4, "big") + encoded)
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:HASH_CHARS]


def _bundled_version() -> bytes | None:
    """The VERSION file beside this module, read through the loader that imported it (the
    zipapp's zipimporter, or the file system's), as pkgutil.get_data reads it; pkgutil
    itself (with importlib.util) is not imported for this one read."""
    loader = getattr(__spec__, "loader", None)
    get_data = getattr(loader, "get_data", None)
    if get_data is None:
        return None
    try:
        data: bytes = get_data(os.path.join(os.path.dirname(__file__), VERSION_FILE))
    except OSError:
        return None
    return data


def agent_version() -> str:
    """The bundle's VERSION when running from one, else the hash of the source tree."""
    data = _bundled_version()
    if data:
        return data.decode("ascii").strip()
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isdir(here):
        return content_hash(source_files(os.path.dirname(here)))
    return "unknown"
