"""The real-guest tier: a Debian bookworm guest under qemu, booted from the NoCloud seed of
the per-member Secret that the operator's injection renders (the owner's own user-data,
then guestha's part), proves what the simulator cannot.

One boot serves the module (a boot takes a minute or more under software emulation): the
real cloud-init finished without errors and ran the owner's part as well as guestha's;
the agent runs as a systemd service on the guest's own python3; the operator's channel
client reaches it over mutual TLS through the forwarded port; qemu-guest-agent answers.
The last test hangs the agent (SIGSTOP) and watches the i6300esb watchdog reset the guest,
which boots a second time: it must stay last.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from guestha.channel.client import AgentClient
from guestha.channel.transport import ChannelError
from guestha.cloudinit import recipe
from guestha.controller.credentials import ClusterCredentials
from guestha.model.injection import WATCHDOG_DEVICE
from guestha.protocol.constants import AGENT_PORT
from guestha.protocol.status import StatusReport
from guestimage import qemu
from kits.qemuguest import (
    BOOT_TIMEOUT,
    CLOUD_INIT_FINISHED,
    KERNEL_BANNER,
    MemberSeed,
    QemuGuest,
    booted,
    member_seed,
)
from kits.waiting import wait_for

pytestmark = [pytest.mark.guest, pytest.mark.timeout(1800)]

NAMESPACE, CLUSTER, MEMBER = "apps", "web", "web-a"
# The guest owner's own part: a file and a runcmd of theirs.
OWNER_FILE = "/etc/shop/greeting.txt"
OWNER_TEXT = "hello from the guest's owner\n"
OWNER_LOG = "/var/lib/shop/runcmd.log"
OWNER_USER_DATA = b"#cloud-config\n" + yaml.safe_dump({
    "write_files": [{"path": OWNER_FILE, "permissions": "0644", "content": OWNER_TEXT}],
    "runcmd": [f"mkdir -p {os.path.dirname(OWNER_LOG)}",
               f"echo owner-runcmd >> {OWNER_LOG}"],
}, sort_keys=False).encode()


@dataclass
class Booted:
    guest: QemuGuest
    member: MemberSeed
    port: int  # 127.0.0.1's port forwarded to the agent's

    def client(self, context: ssl.SSLContext | None = None) -> AgentClient:
        return self.member.channel_client(self.port, context)

    def status(self, timeout: float = 30.0) -> StatusReport:
        with self.member.channel_client(self.port, timeout=timeout) as client:
            return client.status()

    def answering_status(self, timeout: float = BOOT_TIMEOUT) -> StatusReport:
        def attempt() -> StatusReport | None:
            try:
                # short: while the guest boots, a connection through the forwarded port
                # may hang until its timeout
                return self.status(timeout=5.0)
            except ChannelError:
                return None
        report = wait_for(attempt, timeout, interval=1.0, what="the agent to answer")
        assert report is not None
        return report

    def agent_pid(self) -> int:
        result = self.guest.run("systemctl", "show", "--property=MainPID", "--value",
                                recipe.UNIT_NAME)
        return int(result.stdout.strip() or 0)


@pytest.fixture(scope="module")
def booted_guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    folder = tmp_path_factory.mktemp("qemu-guest")
    member = member_seed(NAMESPACE, CLUSTER, MEMBER, OWNER_USER_DATA,
                         {"fencing": {"watchdog": True}})
    port = qemu.free_port()
    with booted(folder / "guest", member.seed, {port: AGENT_PORT}) as guest:
        guest.qmp()  # connected from the start, so no QMP event is missed
        guest.wait_serial(CLOUD_INIT_FINISHED)
        yield Booted(guest, member, port)


def test_cloud_init_finished_without_errors(booted_guest: Booted) -> None:
    guest = booted_guest.guest
    status = guest.run("cloud-init", "status", "--long")
    assert status.exitcode == 0, status
    assert "status: done" in status.stdout, status.stdout
    assert "DataSourceNoCloud" in status.stdout, status.stdout
    result = json.loads(guest.run("cat", "/run/cloud-init/result.json").stdout)
    assert result["v1"]["errors"] == [], result
    # the seed's meta-data took effect
    assert guest.guest_agent().execute("guest-get-host-name") == {"host-name": MEMBER}


def test_owners_own_part_ran(booted_guest: Booted) -> None:
    guest = booted_guest.guest
    assert guest.run("cat", OWNER_FILE).stdout == OWNER_TEXT
    assert guest.run("cat", OWNER_LOG).stdout == "owner-runcmd\n"


def test_agent_runs_as_a_systemd_service_on_the_guests_python(booted_guest: Booted) -> None:
    guest = booted_guest.guest
    active = guest.run("systemctl", "is-active", recipe.UNIT_NAME)
    assert active.stdout.strip() == "active", active
    pid = booted_guest.agent_pid()
    assert pid > 0
    exe = guest.run("readlink", f"/proc/{pid}/exe").stdout.strip()
    assert exe == "/usr/bin/python3.11", exe
    cmdline = guest.run("cat", f"/proc/{pid}/cmdline").stdout.split("\0")
    assert cmdline[:2] == [recipe.GUEST_PYTHON, recipe.GUEST_PATHS.bundle], cmdline


def test_operator_channel_reaches_the_agent_over_mutual_tls(booted_guest: Booted) -> None:
    report = booted_guest.answering_status()
    assert (report.cluster, report.member) == (CLUSTER, MEMBER)
    assert report.agent_version == booted_guest.member.agent_version
    assert report.hostname == MEMBER
    assert report.watchdog.device == WATCHDOG_DEVICE
    assert report.watchdog.armed and report.watchdog.petting, report.watchdog
    # mutual: another cluster's operator certificate is refused by the agent in the guest
    foreign = ClusterCredentials.new(NAMESPACE, "another-cluster").ssl_context()
    with pytest.raises(ChannelError) as refused, booted_guest.client(foreign) as client:
        client.status()
    assert refused.value.stage in ("tls", "closed"), refused.value


def test_qemu_guest_agent_answers(booted_guest: Booted) -> None:
    agent = booted_guest.guest.guest_agent()
    assert agent.execute("guest-ping") == {}
    info = agent.execute("guest-info")
    assert any(c["name"] == "guest-exec" and c["enabled"] for c in info["supported_commands"])


def test_a_hung_agent_makes_the_watchdog_reset_the_guest(booted_guest: Booted) -> None:
    """Must stay last: the guest boots again."""
    guest = booted_guest.guest
    before = booted_guest.answering_status()
    assert before.watchdog.armed and before.watchdog.petting, before.watchdog
    assert guest.watchdog_events() == []  # a petted watchdog never fired
    boots = guest.boots()
    pid = booted_guest.agent_pid()
    stopped = guest.run("kill", "-STOP", str(pid))
    assert stopped.exitcode == 0, stopped

    events = wait_for(lambda: guest.watchdog_events(timeout=1.0), 120, interval=0.0,
                      what="a QMP WATCHDOG event")
    assert [e["data"]["action"] for e in events] == ["reset"], events
    guest.wait_serial(KERNEL_BANNER, count=boots + 1)
    # The guest is back: its agent is started by systemd again, answers the operator, and
    # cloud-init did not run the owner's runcmd a second time (same instance-id).
    after = booted_guest.answering_status()
    assert after.incarnation > before.incarnation
    assert after.watchdog.armed and after.watchdog.petting, after.watchdog
    assert guest.run("cat", OWNER_LOG).stdout == "owner-runcmd\n"
