"""Many fake agents in one process, speaking the real channel protocol: for operator-scale
benchmarks (1,500 members), where 1,500 real agents (and guests) would not fit.

    hack/bench/run fakeagents --agents 1500 --folder DIR [--network 127.1.0.0] [--port 7480]
    hack/bench/run fakeagents --clusters clusters.json --folder DIR [--port 7480]

Each fake agent is an asyncio mutual-TLS server on its own loopback address (127.1.0.1,
127.1.0.2, ...; all of 127/8 is loopback on Linux) at the channel port, with a certificate
of its cluster's CA naming its member, and requires the operator's certificate, as the real
agent does. Each reports every peer of its configuration Up (heard, and hearing it), as a
healthy cluster's agents do. With `--agents`, all agents are members of one cluster whose
CA this process makes (kits.pki). With `--clusters`, each agent belongs to a cluster of the file
(a JSON list of {"cluster", "caCert", "caKey" (PEM text), "members": [{"name",
"address"}]}, e.g. the CAs the operator keeps in its `<cluster>-guestha-ca` Secrets), and
its serving certificate is issued from that cluster's CA as the operator's injection
issues it (guestha.channel.pki.issue_member: the member's name and its address).

It answers from guestha.protocol's own types: the status report, health, GET
and PUT /v1/config (epoch and operation id rules: StaleEpoch, replay with
Guestha-Replayed), group actions (online and offline take effect at once, with
CommandApplied and GroupState events), and the /v1/events long-poll with its ring of 4096
events, its stream per run and 410 EventsGone. No resources run: what is measured is the
operator's side.

Start-up writes the certificates into DIR and prints one JSON line: {"members":
[{"cluster", "name", "address", "port"}]}, with `--agents` also the files the operator
side needs: "ca", "operatorCert", "operatorKey".
Then it reads commands on stdin, one per line, and answers each with a JSON line:
`burst K` (every agent emits K events, each with `data.t` = time.time() of its emission),
`restart` (every agent starts a new run: new stream and incarnation, events from 1),
`stats` (this process's RSS, CPU seconds and open connections), `mark` (forget which
agents were asked for their status), `asked` (how many agents were asked for their status
since the last `mark`: an operator that (re)connects asks each once), `fault CLUSTER
GROUP` (the group's resource faults on the member where it is online: ResourceState,
ResourceFaulted and GroupState Faulted events; answers the member, or an error),
`failovers` (for each fault so far, the seconds from its events to the first `online`
command for that group reaching another member of the cluster: null while none did),
`quit`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ipaddress
import json
import os
import resource
import ssl
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from guestha.channel import pki as channel_pki
from guestha.protocol.commands import ActionAccepted, Command, ConfigApplied, parse_command
from guestha.protocol.constants import AGENT_PORT, HEARTBEAT_PORT, REPLAYED_HEADER
from guestha.protocol.desired import DESIRED_FIELDS, DesiredConfig
from guestha.protocol.events import (
    COMMAND_APPLIED,
    CONFIG_APPLIED,
    EPOCH_CHANGED,
    EVENTS_GONE,
    GROUP_STATE,
    RESOURCE_FAULTED,
    RESOURCE_STATE,
    Event,
    EventBatch,
    EventsGone,
)
from guestha.protocol.fields import FieldError
from guestha.protocol.keys import CLUSTER_KEY
from guestha.protocol.states import FAULTED, IDLE, OFFLINE, ONLINE, PEER_UP
from guestha.protocol.status import (
    EventCursor,
    GroupStatus,
    Health,
    HeartbeatStatus,
    PeerStatus,
    QuorumStatus,
    SelfFenceStatus,
    StatusReport,
    WatchdogStatus,
)
from kits.pki import Pki

RING = 4096  # events held, as the agent
MAX_POLL = 60.0  # seconds a long-poll may wait, as the agent
MAX_REQUEST = 1024 * 1024
VERSION = "fakeagent000000"


def rfc3339(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


@dataclass
class Fault:
    """One fault made by `fault`: where, when (monotonic), and when its failover's online
    command reached another member (None: not yet)."""

    cluster: str
    group: str
    member: str
    at: float
    online_at: float | None = None


class Faults:
    """The faults made so far, and the online commands that answer them."""

    def __init__(self) -> None:
        self.made: list[Fault] = []

    def online(self, cluster: str, group: str, member: str, at: float) -> None:
        for fault in self.made:
            if (fault.cluster, fault.group) == (cluster, group) and fault.member != member \
                    and fault.online_at is None and at >= fault.at:
                fault.online_at = at

    def seconds(self) -> list[float | None]:
        return [None if f.online_at is None else round(f.online_at - f.at, 6)
                for f in self.made]


class Refused(Exception):
    """A refusal with the agent's JSON error body (`body` replaces it when given)."""

    def __init__(self, status: int, reason: str, message: str,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {"status": status, "reason": reason, "message": message}


@dataclass
class FakeAgent:
    """One member's agent: its state, its event ring and its waiting long-polls."""

    cluster: str
    member: str
    address: str
    port: int
    started: float = field(default_factory=time.monotonic)
    incarnation: int = field(default_factory=time.time_ns)
    stream: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    seq: int = 0
    epoch: int = 0
    config: DesiredConfig | None = None
    groups: dict[str, GroupStatus] = field(default_factory=dict)
    events: collections.deque[Event] = field(default_factory=lambda: collections.deque(
        maxlen=RING))
    operations: dict[str, tuple[str, int, Any]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: {"accepted": 0, "requests": 0})
    open: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    asked: bool = False  # asked for its status since the last `mark`
    faults: Faults | None = None  # where online commands are reported (`fault`)

    def restart(self) -> None:
        """A new run: new stream and incarnation, events from 1 (waiting polls see 410)."""
        self.stream, self.incarnation, self.seq = uuid.uuid4().hex[:16], time.time_ns(), 0
        self.events.clear()
        self.emit("AgentStarted", {"member": self.member, "incarnation": self.incarnation})

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self.seq += 1
        self.events.append(Event(self.seq, kind, rfc3339(), data))
        self.wakeup.set()
        self.wakeup = asyncio.Event()

    # -- answers

    def status(self) -> StatusReport:
        now = rfc3339()
        return StatusReport(
            self.cluster, self.member, VERSION, self.incarnation, self.member,
            round(time.monotonic() - self.started, 3), self.epoch, None, dict(self.groups),
            None, self.peers(),
            QuorumStatus(2, 2, True, 0, True, now, now, (self.member,), ()),
            SelfFenceStatus(IDLE, "quorum", now, None, 0.0),
            WatchdogStatus(None, False, 0, False, None, None, 10.0),
            EventCursor(self.stream, self.seq),
            HeartbeatStatus(500, 3000, CLUSTER_KEY, {}),
            {**self.counters, "open": self.open})

    def peers(self) -> tuple[PeerStatus, ...]:
        """Every configured peer heard and hearing this agent, as a healthy cluster's
        agents report them (the operator counts a peer's word that a member is alive)."""
        if self.config is None:
            return ()
        return tuple(PeerStatus(p.member, p.address, p.port or HEARTBEAT_PORT, PEER_UP, 200,
                                True, 1, 1) for p in self.config.peers)

    def _command(self, path: str, body: Any, extra: frozenset[str]
                 ) -> tuple[Command, dict[str, Any], tuple[int, Any] | None]:
        """The command, the rest of its body, and its recorded answer when replayed."""
        command, rest = parse_command(body, extra)
        if command.epoch < self.epoch:
            raise Refused(409, "StaleEpoch", f"epoch {command.epoch} is older than epoch "
                          f"{self.epoch}, the newest this agent has seen")
        record = self.operations.get(command.operation_id)
        if record is not None:
            if record[0] != path:
                raise Refused(409, "OperationIdReused", "operation id used for another command")
            return command, rest, (record[1], record[2])
        if command.epoch > self.epoch:
            self.epoch = command.epoch
            self.emit(EPOCH_CHANGED, {"epoch": command.epoch})
        return command, rest, None

    def put_config(self, body: Any) -> tuple[int, Any, bool]:
        command, rest, replay = self._command("/v1/config", body, DESIRED_FIELDS)
        if replay is not None:
            return replay[0], replay[1], True
        config = DesiredConfig.from_dict(rest, self.member, "body")
        self.config = config
        self.groups = {g.name: self.groups.get(g.name, GroupStatus(OFFLINE, g.type))
                       for g in config.groups}
        names = tuple(g.name for g in config.groups)
        peers = tuple(p.member for p in config.peers)
        self.emit(CONFIG_APPLIED, {"groups": list(names), "peers": list(peers)})
        answer = ConfigApplied(command.operation_id, command.epoch, names, peers).to_dict()
        self.operations[command.operation_id] = ("/v1/config", 200, answer)
        return 200, answer, False

    def group_action(self, path: str, group: str, action: str, body: Any
                     ) -> tuple[int, Any, bool]:
        command, rest, replay = self._command(path, body, frozenset({"reason"}))
        if replay is not None:
            return replay[0], replay[1], True
        current = self.groups.get(group)
        if current is None:
            raise Refused(404, "GroupNotFound", f"no group {group!r} on this agent")
        state = {"online": ONLINE, "offline": OFFLINE}.get(action, current.state)
        if action == "online" and self.faults is not None:
            self.faults.online(self.cluster, group, self.member, time.monotonic())
        self.groups[group] = GroupStatus(state, current.type)
        self.emit(COMMAND_APPLIED, {"group": group, "action": action, "epoch": command.epoch,
                                    "operationId": command.operation_id,
                                    "reason": rest.get("reason")})
        if state != current.state:
            self.emit(GROUP_STATE, {"group": group, "state": state})
        answer = ActionAccepted(group, action, command.operation_id, command.epoch,
                                current.state).to_dict()
        self.operations[command.operation_id] = (path, 200, answer)
        return 200, answer, False

    def fault(self, group: str) -> None:
        """The group's (first) resource faults: the events a real agent sends when a
        critical resource faults past its restartLimit."""
        resources = [r.name for g in (self.config.groups if self.config else ())
                     if g.name == group for r in g.resources] or ["bench"]
        current = self.groups[group]
        self.groups[group] = GroupStatus(FAULTED, current.type)
        self.emit(RESOURCE_STATE, {"group": group, "resource": resources[0],
                                   "state": FAULTED})
        self.emit(RESOURCE_FAULTED, {"group": group, "resource": resources[0],
                                     "message": "fault made by the benchmark"})
        self.emit(GROUP_STATE, {"group": group, "state": FAULTED})

    async def long_poll(self, query: dict[str, list[str]]) -> Any:
        def number(name: str, default: str) -> float:
            try:
                return float(query.get(name, [default])[0])
            except ValueError:
                raise Refused(400, "Invalid", f"query {name}: not a number") from None
        after, wait = int(number("after", "-1")), min(number("timeout", "0"), MAX_POLL)
        limit = int(min(max(number("limit", "500"), 1), 1000))
        stream = query.get("stream", [None])[0]
        deadline = time.monotonic() + wait
        while True:
            first = self.events[0].seq if self.events else self.seq + 1
            if (stream and stream != self.stream) or after > self.seq or after < first - 1:
                gone = EventsGone("read /v1/status and start again", self.stream, first,
                                  self.seq)
                raise Refused(410, EVENTS_GONE, gone.message, gone.to_dict())
            if self.seq > after or time.monotonic() >= deadline:
                break
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    await self.wakeup.wait()
            except TimeoutError:
                pass
        held = [e for e in self.events if e.seq > after]
        return EventBatch(self.stream, self.seq, len(held) > limit, tuple(held[:limit])).to_dict()

    async def answer(self, method: str, target: str, body: Any) -> tuple[int, Any, bool]:
        url = urlsplit(target)
        path, query = url.path, parse_qs(url.query)
        parts = path.strip("/").split("/")
        if (method, path) == ("GET", "/v1/status"):
            self.asked = True
            return 200, self.status().to_dict(), False
        if (method, path) == ("GET", "/v1/healthz"):
            return 200, Health(self.member, VERSION, IDLE, False).to_dict(), False
        if (method, path) == ("GET", "/v1/config"):
            config = None if self.config is None else self.config.to_dict()
            return 200, {"epoch": self.epoch, "config": config, "error": None}, False
        if (method, path) == ("PUT", "/v1/config"):
            return self.put_config(body)
        if method == "POST" and len(parts) == 4 and parts[:2] == ["v1", "groups"]:
            return self.group_action(path, parts[2], parts[3], body)
        if (method, path) == ("GET", "/v1/events"):
            return 200, await self.long_poll(query), False
        raise Refused(404, "NotFound", f"no endpoint {method} {path}")

    # -- the connection

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters["accepted"] += 1
        self.open += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:] if line)}
                length = int(headers.get("content-length", "0"))
                raw = await reader.readexactly(min(length, MAX_REQUEST))
                self.counters["requests"] += 1
                replayed = False
                try:
                    body = json.loads(raw) if raw else None
                    status, answer, replayed = await self.answer(method, target, body)
                except Refused as refused:
                    status, answer = refused.status, refused.body
                except (FieldError, ValueError) as exc:
                    status, answer = 400, {"status": 400, "reason": "Invalid", "message": str(exc)}
                data = json.dumps(answer).encode()
                extra = f"{REPLAYED_HEADER}: true\r\n" if replayed else ""
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                             f"{extra}Content-Length: {len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the process quits: end quietly (asyncio 3.11 would log the cancellation)
        finally:
            self.open -= 1
            writer.close()


def raise_fd_limit(needed: int) -> int:
    """The soft limit on open files raised to `needed` (at most the hard limit); the
    limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    if soft < needed:
        raise SystemExit(f"{needed} open files needed, the hard limit is {hard}")
    return soft


def server_context(cert: Path, key: Path, ca_file: Path) -> ssl.SSLContext:
    """An agent's TLS context: its certificate, and only its cluster CA's clients."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca_file)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@dataclass(frozen=True)
class Cluster:
    """One cluster of a `--clusters` file: its CA (PEM) and its members' addresses."""

    name: str
    ca: channel_pki.KeyPair
    members: tuple[tuple[str, str], ...]  # (member, address)

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> Cluster:
        try:
            members = tuple((str(m["name"]), str(m["address"])) for m in raw["members"])
            return cls(str(raw["cluster"]), channel_pki.KeyPair(
                str(raw["caCert"]).encode(), str(raw["caKey"]).encode()), members)
        except (KeyError, TypeError) as e:
            raise SystemExit(f"{where}: needs cluster, caCert, caKey and members[].name "
                             f"and .address ({type(e).__name__}: {e})") from None


def load_clusters(path: Path) -> list[Cluster]:
    raw = json.loads(path.read_text())
    if not isinstance(raw, list):
        raise SystemExit(f"{path}: a JSON list of clusters expected")
    return [Cluster.from_dict(c, f"{path}: [{i}]") for i, c in enumerate(raw)]


def cluster_agents(clusters: list[Cluster], folder: Path, port: int
                   ) -> list[tuple[FakeAgent, ssl.SSLContext]]:
    """An agent per member, its serving certificate issued from its cluster's CA as the
    operator's injection issues it (member name and address), its CA the only one it
    trusts for clients."""
    made = []
    for cluster in clusters:
        ca_file = folder / f"{cluster.name}-ca.crt"
        ca_file.write_bytes(cluster.ca.cert_pem)
        for member, address in cluster.members:
            pair = channel_pki.issue_member(cluster.ca, member, (address,))
            stem = folder / f"{cluster.name}-{member}"
            cert, key = stem.with_suffix(".crt"), stem.with_suffix(".key")
            key.touch(mode=0o600)
            key.write_bytes(pair.key_pem)
            cert.write_bytes(pair.cert_pem)
            made.append((FakeAgent(cluster.name, member, address, port),
                         server_context(cert, key, ca_file)))
    return made


def addresses(network: str, count: int) -> list[str]:
    """`count` host addresses of `network` (a /8 or /16 of 127/8), skipping .0 and .255."""
    net = ipaddress.ip_network(f"{network}/16", strict=False)
    hosts = [str(a) for a in net.hosts() if a.packed[-1] not in (0, 255)]
    if count > len(hosts):
        raise ValueError(f"--agents: at most {len(hosts)} in {net}")
    return hosts[:count]


def process_stats(agents: list[FakeAgent]) -> dict[str, Any]:
    times = os.times()
    rss = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return {"rss_bytes": rss, "cpu_seconds": round(times.user + times.system, 3),
            "open_connections": sum(a.open for a in agents),
            "requests": sum(a.counters["requests"] for a in agents)}


def fault(agents: list[FakeAgent], faults: Faults, cluster: str, group: str) -> dict[str, Any]:
    home = next((a for a in agents if a.cluster == cluster and
                 (g := a.groups.get(group)) is not None and g.state == ONLINE), None)
    if home is None:
        return {"error": f"group {group!r} of cluster {cluster!r} is online nowhere"}
    faults.made.append(Fault(cluster, group, home.member, time.monotonic()))
    home.fault(group)
    return {"faulted": home.member}


async def commands(agents: list[FakeAgent], faults: Faults) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        word, _, arg = line.partition(" ")
        if word == "burst":
            count = int(arg or "1")
            for i in range(count):
                for agent in agents:
                    agent.emit(RESOURCE_STATE, {"group": "bench", "resource": f"r{i}",
                                                "state": ONLINE, "t": time.time()})
                await asyncio.sleep(0)  # let the long-polls answer between rounds
            reply: dict[str, Any] = {"burst": count, "events": count * len(agents)}
        elif word == "restart":
            for agent in agents:
                agent.restart()
            reply = {"restarted": len(agents)}
        elif word == "stats":
            reply = process_stats(agents)
        elif word == "mark":
            for agent in agents:
                agent.asked = False
            reply = {"marked": len(agents)}
        elif word == "asked":
            reply = {"asked": sum(a.asked for a in agents), "agents": len(agents)}
        elif word == "fault" and len(arg.split()) == 2:
            reply = fault(agents, faults, *arg.split())
        elif word == "failovers":
            reply = {"seconds": faults.seconds()}
        elif word == "quit":
            return
        else:
            reply = {"error": f"unknown command {line!r}"}
        print(json.dumps(reply), flush=True)


async def main_async(args: argparse.Namespace) -> None:
    folder: Path = args.folder
    manifest: dict[str, Any] = {}
    if args.clusters is not None:
        made = cluster_agents(load_clusters(args.clusters), folder, args.port)
    else:
        pki = Pki(folder)
        made = []
        for i, address in enumerate(addresses(args.network, args.agents)):
            member = f"{args.cluster}-{i:04d}"
            made.append((FakeAgent(args.cluster, member, address, args.port),
                         server_context(*pki.agent_cert(member, address), pki.ca_file)))
        manifest = {"ca": str(pki.ca_file), "operatorCert": str(pki.operator[0]),
                    "operatorKey": str(pki.operator[1])}
    faults = Faults()
    agents = [agent for agent, _ in made]
    servers = []
    for agent, context in made:
        agent.faults = faults
        agent.emit("AgentStarted", {"member": agent.member, "incarnation": agent.incarnation})
        servers.append(await asyncio.start_server(agent.serve, agent.address, agent.port,
                                                  ssl=context))
    print(json.dumps({
        **manifest,
        "members": [{"cluster": a.cluster, "name": a.member, "address": a.address,
                     "port": a.port} for a in agents],
    }), flush=True)
    try:
        await commands(agents, faults)
    finally:
        for server in servers:
            server.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/bench/run fakeagents",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--agents", type=int, default=1500)
    parser.add_argument("--clusters", type=Path,
                        help="agents of these clusters and CAs instead (JSON; see above)")
    parser.add_argument("--folder", type=Path, required=True,
                        help="where the cluster's certificates are written")
    parser.add_argument("--cluster", default="fake")
    parser.add_argument("--network", default="127.1.0.0", help="a /16 of 127/8")
    parser.add_argument("--port", type=int, default=AGENT_PORT)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    count = args.agents
    if args.clusters is not None:
        count = sum(len(c.get("members") or ()) for c in json.loads(args.clusters.read_text()))
    # a listening socket and a connection or two (events, commands) each
    raise_fd_limit(3 * count + 256)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
