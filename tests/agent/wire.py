"""An attacker's tools on a guest's network, run inside its namespace (`ip netns exec`).

    python3 wire.py capture IFACE SRC DPORT COUNT SECONDS   -> JSON list of base64 payloads
    python3 wire.py send SRC DST DPORT INTERVAL < JSON list of base64 payloads

`capture` reads UDP datagrams from SRC to port DPORT off the interface (an AF_PACKET
socket: what anyone with root on a guest of the LAN can see). `send` sends payloads to
DST:DPORT as UDP from SRC, any source address (a raw IP socket builds the headers, as a
forger would). Standard library only; a test helper, not a test.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800


def capture(iface: str, source: str, port: int, count: int, seconds: float) -> list[str]:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    sock.bind((iface, 0))
    sock.settimeout(0.2)
    wanted = socket.inet_aton(source)
    found: list[str] = []
    deadline = time.monotonic() + seconds
    while len(found) < count and time.monotonic() < deadline:
        try:
            frame = sock.recv(65535)
        except TimeoutError:
            continue
        ip = frame[14:]
        if len(ip) < 20 or ip[9] != socket.IPPROTO_UDP or ip[12:16] != wanted:
            continue
        udp = ip[(ip[0] & 0x0F) * 4:]
        if len(udp) < 8 or struct.unpack("!H", udp[2:4])[0] != port:
            continue
        length = struct.unpack("!H", udp[4:6])[0]
        found.append(base64.b64encode(udp[8:length]).decode())
    return found


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def send(source: str, target: str, port: int, interval: float, payloads: list[bytes]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    src, dst = socket.inet_aton(source), socket.inet_aton(target)
    for payload in payloads:
        udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
        pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_UDP, len(udp))
        udp = udp[:6] + struct.pack("!H", _checksum(pseudo + udp) or 0xFFFF) + udp[8:]
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64,
                             socket.IPPROTO_UDP, 0, src, dst)
        sock.sendto(header + udp, (target, 0))
        time.sleep(interval)


if __name__ == "__main__":
    verb, args = sys.argv[1], sys.argv[2:]
    if verb == "capture":
        print(json.dumps(capture(args[0], args[1], int(args[2]), int(args[3]),
                                 float(args[4]))))
    elif verb == "send":
        send(args[0], args[1], int(args[2]), float(args[3]),
             [base64.b64decode(p) for p in json.load(sys.stdin)])
    else:
        sys.exit(f"unknown verb {verb!r}")
