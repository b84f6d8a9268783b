"""The krew archive of kubectl-guestha, byte for byte reproducible, and its plugin manifest.

krew installs a plugin from an archive whose sha256 the manifest (plugins/guestha.yaml)
pins, so the archive must come out the same from the same sources: the script is the one
way it is made, and a test rebuilds it and compares the sha256 with the manifest's.

The archive is a zip (krew unpacks zip and tar.gz) holding
- `kubectl-guestha`: a zipapp of guestha.cli (and guestha/__init__.py) with a
  `#!/usr/bin/env python3` line; it needs Python 3.11+ with the `kubernetes` and `PyYAML`
  packages, and says so when they are missing;
- `LICENSE` (Apache-2.0, guestha's licence; krew's own validation wants one in the archive).
Every entry is stored uncompressed (no zlib version can change the bytes), dated
1980-01-01, sorted, with fixed modes, so the bytes depend on the sources alone.

    python3 -m testbed.pluginarchive OUT_DIR [--manifest plugins/guestha.yaml]
writes OUT_DIR/kubectl-guestha-vVERSION.zip and prints its sha256; with --manifest it also
writes the manifest for that archive.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "operator"
LICENSE = ROOT / "LICENSE"  # guestha's licence, the Apache-2.0 text
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
HOMEPAGE = "https://github.com/guestha/guestha"
PLATFORMS = ("linux", "darwin")  # a Python zipapp: any architecture; no Windows launcher yet

LAUNCHER = b'''"""kubectl-guestha, as krew installs it: guestha.cli with the user's python3."""
import sys

if sys.version_info < (3, 11):
    sys.exit("kubectl-guestha needs Python 3.11 or newer, this is " + sys.version.split()[0])
try:
    import kubernetes  # noqa: F401
    import yaml  # noqa: F401
except ImportError as e:
    sys.exit(f"kubectl-guestha needs the Python packages kubernetes and PyYAML: {e}")

from guestha.cli.main import main

sys.exit(main())
'''


def version() -> str:
    """guestha's version, from the sources packed (guestha.__version__)."""
    for line in (SOURCE / "guestha" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip('"')
    raise ValueError("operator/guestha/__init__.py has no __version__")


def _zip(entries: dict[str, tuple[bytes, int]]) -> bytes:
    """A zip of `entries` (name -> data, mode), the same bytes for the same entries."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name in sorted(entries):
            data, mode = entries[name]
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.create_system = 3  # unix: the mode below counts
            info.external_attr = (0o100000 | mode) << 16
            z.writestr(info, data)
    return out.getvalue()


def launcher() -> bytes:
    """The kubectl-guestha zipapp: shebang line, then a zip of the CLI's sources."""
    entries = {"__main__.py": (LAUNCHER, 0o644),
               "guestha/__init__.py": ((SOURCE / "guestha/__init__.py").read_bytes(), 0o644)}
    for path in sorted((SOURCE / "guestha" / "cli").glob("*.py")):
        entries[f"guestha/cli/{path.name}"] = (path.read_bytes(), 0o644)
    return b"#!/usr/bin/env python3\n" + _zip(entries)


def archive() -> bytes:
    return _zip({"kubectl-guestha": (launcher(), 0o755), "LICENSE": (LICENSE.read_bytes(), 0o644)})


def archive_name() -> str:
    return f"kubectl-guestha-v{version()}.zip"


def manifest(sha256: str) -> dict[str, object]:
    """krew's Plugin manifest for the archive of that sha256."""
    tag = f"v{version()}"
    return {
        "apiVersion": "krew.googlecontainertools.github.com/v1alpha2",
        "kind": "Plugin",
        "metadata": {"name": "guestha"},
        "spec": {
            "version": tag,
            "homepage": HOMEPAGE,
            "shortDescription": "Status, switchovers, freeze and clear of guestha groups",
            "description": (
                "kubectl guestha drives guestha, in-guest high availability for KubeVirt\n"
                "virtual machines: `status` shows clusters, members and service groups\n"
                "at a glance (like VCS's hastatus -sum, or -o json|yaml), `switch` moves a\n"
                "group (a Switchover; --wait follows it), `freeze`, `unfreeze` and `clear`\n"
                "change a group, and `events` lists guestha's Events.\n"),
            "caveats": ("kubectl-guestha runs with the python3 on your PATH: it needs\n"
                        "Python 3.11+ with the kubernetes and PyYAML packages\n"
                        "(pip install kubernetes pyyaml).\n"),
            "platforms": [{
                "selector": {"matchExpressions": [
                    {"key": "os", "operator": "In", "values": list(PLATFORMS)}]},
                "uri": f"{HOMEPAGE}/releases/download/{tag}/{archive_name()}",
                "sha256": sha256,
                "bin": "kubectl-guestha",
                "files": [{"from": "kubectl-guestha", "to": "."},
                          {"from": "LICENSE", "to": "."}],
            }],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line text as YAML literal blocks, as krew-index's manifests write it."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def manifest_text(sha256: str) -> str:
    return ("# Generated by hack/plugin-archive (python3 -m testbed.pluginarchive): do not edit;\n"
            "# tests/unit/test_plugin_archive.py fails when it is stale.\n"
            + yaml.dump(manifest(sha256), Dumper=_Dumper, sort_keys=False, width=100))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the archive into")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="also write krew's manifest for the archive here")
    args = parser.parse_args(argv)
    data = archive()
    sha256 = hashlib.sha256(data).hexdigest()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / archive_name()).write_bytes(data)
    if args.manifest is not None:
        args.manifest.write_text(manifest_text(sha256))
    print(sha256)
    return 0


if __name__ == "__main__":
    sys.exit(main())
