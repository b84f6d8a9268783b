"""What the guest image is made of, and the cache key that names it.

One definition: the build follows these lists, and `key()` hashes them with the suite and
SCRIPT_VERSION, so changing any of them (or how the build uses them: bump SCRIPT_VERSION)
makes a new image beside the old one instead of reusing a stale one.

Why these packages (docs/architecture.md, "Test tiers"): debootstrap's minbase has no init,
so systemd-sysv; udev loads the virtio and i6300esb modules and starts qemu-guest-agent
when its virtio port appears; ifupdown and isc-dhcp-client are what cloud-init's Debian
network renderer drives; kmod loads modules. In the chroot: cloud-init (22.4 on bookworm)
with python3-cffi-backend (else its recommends pull in more), qemu-guest-agent, python3
(3.11: the agent's interpreter), linux-image-amd64 (the cloud kernel flavour has no
i6300esb driver) and netbase (/etc/protocols, /etc/services for Python's socket module).
"""

from __future__ import annotations

import hashlib
import json

SUITE = "bookworm"
# Bump when the build's steps change in a way the lists below do not show.
SCRIPT_VERSION = 1
# debootstrap --variant=minbase --include=...
BASE_PACKAGES = ("systemd-sysv", "udev", "ifupdown", "isc-dhcp-client", "iproute2", "kmod")
# apt-get install --no-install-recommends ... inside the chroot
CHROOT_PACKAGES = ("cloud-init", "qemu-guest-agent", "python3", "linux-image-amd64",
                   "netbase", "python3-cffi-backend")
IMAGE_SIZE = "2G"
ROOT_DEVICE = "/dev/vda"  # the first virtio disk: the image, attached first
FSTAB = f"{ROOT_DEVICE} / ext4 errors=remount-ro 0 1\n"
# The image's own cloud-init defaults: minbase has no locales, and cloud-init warns
# about a missing default locale otherwise.
CLOUD_CFG = "# guestimage: minbase has no locales\nlocale: C.UTF-8\n"
KERNEL_CMDLINE = f"root={ROOT_DEVICE} rw console=ttyS0"


def recipe() -> dict[str, object]:
    """Everything the image depends on, as one JSON-able document (kept in the image's
    manifest too)."""
    return {"suite": SUITE, "scriptVersion": SCRIPT_VERSION,
            "basePackages": list(BASE_PACKAGES), "chrootPackages": list(CHROOT_PACKAGES),
            "imageSize": IMAGE_SIZE, "fstab": FSTAB, "cloudCfg": CLOUD_CFG}


def key() -> str:
    """The image's cache key: 16 hex digits of the recipe's SHA-256."""
    text = json.dumps(recipe(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
