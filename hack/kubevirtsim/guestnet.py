"""The guests' network: one bridge, a network namespace and a veth per guest, addresses.

Every guest host gets its own address on the bridge ``ghbr0`` in the root namespace
(10.213.0.0/16, the host is 10.213.0.1), so the operator on the host reaches each guest
and guests reach each other, as VMIs on a pod network do. The bridge and the addresses are
machine-wide: every simulator run and test session on this host shares them, so addresses
come from one registry (NETWORK_STATE/network.json) under one file lock, each entry naming
its netns and its simulator's state folder, and teardown leaves the guests of other runs
alone. Root only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BRIDGE = "ghbr0"
BRIDGE_ADDRESS = "10.213.0.1"
PREFIX_LENGTH = 16
NETNS_PREFIX = "gh-"
VETH_PREFIX = "ghv"
# Machine-wide, because the bridge and its addresses are: every simulator run on this
# host (any state_dir) allocates from the same registry, under one lock.
NETWORK_STATE = Path("/run/kubevirtsim")
# Exactly the names this module makes (other tools' "gh..." devices are not ours).
_OUR_NETNS = re.compile(rf"^{NETNS_PREFIX}[0-9a-f]{{8}}$")
_OUR_VETH = re.compile(rf"^{VETH_PREFIX}[0-9a-f]{{8}}$")
_RESERVATION_GRACE = 60.0  # seconds an address stays taken before its netns exists


class GuestHostError(RuntimeError):
    """A guest host could not be booted, reached or cleaned up (its network included)."""


def netns_name(guest_id: str) -> str:
    return f"{NETNS_PREFIX}{guest_id}"


def veth_name(guest_id: str) -> str:
    return f"{VETH_PREFIX}{guest_id}"


# --------------------------------------------------------------------------- helpers


def run(
    argv: list[str], *, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a command (ip, mostly); GuestHostError with its stderr if it fails and `check`."""
    result = subprocess.run(argv, input=input, capture_output=True)
    if check and result.returncode != 0:
        raise GuestHostError(
            f"{' '.join(argv)} failed ({result.returncode}): "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    return result


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (made if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def netns_exists(name: str) -> bool:
    return os.path.ismount(f"/run/netns/{name}")


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def kill_netns_processes(netns: str) -> None:
    if not netns_exists(netns):
        return
    for line in run(["ip", "netns", "pids", netns], check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(line), signal.SIGKILL)


def delete_netns(netns: str) -> None:
    if netns_exists(netns) or os.path.lexists(f"/run/netns/{netns}"):
        run(["ip", "netns", "delete", netns], check=False)


def delete_link(name: str) -> None:
    if link_exists(name):
        run(["ip", "link", "delete", name], check=False)


# --------------------------------------------------------------------------- addresses


def _registry_path() -> Path:
    return NETWORK_STATE / "network.json"


def _load_registry() -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(_registry_path().read_text())
        return dict(data.get("addresses", {}))
    except (OSError, ValueError):
        return {}


def _save_registry(addresses: dict[str, dict[str, Any]]) -> None:
    path = _registry_path()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"addresses": addresses}, indent=1, sort_keys=True))
    tmp.replace(path)


def _entry_live(entry: dict[str, Any]) -> bool:
    return netns_exists(str(entry.get("netns", ""))) or (
        time.time() - float(entry.get("since", 0)) < _RESERVATION_GRACE
        and not entry.get("released")
    )


def ensure_bridge() -> None:
    """The bridge guests hang off, with the host's address on it (idempotent)."""
    with locked(NETWORK_STATE / "network.lock"):
        if not link_exists(BRIDGE):
            run(
                [
                    "ip",
                    "link",
                    "add",
                    BRIDGE,
                    "type",
                    "bridge",
                    "stp_state",
                    "0",
                    "forward_delay",
                    "0",
                ]
            )
            # Bridged guest-to-guest traffic skips iptables where the kernel allows it per
            # bridge; a global bridge-nf-call-iptables=1 still applies (see _check_filter).
            run(
                [
                    "ip",
                    "link",
                    "set",
                    BRIDGE,
                    "type",
                    "bridge",
                    "nf_call_iptables",
                    "0",
                    "nf_call_arptables",
                    "0",
                ],
                check=False,
            )
        addresses = run(["ip", "-4", "-o", "addr", "show", "dev", BRIDGE]).stdout.decode()
        if f" {BRIDGE_ADDRESS}/" not in addresses:
            run(["ip", "addr", "add", f"{BRIDGE_ADDRESS}/{PREFIX_LENGTH}", "dev", BRIDGE])
        run(["ip", "link", "set", BRIDGE, "up"])
    _check_filter()


_filter_checked = False


def _check_filter() -> None:
    """Warn once when netfilter may drop bridged traffic (br_netfilter with iptables rules)."""
    global _filter_checked
    if _filter_checked:
        return
    _filter_checked = True
    try:
        calls = Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip()
    except OSError:
        return  # br_netfilter not loaded: bridged frames never meet iptables
    try:
        tables = Path("/proc/net/ip_tables_names").read_text().split()
    except OSError:
        tables = []
    if calls == "1" and "filter" in tables:
        log.warning(
            "br_netfilter passes bridged traffic to iptables and a filter table "
            "exists: a FORWARD DROP policy would cut guests off from each other"
        )


def allocate_address(key: str, netns: str, state_dir: Path) -> str:
    """A free 10.213.x.y, starting from a hash of the key (so a VMI tends to keep its
    address), never one a live guest of any simulator run holds."""
    span = 254 * 254
    start = int(hashlib.sha1(key.encode()).hexdigest(), 16) % span
    with locked(NETWORK_STATE / "network.lock"):
        registry = {a: e for a, e in _load_registry().items() if _entry_live(e)}
        for offset in range(span):
            index = (start + offset) % span
            address = f"10.213.{index // 254 + 1}.{index % 254 + 1}"
            if address not in registry:
                registry[address] = {
                    "netns": netns,
                    "key": key,
                    "state_dir": str(state_dir),
                    "since": time.time(),
                }
                _save_registry(registry)
                return address
    raise GuestHostError("no free guest address left in 10.213.0.0/16")


def release_address(address: str, netns: str) -> None:
    with locked(NETWORK_STATE / "network.lock"):
        registry = _load_registry()
        entry = registry.get(address)
        if entry is not None and entry.get("netns") == netns:
            del registry[address]
            _save_registry(registry)


def mac_for(address: str) -> str:
    """A locally administered-looking, QEMU-prefixed MAC derived from the address."""
    third, fourth = (int(p) for p in address.split(".")[2:])
    return f"52:54:00:d5:{third:02x}:{fourth:02x}"


def create_network(netns: str, veth: str, address: str, mac: str) -> None:
    run(["ip", "netns", "add", netns])
    run(
        ["ip", "-batch", "-"],
        input=(
            f"link add {veth} type veth peer name eth0 netns {netns}\n"
            f"link set {veth} master {BRIDGE} up\n"
        ).encode(),
    )
    run(
        ["ip", "-n", netns, "-batch", "-"],
        input=(
            "link set lo up\n"
            f"link set eth0 address {mac}\n"
            f"addr add {address}/{PREFIX_LENGTH} dev eth0\n"
            "link set eth0 up\n"
            f"route add default via {BRIDGE_ADDRESS}\n"
        ).encode(),
    )


# --------------------------------------------------------------------------- clean-up


def release(netns: str, veth: str, address: str) -> None:
    """Remove one guest's network: its processes, netns, veth and address."""
    kill_netns_processes(netns)
    delete_netns(netns)
    delete_link(veth)
    if address:
        release_address(address, netns)


def release_state_dir(state_dir: Path) -> None:
    """Remove the network of every guest a run with this state folder registered."""
    with locked(NETWORK_STATE / "network.lock"):
        registry = _load_registry()
        stale = {a: e for a, e in registry.items() if e.get("state_dir") == str(state_dir)}
        for entry in stale.values():
            netns = str(entry.get("netns", ""))
            kill_netns_processes(netns)
            delete_netns(netns)
            delete_link(VETH_PREFIX + netns.removeprefix(NETNS_PREFIX))
        if stale:
            _save_registry({a: e for a, e in registry.items() if a not in stale})


def teardown_network(force: bool = False) -> bool:
    """Remove the guest network: leftover guest namespaces (no process in them), their
    veths and addresses, and the bridge once no guest uses it. Returns True when the
    bridge is gone.

    Guests still running (another simulator run or test session on this machine shares
    the bridge) are left alone, with their namespaces and the bridge, unless ``force``:
    then every guest namespace of this machine is emptied (SIGKILL) and removed too.
    """
    if os.geteuid() != 0:
        return not link_exists(BRIDGE)
    with locked(NETWORK_STATE / "network.lock"):
        registry = _load_registry()
        names = {str(e.get("netns", "")) for e in registry.values()}
        if os.path.isdir("/run/netns"):
            names |= {n for n in os.listdir("/run/netns") if _OUR_NETNS.match(n)}
        # A guest booting in another process has its netns before its first process.
        young = {
            str(e.get("netns"))
            for e in registry.values()
            if time.time() - float(e.get("since", 0)) < _RESERVATION_GRACE
        }
        busy: set[str] = set()
        for netns in sorted(n for n in names if n):
            if not force and (netns in young or (netns_exists(netns) and _netns_pids(netns))):
                busy.add(netns)
                continue
            kill_netns_processes(netns)
            delete_netns(netns)
            delete_link(VETH_PREFIX + netns.removeprefix(NETNS_PREFIX))
        _save_registry({a: e for a, e in registry.items() if e.get("netns") in busy})
        if busy:
            log.info(
                "guest network kept: %d guest(s) still running (%s)",
                len(busy),
                ", ".join(sorted(busy)),
            )
            return False
        for link in os.listdir("/sys/class/net"):
            if _OUR_VETH.match(link):
                delete_link(link)
        delete_link(BRIDGE)
        return True


def _netns_pids(netns: str) -> list[int]:
    result = run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in result.stdout.split() if p.isdigit()]
