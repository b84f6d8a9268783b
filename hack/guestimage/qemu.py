"""The qemu command line of a guest as KubeVirt's virt-launcher gives it the parts guestha
relies on: a virtio disk for the root file system and one for the cidata seed, a network
card (here qemu's user-mode network, the agent's port forwarded to 127.0.0.1), the
virtio-serial port `org.qemu.guest_agent.0` for qemu-guest-agent, and an i6300esb watchdog
whose expiry resets the guest.

Software emulation (TCG): /dev/kvm exists on the test machines but KVM does not work
(docs/architecture.md). The kernel and initrd are given to qemu directly (-kernel,
-initrd): the image has no boot loader, and a reset boots the same kernel again.
QMP (-qmp) is where the watchdog's expiry shows (a WATCHDOG event), since qemu prints
nothing about it; the serial console goes to a file.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from guestimage import recipe
from guestimage.build import Image

QEMU = "qemu-system-x86_64"
GUEST_AGENT_PORT_NAME = "org.qemu.guest_agent.0"
MEMORY_MIB = 512
CPUS = 1


def free_port() -> int:
    """A TCP port of 127.0.0.1 free now (for a hostfwd)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Machine:
    """One guest's qemu: its image, its seed, and the folder for its sockets and logs."""

    image: Image
    seed: Path
    folder: Path
    # host 127.0.0.1 port -> guest TCP port
    forwards: dict[int, int] = field(default_factory=dict)
    watchdog: bool = True
    memory_mib: int = MEMORY_MIB
    cpus: int = CPUS
    # the serial console on this terminal (a developer's boot) instead of serial.log
    console: bool = False

    @property
    def qmp_socket(self) -> Path:
        return self.folder / "qmp.sock"

    @property
    def guest_agent_socket(self) -> Path:
        return self.folder / "qga.sock"

    @property
    def serial_log(self) -> Path:
        return self.folder / "serial.log"

    def argv(self) -> list[str]:
        """The command line. The root image is attached with snapshot=on: the guest's
        writes go to a temporary overlay that lives as long as this qemu (resets
        included), never into the cached image."""
        forwards = "".join(f",hostfwd=tcp:127.0.0.1:{host}-:{guest}"
                           for host, guest in sorted(self.forwards.items()))
        argv = [
            QEMU, "-name", self.folder.name,
            "-machine", "q35", "-accel", "tcg", "-cpu", "max",
            "-smp", str(self.cpus), "-m", str(self.memory_mib),
            "-display", "none", "-nodefaults", "-no-user-config",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", recipe.KERNEL_CMDLINE,
            "-drive", f"file={self.image.root},if=virtio,format=raw,snapshot=on",
            "-drive", f"file={self.seed},if=virtio,format=raw,readonly=on",
            "-netdev", f"user,id=net0{forwards}",
            "-device", "virtio-net-pci,netdev=net0",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=qga0,path={self.guest_agent_socket},server=on,wait=off",
            "-device", f"virtserialport,chardev=qga0,name={GUEST_AGENT_PORT_NAME}",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
            "-serial", "mon:stdio" if self.console else f"file:{self.serial_log}",
        ]
        if self.watchdog:
            argv += ["-device", "i6300esb", "-action", "watchdog=reset"]
        return argv
