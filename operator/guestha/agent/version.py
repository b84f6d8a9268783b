"""The agent's version: a content hash of its sources, the same one its bundle carries.

The bundle builder (guestha.cloudinit.bundle) computes the hash over exactly the files it
puts in the zipapp and stores it there as `guestha/agent/VERSION`. An agent run from a
source tree computes the same hash over the same files, so the operator can compare what
a guest runs with what it would inject.
"""

from __future__ import annotations

import hashlib
import os
import pkgutil

VERSION_FILE = "VERSION"
HASH_CHARS = 16


def source_files(package_dir: str) -> list[tuple[str, bytes]]:
    """(path inside the bundle, bytes) of every agent source, sorted by path.

    Paths are relative to the import root (`guestha/agent/...`); only .py files count,
    never caches.
    """
    files: list[tuple[str, bytes]] = []
    for folder, dirs, names in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(names):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, package_dir).replace(os.sep, "/")
            with open(path, "rb") as f:
                files.append((f"guestha/agent/{rel}", f.read()))
    return sorted(files)


def content_hash(files: list[tuple[str, bytes]]) -> str:
    """The version: sha256 over each path and its bytes, length-prefixed, shortened."""
    digest = hashlib.sha256()
    for path, data in files:
        encoded = path.encode("utf-8")
        digest.update(len(encoded).to_bytes(4, "big") + encoded)
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:HASH_CHARS]


def agent_version() -> str:
    """The bundle's VERSION when running from one, else the hash of the source tree."""
    try:
        data = pkgutil.get_data("guestha.agent", VERSION_FILE)
    except OSError:
        data = None
    if data:
        return data.decode("ascii").strip()
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isdir(here):
        return content_hash(source_files(here))
    return "unknown"
