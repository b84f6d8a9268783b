"""IP: an address brought up on a guest interface (VCS IP agent, Pacemaker IPaddr2).

online = `ip addr add ADDRESS/PREFIX dev INTERFACE` (IPv6 without duplicate address
detection, so the address is usable at once) and, for IPv4, a gratuitous ARP with
arping(8) when it is installed, so neighbours learn the new owner; monitor = the address is
listed by `ip -o addr show dev INTERFACE`; offline and clean = `ip addr del`. Without
`interface`, the interface of the default route is used.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Mapping

from guestha.protocol import TYPE_CHECKING
from guestha.protocol.addresses import packed

from .base import ActionError, Attr, MonitorResult, Resource, ResourceContext
from .programs import run

if TYPE_CHECKING:
    import ipaddress
    from typing import Any

_IFNAME = re.compile(r"^[^\s/:]{1,15}$")


def _address(value: Any) -> str | None:
    if packed(value) is None:
        return f"not an IPv4 or IPv6 address: {value!r}"
    return None


def _interface(value: Any) -> str | None:
    if not _IFNAME.match(value):
        return f"not an interface name (1-15 characters, no spaces, '/' or ':'): {value!r}"
    return None


def parse_addresses(text: str) -> list[tuple[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                                             str]]:
    """(interface, address/prefix, flags) from `ip -o addr show` output."""
    import ipaddress  # here, not with the agent: only IP resources need it

    found: list[tuple[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface, str]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[2] not in ("inet", "inet6"):
            continue
        name = parts[1].split("@")[0]
        try:
            address = ipaddress.ip_interface(parts[3])
        except ValueError:
            continue
        found.append((name, address, " ".join(parts[4:])))
    return found


def parse_default_route(text: str) -> str | None:
    """The device of the first default route in `ip route show default` output."""
    for line in text.splitlines():
        parts = line.split()
        if "dev" in parts[:-1]:
            return parts[parts.index("dev") + 1]
    return None


def _have_arping() -> bool:
    """Whether the guest has arping (for the gratuitous ARP after an IPv4 address is added).
    shutil is imported here, by IP resources only, not with the agent (see
    agent.store.remove_folder)."""
    import shutil

    return shutil.which("arping") is not None


class IP(Resource):
    """An IP address on an interface."""

    type_name = "IP"
    schema = {
        "address": Attr("string", required=True, check=_address),
        "prefixLength": Attr("int"),
        "interface": Attr("string", check=_interface),
    }

    def __init__(self, context: ResourceContext, attributes: Mapping[str, Any]) -> None:
        super().__init__(context, attributes)
        import ipaddress  # see parse_addresses

        self.address = ipaddress.ip_address(attributes["address"])
        self.prefix: int = int(attributes.get("prefixLength",
                                              32 if self.address.version == 4 else 128))
        self.interface: str | None = attributes.get("interface")

    @classmethod
    def validate(cls, attributes: Mapping[str, Any]) -> list[str]:
        errors = super().validate(attributes)
        prefix = attributes.get("prefixLength")
        if not errors and prefix is not None:
            bits = 128 if ":" in attributes["address"] else 32  # IPv6, or IPv4
            if not 0 <= prefix <= bits:
                errors.append(f"attributes.prefixLength: must be 0-{bits} for "
                              f"{attributes['address']}, got {prefix}")
        return errors

    def _ip(self, timeout: float, *args: str) -> tuple[int, str]:
        done = run(["ip", *args], timeout, f"ip {' '.join(args[:2])}", owner=self)
        return done.returncode, done.output

    def _device(self, timeout: float) -> str:
        if self.interface:
            return self.interface
        family = "-4" if self.address.version == 4 else "-6"
        code, output = self._ip(timeout, family, "route", "show", "default")
        device = parse_default_route(output) if code == 0 else None
        if device is None:
            raise ActionError("attributes.interface: not given, and this guest has no "
                              "default route to take it from")
        return device

    def _find(self, timeout: float) -> list[tuple[str, ipaddress.IPv4Interface |
                                                  ipaddress.IPv6Interface, str]]:
        """Where the address is configured now (interface, address/prefix, flags)."""
        code, output = self._ip(timeout, "-o", "addr", "show")
        if code != 0:
            raise ActionError(f"ip addr show failed ({code}): {output.strip()[:300]}")
        return [entry for entry in parse_addresses(output) if entry[1].ip == self.address]

    def monitor(self, timeout: float) -> MonitorResult:
        try:
            device = self._device(timeout)
            found = self._find(timeout)
        except ActionError as e:
            return MonitorResult.unknown(str(e))
        here = [entry for entry in found if entry[0] == device]
        if here:
            _, address, flags = here[0]
            if "dadfailed" in flags:
                return MonitorResult.offline(f"{address} on {device}: duplicate address "
                                             "detected on the network")
            return MonitorResult.online(f"{address} on {device}")
        if found:
            return MonitorResult.offline(f"{self.address} is on {found[0][0]}, not {device}")
        return MonitorResult.offline(f"{self.address} is not configured")

    def online(self, timeout: float) -> None:
        device = self._device(timeout)
        if any(entry[0] == device for entry in self._find(timeout)):
            return
        args = ["addr", "add", f"{self.address}/{self.prefix}", "dev", device]
        if self.address.version == 6:
            args.append("nodad")
        code, output = self._ip(timeout, *args)
        if code != 0:
            raise ActionError(f"ip addr add {self.address}/{self.prefix} dev {device} failed: "
                              f"{output.strip()[:300]}")
        if self.address.version == 4 and _have_arping():
            threading.Thread(target=self._announce, args=(device,), daemon=True,
                             name=f"arping-{self.address}").start()

    def _announce(self, device: str) -> None:
        """Gratuitous ARP, best effort (neighbours update their caches sooner)."""
        with contextlib.suppress(ActionError):
            run(["arping", "-q", "-U", "-c", "2", "-I", device, str(self.address)], 5.0,
                "arping")

    def _delete(self, timeout: float) -> None:
        device = self._device(timeout)
        for name, address, _ in self._find(timeout):
            if name != device:
                continue
            code, output = self._ip(timeout, "addr", "del", str(address), "dev", device)
            if code != 0:
                raise ActionError(f"ip addr del {address} dev {device} failed: "
                                  f"{output.strip()[:300]}")

    def offline(self, timeout: float) -> None:
        self._delete(timeout)

    def clean(self, timeout: float) -> None:
        self._delete(timeout)
