"""Network namespaces joined by a bridge, one per agent, so that links can be cut.

The agent tier's stand-in for a guest network when whole guest hosts are not needed:
heartbeats, quorum and partitions between real agent processes. Needs root and iproute2
(can_use_netns).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def can_use_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


@dataclass
class Lan:
    """`count` guest namespaces on 10.<net>.0.0/24, plus a host-side link for the client.

    Names and the subnet carry this process's id (see `lan`): other checkouts on the same
    machine run these tests at the same time, and must not take each other's links down.
    """

    prefix: str
    count: int
    net: int = 231

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}-br"

    def node_ns(self, i: int) -> str:
        return f"{self.prefix}-n{i}"

    def address(self, i: int) -> str:
        return f"10.{self.net}.0.{i + 1}"

    @property
    def host_address(self) -> str:
        return f"10.{self.net}.0.254"

    def host_link(self) -> str:
        return f"{self.prefix}-h"

    def up(self) -> None:
        self.down()
        _ip("netns", "add", self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        _ip("-n", self.bridge_ns, "link", "set", "lo", "up")
        for i in range(self.count):
            ns = self.node_ns(i)
            _ip("netns", "add", ns)
            _ip("link", "add", f"{self.prefix}-v{i}", "type", "veth", "peer", "name",
                f"{self.prefix}-b{i}")
            _ip("link", "set", f"{self.prefix}-v{i}", "netns", ns, "name", "eth0")
            _ip("link", "set", f"{self.prefix}-b{i}", "netns", self.bridge_ns)
            _ip("-n", self.bridge_ns, "link", "set", f"{self.prefix}-b{i}", "master", "br0",
                "up")
            _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        # The test process (the "operator") reaches the guests through one more veth.
        _ip("link", "add", self.host_link(), "type", "veth", "peer", "name",
            f"{self.prefix}-hb")
        _ip("link", "set", f"{self.prefix}-hb", "netns", self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "set", f"{self.prefix}-hb", "master", "br0", "up")
        _ip("addr", "add", f"{self.host_address}/24", "dev", self.host_link())
        _ip("link", "set", self.host_link(), "up")

    def cut(self, i: int) -> None:
        """Cuts guest i off: its bridge port goes down (peers and operator lose it)."""
        _ip("-n", self.bridge_ns, "link", "set", f"{self.prefix}-b{i}", "down")

    def mend(self, i: int) -> None:
        _ip("-n", self.bridge_ns, "link", "set", f"{self.prefix}-b{i}", "up")

    def _outgoing_rule(self, port: int) -> list[str]:
        return ["to", f"10.{self.net}.0.0/24", "ipproto", "udp", "dport", str(port),
                "blackhole"]

    def drop_outgoing_udp(self, i: int, port: int) -> None:
        """Guest i can no longer send UDP to `port` on the LAN; everything else still
        flows, inbound datagrams included (a one-way break of its heartbeats).

        A policy-routing rule in the guest's namespace (`ip rule ... blackhole`): this
        kernel has neither netfilter tools nor tc actions, and the rule is just as real a
        break of the sending path (the sender's sendto fails, nothing leaves the guest).
        """
        _ip("-n", self.node_ns(i), "rule", "add", *self._outgoing_rule(port))

    def allow_outgoing_udp(self, i: int, port: int) -> None:
        _ip("-n", self.node_ns(i), "rule", "del", *self._outgoing_rule(port), check=False)

    def down(self) -> None:
        _ip("link", "del", self.host_link(), check=False)
        for i in range(self.count):
            _ip("netns", "del", self.node_ns(i), check=False)
        _ip("netns", "del", self.bridge_ns, check=False)


@contextmanager
def lan(tag: str, count: int) -> Iterator[Lan]:
    """A Lan named after `tag` (two letters) and this process, on a subnet of its own."""
    pid = os.getpid()
    network = Lan(f"{tag}{pid % 10000}", count, 100 + pid % 100)
    network.up()
    try:
        yield network
    finally:
        network.down()
