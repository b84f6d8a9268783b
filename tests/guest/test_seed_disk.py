"""The seed disk as the guest's cloud-init finds it: an ISO 9660 image labelled cidata
whose files keep their names (cloud-init reads user-data and meta-data by name) and their
bytes. The booted guest of test_qemu_guest proves cloud-init takes it; this says what it
is, without a boot."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from guestimage import seed

pytestmark = pytest.mark.guest


def isoinfo(*args: str) -> bytes:
    return subprocess.run(["isoinfo", *args], check=True, capture_output=True).stdout


def test_the_seed_is_an_iso_labelled_cidata_with_the_files_by_name(tmp_path: Path) -> None:
    user_data = b"Content-Type: multipart/mixed; boundary=x\n\n--x--\n" + bytes(range(256))
    data = seed.Seed(user_data, "web-a.apps", "web-a", b"version: 2\nethernets: {}\n")
    iso = seed.write_iso(data, tmp_path / "cidata.iso")
    assert "Volume id: cidata" in isoinfo("-d", "-i", str(iso)).decode()
    for name, content in data.files().items():
        assert isoinfo("-i", str(iso), "-R", "-x", f"/{name}") == content, name
        assert isoinfo("-i", str(iso), "-J", "-x", f"/{name}") == content, name
