"""The guest tier's pure parts: the image's cache key, the seed's files, and the qemu
command line's promises (the cached image is never written, the watchdog resets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guestimage import build, qemu, recipe, seed

pytestmark = pytest.mark.unit


def test_the_cache_key_follows_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    key = recipe.key()
    assert key == recipe.key() and len(key) == 16
    assert build.image().folder.name == f"guest-image-{key}"
    monkeypatch.setattr(recipe, "CHROOT_PACKAGES", (*recipe.CHROOT_PACKAGES, "strace"))
    assert recipe.key() != key
    monkeypatch.undo()
    monkeypatch.setattr(recipe, "SCRIPT_VERSION", recipe.SCRIPT_VERSION + 1)
    assert recipe.key() != key


def test_the_image_has_the_watchdog_kernel_and_what_the_agent_needs() -> None:
    # linux-image-cloud-amd64 has no i6300esb driver; the agent runs on the guest's python3
    assert "linux-image-amd64" in recipe.CHROOT_PACKAGES
    assert {"cloud-init", "qemu-guest-agent", "python3"} <= set(recipe.CHROOT_PACKAGES)
    assert "systemd-sysv" in recipe.BASE_PACKAGES


def test_seed_files_are_virt_launchers() -> None:
    files = seed.Seed(b"#cloud-config\n{}\n", seed.kubevirt_instance_id("web-a", "apps"),
                      "web-a").files()
    assert sorted(files) == ["meta-data", "user-data"]
    assert json.loads(files["meta-data"]) == {"instance-id": "web-a.apps",
                                              "local-hostname": "web-a"}
    assert files["user-data"] == b"#cloud-config\n{}\n"
    with_network = seed.Seed(b"x", "i", "h", b"version: 2\n").files()
    assert with_network["network-config"] == b"version: 2\n"


def test_a_seed_without_an_instance_id_is_refused() -> None:
    with pytest.raises(ValueError, match="instance_id"):
        seed.Seed(b"#cloud-config\n", "", "web-a").files()


def test_the_qemu_command_line(tmp_path: Path) -> None:
    image = build.Image(tmp_path / "image")
    machine = qemu.Machine(image, tmp_path / "cidata.iso", tmp_path / "guest", {4321: 7480})
    argv = machine.argv()
    line = " ".join(argv)
    assert f"file={image.root},if=virtio,format=raw,snapshot=on" in argv  # never written
    assert f"file={tmp_path / 'cidata.iso'},if=virtio,format=raw,readonly=on" in argv
    assert "hostfwd=tcp:127.0.0.1:4321-:7480" in line
    assert f"name={qemu.GUEST_AGENT_PORT_NAME}" in line
    assert argv[argv.index("i6300esb") + 1:argv.index("i6300esb") + 3] == [
        "-action", "watchdog=reset"]
    assert "-no-reboot" not in argv  # a reset must boot the guest again
    assert "i6300esb" not in qemu.Machine(image, tmp_path / "s", tmp_path, watchdog=False).argv()
