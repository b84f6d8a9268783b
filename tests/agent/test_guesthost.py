"""Guest hosts of the KubeVirt simulator: real namespaces, real cloud-init runs, real services.

Two guests boot from MIME multipart user-data shaped like guestha's injection (the user's
cloud-config, a shell script part, an appended cloud-config part); the tests look at them
from the host (addresses, HTTP, pids, the overlay upper dirs) and from inside (exec).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest
import yaml

from kits.resources import running
from kits.waiting import wait_for as poll
from kubevirtsim.guesthost import (
    BRIDGE,
    GuestHost,
    GuestSpec,
    cleanup_stale,
    teardown_network,
)
from kubevirtsim.guestinit import bundle, pid1, plan

pytestmark = [
    pytest.mark.agent,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="guest hosts need root (network, mount and "
        "PID namespaces); the non-root fallback is not written yet",
    ),
]

HACK = Path(__file__).resolve().parents[2] / "hack"

WEB_UNIT = """\
[Unit]
Description=demo web server
[Service]
ExecStart=/usr/bin/python3 -m http.server 8080 --bind 0.0.0.0 --directory /srv/www
Restart=on-failure
[Install]
WantedBy=multi-user.target
"""

SLEEPER_UNIT = """\
[Unit]
Description=always restarted
[Service]
Environment=MESSAGE=still-here
ExecStart=/bin/sh -c 'echo $MESSAGE; exec sleep 1000'
Restart=always
RestartSec=200ms
"""

GRACEFUL_UNIT = """\
[Service]
ExecStart=/bin/sh -c 'trap "echo stopped-by-term > /var/lib/graceful; exit 0" TERM; \\
  while true; do sleep 0.1; done'
TimeoutStopSec=5
"""


def user_data(name: str, fail: bool = False) -> bytes:
    """User's cloud-config + a script part + an appended part, as guestha injects."""
    user = "#cloud-config\n" + yaml.safe_dump(
        {
            "write_files": [
                {"path": "/etc/systemd/system/web.service", "content": WEB_UNIT},
                {"path": "/srv/www/index.html", "content": f"hello from {name}"},
                {"path": "/etc/systemd/system/sleeper.service", "content": SLEEPER_UNIT},
                {"path": "/etc/systemd/system/graceful.service", "content": GRACEFUL_UNIT},
            ],
            "runcmd": [
                f'echo "runcmd of {name}" > /var/lib/runcmd.txt',
                "systemctl daemon-reload",
                "systemctl enable --now web.service",
                ["systemctl", "start", "sleeper", "graceful"],
            ],
        }
    )
    script = "#!/bin/sh\necho script-part > /etc/from-script.txt\n"
    ours = textwrap.dedent("""\
        #cloud-config
        merge_how: 'list(append)+dict(no_replace,recurse_list)+str()'
        write_files:
          - path: /etc/guestha/agent.conf
            content: injected
        runcmd:
          - echo appended >> /var/lib/runcmd.txt
        """) + ("  - exit 3\n" if fail else "")
    outer = MIMEMultipart()
    for subtype, text in (
        ("cloud-config", user),
        ("x-shellscript", script),
        ("cloud-config", ours),
    ):
        outer.attach(MIMEText(text, subtype, "utf-8"))
    return outer.as_bytes()


def net_snapshot() -> tuple[set[str], set[str]]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = set(os.listdir("/sys/class/net"))
    return {line.split()[0] for line in netns.splitlines() if line.strip()}, links


def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """bench's wait_for, polling every 20 ms (most checks exec in a guest)."""
    poll(check, timeout, 0.02, what)


def out(guest: GuestHost, *argv: str) -> str:
    result = guest.exec(list(argv))
    assert result.returncode == 0, (argv, result.stderr)
    return result.stdout.decode()


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return str(response.read().decode())


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("guesthosts")
    yield path
    # Every guest of this module was powered off by its test: none of their namespaces,
    # veths or processes may be left (other simulator runs on the machine are not ours).
    records = [json.loads(p.read_text()) for p in path.glob("guests/*/guest.json")]
    netns, links = net_snapshot()
    assert records
    leaked_ns = {r["netns"] for r in records} & netns
    leaked_links = {r["veth"] for r in records} & links
    leaked_pids = [r["init_pid"] for r in records if r.get("init_pid") and running(r["init_pid"])]
    cleanup_stale(path)
    assert not leaked_ns and not leaked_links and not leaked_pids, (
        leaked_ns,
        leaked_links,
        leaked_pids,
    )


@pytest.fixture(scope="module")
def pair(state_dir: Path) -> Iterator[tuple[GuestHost, GuestHost]]:
    """Two guests, booted and through cloud-init (how long that takes: `boot_s` and
    `cloud_init_done_s` of hack/bench/guestinit.py)."""
    guests: list[GuestHost] = []
    try:
        for name in ("alpha", "beta"):
            spec = GuestSpec(
                key=f"apps/{name}",
                uid=f"uid-{name}-0001",
                hostname=name,
                datasource="NoCloud" if name == "alpha" else "ConfigDrive",
                user_data=user_data(name),
                network_data=None,
                node="node-1",
            )
            guest = GuestHost(spec, state_dir)
            guest.boot()
            wait_for(lambda: guest.cloud_init_status() != "running", 20, "cloud-init")  # noqa: B023
            guests.append(guest)
        yield guests[0], guests[1]
    finally:
        for guest in guests:
            guest.kill()


def test_cloud_init_ran_inside_the_guest_only(
    pair: tuple[GuestHost, GuestHost],
) -> None:
    alpha, beta = pair
    for guest in (alpha, beta):
        name = guest.spec.hostname
        assert guest.cloud_init_status() == "done", out(guest, "cat", "/var/log/cloud-init.log")
        assert out(guest, "cat", "/var/lib/runcmd.txt") == f"runcmd of {name}\nappended\n"
        assert out(guest, "cat", "/etc/from-script.txt") == "script-part\n"
        assert out(guest, "cat", "/etc/guestha/agent.conf") == "injected"
        assert out(guest, "hostname").strip() == name
        assert out(guest, "cat", "/etc/hostname") == f"{name}\n"
        assert out(guest, "cat", "/var/lib/cloud/data/instance-id") == f"{guest.spec.uid}\n"
        assert "status: done" in out(guest, "cloud-init", "status")
        result = json.loads(out(guest, "cat", "/run/cloud-init/result.json"))
        assert result["v1"]["errors"] == []
        assert "finished at" in out(guest, "cat", "/var/log/cloud-init-output.log")
        # the overlay upper dir on the host holds the guest's writes ...
        assert (guest.root / "upper" / "etc" / "guestha" / "agent.conf").read_text() == "injected"
    # ... and neither the host nor the other guest sees them
    for path in (
        "/etc/guestha/agent.conf",
        "/etc/from-script.txt",
        "/var/lib/runcmd.txt",
        "/etc/systemd/system/web.service",
    ):
        assert not os.path.exists(path), path
    assert alpha.root != beta.root
    assert out(alpha, "cat", "/var/lib/cloud/seed/nocloud/meta-data").startswith(
        "instance-id: uid-alpha-0001"
    )
    assert out(beta, "ls", "/var/lib/cloud/seed/config_drive/openstack/latest").split() == [
        "meta_data.json",
        "user_data",
    ]
    # the systemctl shim lives in the guest's view only
    assert Path("/usr/bin/systemctl").read_bytes()[:4] == b"\x7fELF"
    assert out(alpha, "head", "-c", "9", "/usr/bin/systemctl") == "#!/bin/sh"


def test_guests_have_own_addresses_and_reach_each_other(
    pair: tuple[GuestHost, GuestHost],
) -> None:
    alpha, beta = pair
    assert alpha.address != beta.address
    assert alpha.address.startswith("10.213.") and beta.address.startswith("10.213.")
    assert alpha.mac != beta.mac
    assert f"inet {alpha.address}/16" in out(alpha, "ip", "-4", "addr", "show", "eth0")
    assert "default via 10.213.0.1" in out(alpha, "ip", "route")
    # ICMP echo from alpha to beta and to the host's bridge address
    ping = textwrap.dedent("""\
        import socket, struct, sys
        def csum(b):
            s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
            s = (s >> 16) + (s & 0xffff); s += s >> 16
            return ~s & 0xffff
        hdr = struct.pack('!BBHHH', 8, 0, 0, 42, 1) + b'guestha!'
        pkt = hdr[:2] + struct.pack('!H', csum(hdr)) + hdr[4:]
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        s.settimeout(2)
        s.sendto(pkt, (sys.argv[1], 0))
        while True:
            data, addr = s.recvfrom(1500)
            if addr[0] == sys.argv[1] and data[20] == 0:
                print('pong', addr[0]); break
        """)
    for target in (beta.address, "10.213.0.1"):
        assert out(alpha, "python3", "-c", ping, target).strip() == f"pong {target}"
    # TCP from beta to alpha's web server, and from the host
    fetch = "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())"
    url = f"http://{alpha.address}:8080/index.html"
    wait_for(lambda: alpha.exec(["systemctl", "is-active", "web"]).returncode == 0, 15, "web")
    wait_for(lambda: beta.exec(["python3", "-c", fetch, url]).returncode == 0, 15, "http")
    assert out(beta, "python3", "-c", fetch, url).strip() == "hello from alpha"
    assert http_get(url) == "hello from alpha"
    assert http_get(f"http://{beta.address}:8080/index.html") == "hello from beta"
    # UDP, as the agents' heartbeats will use
    udp = (
        "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "s.bind(('0.0.0.0', 7481)); s.settimeout(5); print(s.recvfrom(100)[0].decode())"
    )
    receiver = subprocess.Popen(
        ["nsenter", "-t", str(beta.init_pid), "-n", "-m", "-p", "python3", "-c", udp],
        stdout=subprocess.PIPE,
    )
    try:
        time.sleep(0.3)
        send = (
            "import socket,sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
            ".sendto(b'beat', (sys.argv[1], 7481))"
        )
        out(alpha, "python3", "-c", send, beta.address)
        assert receiver.communicate(timeout=10)[0].decode().strip() == "beat"
    finally:
        receiver.kill()
        receiver.wait()


def test_systemctl_units(pair: tuple[GuestHost, GuestHost]) -> None:
    alpha, _ = pair
    assert out(alpha, "systemctl", "is-enabled", "web") == "enabled\n"
    assert out(
        alpha, "readlink", "/etc/systemd/system/multi-user.target.wants/web.service"
    ).strip() == ("/etc/systemd/system/web.service")
    show = out(alpha, "systemctl", "show", "-p", "ActiveState,SubState,MainPID", "web")
    props = dict(line.split("=", 1) for line in show.splitlines())
    assert props["ActiveState"] == "active" and props["SubState"] == "running"
    assert int(props["MainPID"]) > 1
    assert (
        "Serving HTTP" in out(alpha, "sh", "-c", "sleep 0.2; cat /var/log/web.service.log")
        or http_get(f"http://{alpha.address}:8080/") != ""
    )
    assert "active (running)" in out(alpha, "systemctl", "status", "web")
    # stop: the port closes, is-active says inactive with LSB code 3
    assert alpha.exec(["systemctl", "stop", "web"]).returncode == 0
    inactive = alpha.exec(["systemctl", "is-active", "web"])
    assert (inactive.returncode, inactive.stdout) == (3, b"inactive\n")
    assert alpha.exec(["systemctl", "is-active", "--quiet", "web"]).stdout == b""
    with pytest.raises(urllib.error.URLError):
        http_get(f"http://{alpha.address}:8080/")
    assert alpha.exec(["systemctl", "start", "web"]).returncode == 0
    wait_for(lambda: _answers(f"http://{alpha.address}:8080/index.html"), 15, "web again")
    # unknown units, as systemd answers
    missing = alpha.exec(["systemctl", "start", "nosuch"])
    assert missing.returncode == 5 and b"not found" in missing.stderr
    assert alpha.exec(["systemctl", "is-active", "nosuch"]).returncode == 3
    assert alpha.exec(["systemctl", "status", "nosuch"]).returncode == 4


def _answers(url: str) -> bool:
    try:
        http_get(url)
        return True
    except OSError:
        return False


def test_restart_always_brings_a_killed_service_back(
    pair: tuple[GuestHost, GuestHost],
) -> None:
    alpha, _ = pair

    def main_pid() -> int:
        return int(out(alpha, "systemctl", "show", "-P", "MainPID", "sleeper"))

    first = main_pid()
    assert first > 0
    assert out(alpha, "systemctl", "is-active", "sleeper") == "active\n"
    out(alpha, "kill", "-9", str(first))
    wait_for(lambda: main_pid() not in (0, first), 15, "sleeper restart")
    assert out(alpha, "systemctl", "is-active", "sleeper") == "active\n"
    assert out(alpha, "systemctl", "show", "-P", "NRestarts", "sleeper").strip() == "1"
    assert out(alpha, "cat", "/var/log/sleeper.service.log").count("still-here") == 2
    # systemctl kill goes through the same path; systemctl stop does not restart
    out(alpha, "systemctl", "kill", "-s", "KILL", "sleeper")
    wait_for(
        lambda: out(alpha, "systemctl", "show", "-P", "NRestarts", "sleeper").strip() == "2",
        15,
        "second restart",
    )
    out(alpha, "systemctl", "stop", "sleeper")
    time.sleep(0.5)
    assert alpha.exec(["systemctl", "is-active", "sleeper"]).stdout == b"inactive\n"


FEATURE_UNITS = {
    "/etc/default/envd": 'FROM_FILE=file-value\n# comment\nQUOTED="a b"\n',
    "/etc/systemd/system/envd.service": """\
[Service]
Type=oneshot
RemainAfterExit=yes
EnvironmentFile=/etc/default/envd
EnvironmentFile=-/etc/default/missing
Environment="INLINE=x y" OTHER=z
WorkingDirectory=/srv
ExecStartPre=/bin/sh -c 'echo pre > /var/lib/pre.txt'
ExecStart=/bin/sh -c 'echo "$FROM_FILE|$QUOTED|$INLINE|$OTHER|$(pwd)" > /var/lib/env.txt'
ExecStop=/bin/sh -c 'echo stop > /var/lib/stop.txt'
""",
    "/etc/systemd/system/badpre.service": """\
[Service]
ExecStartPre=/bin/false
ExecStart=/bin/sleep 100
""",
    "/etc/systemd/system/crashy.service": """\
[Unit]
StartLimitIntervalSec=10
StartLimitBurst=3
[Service]
ExecStart=/bin/false
Restart=on-failure
RestartSec=50ms
""",
    # the agent's unit: a crash (or an exit to be started again) leaves its resources
    # running, and the service manager never gives up restarting it
    "/etc/systemd/system/keeper.service": """\
[Unit]
StartLimitIntervalSec=0
[Service]
ExecStart=/bin/sh -c 'sleep 1000 & echo $! > /run/keeper-child.pid; exec sleep 1000'
KillMode=process
Restart=always
RestartSec=50ms
""",
    "/etc/systemd/system/forky.service": """\
[Service]
Type=forking
PIDFile=/run/forky.pid
ExecStart=/bin/sh -c 'sleep 100 & echo $! > /run/forky.pid'
""",
    "/etc/systemd/system/inst@.service": """\
[Service]
ExecStart=/bin/sh -c 'echo instance-%i; trap "echo got-int; exit 0" INT; \\
  while true; do sleep 0.1; done'
KillSignal=SIGINT
""",
}


def test_unit_file_features(state_dir: Path) -> None:
    config = {"write_files": [{"path": p, "content": c} for p, c in FEATURE_UNITS.items()]}
    guest = GuestHost(
        GuestSpec(
            "apps/theta",
            "uid-theta",
            "theta",
            "NoCloud",
            ("#cloud-config\n" + yaml.safe_dump(config)).encode(),
            None,
            "n",
        ),
        state_dir,
    )
    guest.boot()
    try:
        wait_for(lambda: guest.cloud_init_status() == "done", 20, "cloud-init")
        # oneshot + RemainAfterExit, EnvironmentFile (optional one missing), Environment,
        # WorkingDirectory, ExecStartPre, ExecStop
        assert guest.exec(["systemctl", "start", "envd"]).returncode == 0
        assert out(guest, "cat", "/var/lib/env.txt") == "file-value|a b|x y|z|/srv\n"
        assert out(guest, "cat", "/var/lib/pre.txt") == "pre\n"
        assert out(guest, "systemctl", "show", "-p", "ActiveState,SubState", "envd") == (
            "ActiveState=active\nSubState=exited\n"
        )
        assert out(guest, "systemctl", "is-enabled", "envd") == "static\n"
        out(guest, "systemctl", "stop", "envd")
        assert out(guest, "cat", "/var/lib/stop.txt") == "stop\n"
        # a failing ExecStartPre fails the start, as systemd's job does
        bad = guest.exec(["systemctl", "start", "badpre"])
        assert bad.returncode == 1 and b"failed" in bad.stderr
        assert guest.exec(["systemctl", "is-failed", "badpre"]).returncode == 0
        # Restart=on-failure until the start limit is hit
        guest.exec(["systemctl", "start", "crashy"])
        wait_for(
            lambda: (
                out(guest, "systemctl", "show", "-P", "Result", "crashy").strip()
                == "start-limit-hit"
            ),
            10,
            "start limit",
        )
        assert guest.exec(["systemctl", "is-active", "crashy"]).stdout == b"failed\n"
        # KillMode=process: a main process that exits is restarted (past any start
        # limit with StartLimitIntervalSec=0), what it started keeps running
        assert guest.exec(["systemctl", "start", "keeper"]).returncode == 0
        wait_for(lambda: guest.exec(["cat", "/run/keeper-child.pid"]).returncode == 0, 10,
                 "the keeper's child")
        child = out(guest, "cat", "/run/keeper-child.pid").strip()
        for restarts in range(1, 8):
            main = out(guest, "systemctl", "show", "-P", "MainPID", "keeper").strip()
            out(guest, "kill", "-9", main)
            wait_for(lambda n=restarts: out(guest, "systemctl", "show", "-P", "NRestarts",
                                            "keeper").strip() == str(n)
                     and out(guest, "systemctl", "is-active", "keeper") == "active\n",
                     10, f"keeper restart {restarts}")
        assert guest.exec(["kill", "-0", child]).returncode == 0, "KillMode=process: kept"
        out(guest, "systemctl", "stop", "keeper")
        assert guest.exec(["kill", "-0", child]).returncode == 0, "a stop keeps it too"
        # Type=forking with PIDFile
        assert guest.exec(["systemctl", "start", "forky"]).returncode == 0
        pid = out(guest, "cat", "/run/forky.pid").strip()
        assert out(guest, "systemctl", "show", "-P", "MainPID", "forky").strip() == pid
        out(guest, "systemctl", "stop", "forky")
        assert guest.exec(["kill", "-0", pid]).returncode != 0
        # template instances, specifiers, KillSignal, journalctl
        assert guest.exec(["systemctl", "start", "inst@blue"]).returncode == 0
        wait_for(lambda: "instance-blue" in out(guest, "journalctl", "-u", "inst@blue"), 15, "log")
        assert out(guest, "systemctl", "is-active", "inst@blue.service") == "active\n"
        out(guest, "systemctl", "stop", "inst@blue")
        assert "got-int" in out(guest, "cat", "/var/log/inst@blue.service.log")
    finally:
        guest.kill()


def test_transient_service_from_systemd_run(
    pair: tuple[GuestHost, GuestHost],
) -> None:
    _, beta = pair
    run = beta.exec(["systemd-run", "--unit=srv", "python3", "-m", "http.server", "8090"])
    assert run.returncode == 0 and b"Running as unit: srv.service" in run.stderr
    wait_for(lambda: _answers(f"http://{beta.address}:8090/"), 15, "transient http.server")
    assert out(beta, "systemctl", "is-active", "srv") == "active\n"
    assert out(beta, "systemctl", "is-enabled", "srv") == "transient\n"
    again = beta.exec(["systemd-run", "--unit=srv", "true"])
    assert again.returncode == 1
    out(beta, "systemctl", "stop", "srv")
    # a command given by a relative path is found from the caller's working directory
    script = "printf '#!/bin/sh\\nexec sleep 1000\\n' > run.sh && chmod +x run.sh"
    rel = beta.exec(
        [
            "sh",
            "-c",
            f"mkdir -p /srv/app && cd /srv/app && {script} && systemd-run --unit=rel ./run.sh",
        ]
    )
    assert rel.returncode == 0, rel.stderr
    assert out(beta, "systemctl", "is-active", "rel") == "active\n"
    assert 'ExecStart="/srv/app/run.sh"' in out(beta, "systemctl", "cat", "rel")
    out(beta, "systemctl", "stop", "rel")
    # arguments reach the service word for word (quotes, $, %, empty ones)
    words = ["a b", 'c"d', "$HOME", "100%", ""]
    printf = 'printf "%s|" "$@" > /run/args'
    waited = beta.exec(
        ["systemd-run", "--unit=args", "--wait", "-q", "sh", "-c", printf, "_", *words]
    )
    assert (waited.returncode, waited.stderr) == (0, b"")
    assert out(beta, "cat", "/run/args") == 'a b|c"d|$HOME|100%||'


def test_guest_commands_run_the_hosts_bundle_from_bytecode(
    pair: tuple[GuestHost, GuestHost],
) -> None:
    alpha, _ = pair
    shipped = bundle.shipped()
    assert (alpha.root / plan.BUNDLE_FILE).read_bytes() == shipped.data
    assert out(alpha, "sha256sum", plan.GUEST_BUNDLE).split()[0] == shipped.sha256
    assert out(alpha, "stat", "-c", "%a", plan.GUEST_BUNDLE) == "444\n"
    for tool in ("systemctl", "systemd-run", "journalctl", "cloud-init"):
        assert out(alpha, "cat", f"/usr/local/bin/{tool}") == pid1.shim(sys.executable, tool)
    probe = (
        f"import sys; sys.path.insert(0, {plan.GUEST_BUNDLE!r}); "
        "import kubevirtsim.guestinit.client as c; print(c.__file__)"
    )
    assert out(alpha, sys.executable, "-I", "-S", "-c", probe) == (
        f"{plan.GUEST_BUNDLE}/kubevirtsim/guestinit/client.pyc\n"
    )


def test_guest_agent(pair: tuple[GuestHost, GuestHost]) -> None:
    alpha, _ = pair
    assert alpha.agent_connected()
    info = alpha.guest_info()
    assert info["hostname"] == "alpha"
    assert info["os"]["id"] == "debian" and info["os"]["version-id"] == "12"
    assert info["os"]["kernel-release"] == os.uname().release
    assert info["timezone"]["zone"]
    eth0 = next(i for i in info["interfaces"] if i["name"] == "eth0")
    assert eth0["hardware-address"] == alpha.mac
    assert alpha.address in [a["ip-address"] for a in eth0["ip-addresses"]]
    pid = alpha.agent_command("guest-exec", {"path": "hostname", "capture-output": True})["pid"]
    statuses: list[dict[str, object]] = []

    def exited() -> bool:
        statuses.append(alpha.agent_command("guest-exec-status", {"pid": pid}))
        return bool(statuses[-1]["exited"])

    wait_for(exited, 15, "guest-exec")
    assert statuses[-1]["exitcode"] == 0
    assert base64.b64decode(str(statuses[-1]["out-data"])) == b"alpha\n"


def test_failing_runcmd_is_an_error_but_the_guest_runs(state_dir: Path) -> None:
    spec = GuestSpec(
        "apps/gamma", "uid-gamma", "gamma", "NoCloud", user_data("gamma", fail=True), None, "node-2"
    )
    guest = GuestHost(spec, state_dir)
    guest.boot()
    try:
        wait_for(lambda: guest.cloud_init_status() != "running", 20, "cloud-init")
        assert guest.cloud_init_status() == "error"
        assert guest.alive()
        status = guest.exec(["cloud-init", "status", "--long"])
        assert status.returncode == 1 and b"status: error" in status.stdout
        assert b"Runparts" in status.stdout
        wait_for(lambda: _answers(f"http://{guest.address}:8080/index.html"), 15, "web")
    finally:
        guest.kill()


def test_kill_powers_off_every_process_at_once(state_dir: Path) -> None:
    guest = GuestHost(
        GuestSpec(
            "apps/delta", "uid-delta", "delta", "NoCloud", user_data("delta"), None, "node-1"
        ),
        state_dir,
    )
    guest.boot()
    wait_for(lambda: guest.cloud_init_status() == "done", 20, "cloud-init")
    wait_for(lambda: len(guest.host_pids()) >= 4, 15, "services")
    pids = guest.host_pids()
    netns = guest.netns
    assert guest.init_pid in pids
    guest.kill()
    assert not guest.alive()
    assert guest.wait_exit(0) == -9
    gone = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
    assert gone == [], f"still alive after kill(): {gone}"
    assert not os.path.exists(f"/run/netns/{netns}")
    assert not os.path.exists(f"/sys/class/net/ghv{netns[3:]}")


def test_shutdown_stops_services_gracefully(state_dir: Path) -> None:
    guest = GuestHost(
        GuestSpec("apps/eps", "uid-eps", "eps", "NoCloud", user_data("eps"), None, "node-1"),
        state_dir,
    )
    guest.boot()
    wait_for(lambda: guest.cloud_init_status() == "done", 20, "cloud-init")
    wait_for(lambda: guest.exec(["systemctl", "is-active", "graceful"]).returncode == 0, 15)
    pids = guest.host_pids()
    guest.shutdown(10.0)
    # It powered itself off within the grace period (a guest still running after it is
    # killed: exit -9), each service on its SIGTERM: none had to be killed at its stop
    # timeout. How long it takes: `shutdown_s` of hack/bench/guestinit.py.
    assert guest.wait_exit(0) == 0
    assert (guest.root / "upper" / "var" / "lib" / "graceful").read_text() == "stopped-by-term\n"
    assert [p for p in pids if os.path.exists(f"/proc/{p}")] == []
    console = (guest.root / "console.log").read_text()
    assert "stop timed out" not in console, console
    said = [line.split("] ", 1)[-1] for line in console.splitlines()]  # "[uptime] ..."
    assert said.index("shutdown requested: stopping services") < len(said) - 1, said
    assert said[-1] == "guest powered off", said


def test_guest_powers_itself_off(state_dir: Path) -> None:
    guest = GuestHost(
        GuestSpec("apps/eta", "uid-eta", "eta", "NoCloud", None, None, "n"), state_dir
    )
    guest.boot()
    assert out(guest, "ls", "/sys/class/net").split() == ["eth0", "lo"]
    guest.exec(["systemctl", "poweroff"])
    assert guest.wait_exit(10) == 0
    assert not guest.alive()
    assert not os.path.exists(f"/run/netns/{guest.netns}")


def test_shutdown_with_zero_grace_kills(state_dir: Path) -> None:
    guest = GuestHost(
        GuestSpec("apps/zeta", "uid-zeta", "zeta", "NoCloud", None, None, "n"), state_dir
    )
    guest.boot()
    guest.shutdown(0)
    assert guest.wait_exit(0) == -9


def test_cleanup_stale_after_a_simulator_crash(tmp_path: Path) -> None:
    """A simulator process that dies by SIGKILL leaves its guests running; cleanup_stale
    finds them by their records and removes processes, netns, veth and folders."""
    crashed = tmp_path / "crashed"
    program = textwrap.dedent(f"""\
        import os, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(HACK)!r})
        from kubevirtsim.guesthost import GuestHost, GuestSpec
        for name in ("one", "two"):
            g = GuestHost(GuestSpec("crash/" + name, "uid-" + name, name, "NoCloud",
                          b"#cloud-config\\nruncmd: [[systemd-run, --unit=s, sleep, '1000']]\\n",
                          None, "n"), Path({str(crashed)!r}))
            g.boot()
        print("booted", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60)
    assert result.stdout == b"booted\n", result.stderr.decode()
    records = [json.loads(p.read_text()) for p in crashed.glob("guests/*/guest.json")]
    assert len(records) == 2
    for record in records:
        assert os.path.exists(f"/proc/{record['init_pid']}")
        assert os.path.exists(f"/run/netns/{record['netns']}")
    # a second, half-made leftover: a netns recorded as booting with no process
    cleanup_stale(crashed)
    for record in records:
        # gone, or a zombie waiting for the host's init (the crashed simulator was its parent)
        assert not running(record["init_pid"]) and not running(record["holder_pid"])
        assert not os.path.exists(f"/run/netns/{record['netns']}")
        assert not os.path.exists(f"/sys/class/net/{record['veth']}")
    assert list(crashed.glob("guests/*/guest.json")) == []


def test_not_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from kubevirtsim import guesthost

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    guest = GuestHost(GuestSpec("a/b", "u", "b", "NoCloud", None, None, "n"), tmp_path)
    with pytest.raises(guesthost.GuestHostError, match="need root"):
        guest.boot()


def test_teardown_network_leaves_running_guests_alone(state_dir: Path) -> None:
    guest = GuestHost(
        GuestSpec("apps/iota", "uid-iota", "iota", "NoCloud", None, None, "n"), state_dir
    )
    guest.boot()
    try:
        assert teardown_network() is False  # a guest still uses the bridge
        assert guest.alive() and guest.agent_connected()
        assert os.path.exists(f"/sys/class/net/{BRIDGE}")
    finally:
        guest.kill()
    # Without guests (of any run on this machine) the bridge goes too.
    if teardown_network():
        assert not os.path.exists(f"/sys/class/net/{BRIDGE}")
    else:  # another session's guest is running here
        assert [n for n in net_snapshot()[0] if n.startswith("gh-")]
