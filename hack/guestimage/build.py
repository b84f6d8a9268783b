"""Build the guest image once and cache it: ~/.cache/guestha/guest-image-KEY/.

The folder holds `root.img` (ext4, the whole root file system, no partition table),
`vmlinuz` and `initrd.img` (booted with qemu's -kernel/-initrd, so no boot loader is
needed) and `manifest.json` (the recipe, the installed packages' versions, how long the
build took). KEY is recipe.key(), as the Go binaries' folders are named by their versions
(hack/testbed/build.py), so a changed recipe builds a new image and an unchanged one is
found in milliseconds.

Atomic and exclusive: the build happens in a temporary folder beside the cache entry and
is renamed into place at the end, so a folder named guest-image-KEY is always complete;
a lock file serialises builds, so two test sessions started together build once.
Needs root (debootstrap, chroot, mounts) and the host tools hack/setup installs
(debootstrap, e2fsprogs). GUESTHA_DEBIAN_MIRROR picks the Debian mirror (debootstrap's
default otherwise).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from guestimage import recipe

POLICY_RC_D = "#!/bin/sh\n# guestimage: nothing starts inside the build chroot\nexit 101\n"
CHROOT_MOUNTS = (("proc", "proc", "proc"), ("sysfs", "sys", "sysfs"),
                 ("/dev", "dev", None), ("devpts", "dev/pts", "devpts"))


class GuestImageError(RuntimeError):
    """The image cannot be built here; the message says what is missing."""


def cache_root() -> Path:
    """The guestha cache folder (XDG_CACHE_HOME or ~/.cache), as hack/testbed/build.py."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "guestha"


@dataclass(frozen=True)
class Image:
    """A built image's files."""

    folder: Path

    @property
    def root(self) -> Path:
        return self.folder / "root.img"

    @property
    def kernel(self) -> Path:
        return self.folder / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.folder / "initrd.img"

    @property
    def manifest(self) -> Path:
        return self.folder / "manifest.json"

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.root, self.kernel, self.initrd, self.manifest))


def image(key: str | None = None) -> Image:
    """Where the image of the current recipe (or of `key`) lives, built or not."""
    return Image(cache_root() / f"guest-image-{key or recipe.key()}")


def _log(message: str) -> None:
    print(f"guestimage: {message}", file=sys.stderr, flush=True)


def _run(args: list[str], **kwargs: object) -> None:
    _log("+ " + " ".join(args))
    subprocess.run(args, check=True, **kwargs)  # type: ignore[call-overload]


def _mounted_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first (from /proc/self/mountinfo)."""
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _unmount_all(root: Path) -> None:
    for point in _mounted_under(root):
        if subprocess.run(["umount", point]).returncode != 0:
            subprocess.run(["umount", "-l", point], check=True)


@contextlib.contextmanager
def _chroot_mounts(root: Path) -> Iterator[None]:
    """/proc, /sys, /dev and /dev/pts inside the chroot for apt's maintainer scripts;
    unmounted however the block ends."""
    try:
        for source, target, fstype in CHROOT_MOUNTS:
            where = root / target
            where.mkdir(parents=True, exist_ok=True)
            args = ["mount", "--bind", source, str(where)] if fstype is None else \
                ["mount", "-t", fstype, source, str(where)]
            _run(args)
            # Never let a mount below the chroot propagate to the host's (a shared /dev
            # would carry the chroot's devpts over the host's own).
            _run(["mount", "--make-private", str(where)])
        yield
    finally:
        _unmount_all(root)


def _remove_tree(path: Path) -> None:
    """rm -rf of a build folder, refused while anything is mounted below it (a bind mount
    of /dev left behind would otherwise be emptied with it)."""
    if not path.exists():
        return
    _unmount_all(path)
    left = _mounted_under(path)
    if left:
        raise RuntimeError(f"{path}: still mounted below it, not removed: {left}")
    shutil.rmtree(path)


def _debootstrap(root: Path) -> None:
    mirror = os.environ.get("GUESTHA_DEBIAN_MIRROR")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(recipe.BASE_PACKAGES)}",
          recipe.SUITE, str(root), *([mirror] if mirror else [])])


def _install(root: Path) -> None:
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text(POLICY_RC_D)
    policy.chmod(0o755)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C.UTF-8")
    with _chroot_mounts(root):
        _run(["chroot", str(root), "apt-get", "update", "-qq"], env=env)
        _run(["chroot", str(root), "apt-get", "install", "-y", "-qq",
              "--no-install-recommends", *recipe.CHROOT_PACKAGES], env=env)
        _run(["chroot", str(root), "apt-get", "clean"], env=env)
    policy.unlink()


def _configure(root: Path) -> None:
    (root / "etc/fstab").write_text(recipe.FSTAB)
    (root / "etc/cloud/cloud.cfg.d/90-guestimage.cfg").write_text(recipe.CLOUD_CFG)
    # Each boot of a fresh instance makes its own machine id (an empty file: systemd
    # fills it in at first boot).
    (root / "etc/machine-id").write_text("")
    with contextlib.suppress(FileNotFoundError):
        (root / "var/lib/dbus/machine-id").unlink()
    # The serial console takes root without a password: a developer's `guestimage boot`
    # can log in; the image has no network login at all.
    _run(["chroot", str(root), "passwd", "-d", "root"])
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)


def _packages(root: Path) -> dict[str, str]:
    out = subprocess.run(["chroot", str(root), "dpkg-query", "-W", "-f", "${Package} ${Version}\n"],
                         check=True, capture_output=True, text=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def _single(root: Path, pattern: str) -> Path:
    found = sorted((root / "boot").glob(pattern))
    if len(found) != 1:
        raise RuntimeError(f"{root}/boot: expected one {pattern}, found {found}")
    return found[0]


def _build_into(out: Path, work: Path) -> None:
    started = time.monotonic()
    root = work / "root"
    root.mkdir(parents=True)
    _debootstrap(root)
    bootstrapped = time.monotonic()
    _install(root)
    installed = time.monotonic()
    _configure(root)
    out.mkdir()
    shutil.copyfile(_single(root, "vmlinuz-*"), out / "vmlinuz")
    shutil.copyfile(_single(root, "initrd.img-*"), out / "initrd.img")
    packages = _packages(root)
    img = out / "root.img"
    _run(["truncate", "-s", recipe.IMAGE_SIZE, str(img)])
    _run(["mkfs.ext4", "-q", "-F", "-L", "guestroot", "-d", str(root), str(img)])
    done = time.monotonic()
    manifest = {"key": recipe.key(), "recipe": recipe.recipe(), "packages": packages,
                "seconds": {"debootstrap": round(bootstrapped - started, 1),
                            "install": round(installed - bootstrapped, 1),
                            "total": round(done - started, 1)}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def build(force: bool = False) -> Image:
    """The image of the current recipe, built when the cache lacks it (or `force`)."""
    target = image()
    if target.complete() and not force:
        return target
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / ".guest-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.complete() and not force:
            return target  # another session built it while this one waited
        if os.geteuid() != 0:
            raise GuestImageError("building the image needs root (debootstrap, chroot)")
        for tool in ("debootstrap", "mkfs.ext4", "chroot"):
            if shutil.which(tool) is None:
                raise GuestImageError(f"{tool} is missing (bash hack/setup installs it)")
        work = cache_root() / f".guest-image-{recipe.key()}.build"
        _remove_tree(work)  # a build that died half-way
        try:
            out = work / "image"
            _build_into(out, work)
            old = cache_root() / f".guest-image-{recipe.key()}.old"
            if target.folder.exists():
                _remove_tree(old)
                target.folder.rename(old)
            out.rename(target.folder)
            _remove_tree(old)
        finally:
            _remove_tree(work)
    _log(f"built {target.folder}")
    return target
