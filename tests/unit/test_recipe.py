"""The injection recipe (guestha.cloudinit.recipe): the unit as systemd reads it, the
identity file as the agent reads it, the cloud-config as cloud-init carries it out.

Read back by the real readers where they run here: systemd's own `systemd-analyze verify`,
the agent's Identity parser, and the KubeVirt simulator's cloud-init planner (cloud-init's
write_files decoding and module order).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from guestha.cloudinit import recipe
from guestha.protocol.constants import AGENT_PORT, HEARTBEAT_PORT, OPERATOR_NAME
from guestha.protocol.desired import FencingConfig
from guestha.protocol.fields import FieldError
from guestha.protocol.identity import Identity
from kubevirtsim.cloudinit.modules import SCRIPTS_DIR
from kubevirtsim.cloudinit.planner import build_plan
from kubevirtsim.guestinit.plan import Write
from kubevirtsim.guestinit.units import parse_unit

pytestmark = pytest.mark.unit

BUNDLE = b"PK\x03\x04 not really a zipapp, but bytes all the same" * 100
SECRETS = recipe.AgentSecrets(
    ca=b"-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
    cert=b"-----BEGIN CERTIFICATE-----\nAGENT\n-----END CERTIFICATE-----\n",
    key=b"-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n",
    heartbeat_key=bytes(range(32)),
)
UNIT_FILE_NAME = f"{recipe.UNIT_NAME}.service"


def read_unit(text: str) -> Any:
    return parse_unit(UNIT_FILE_NAME, recipe.GUEST_PATHS.unit, text, [])


# --------------------------------------------------------------------------- the unit


def systemd_verify(folder: Path, text: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing (Debian's systemd package; hack/setup installs it)"
    path = folder / UNIT_FILE_NAME
    path.write_text(text)
    return subprocess.run([tool, "verify", str(path)], capture_output=True, text=True,
                          timeout=60)


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    done = systemd_verify(tmp_path, recipe.unit())
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_systemd_verify_does_complain_about_a_broken_unit(tmp_path: Path) -> None:
    """The check above would see a mistake: systemd names a bad KillMode."""
    broken = recipe.unit().replace("KillMode=process", "KillMode=procss")
    assert "kill mode" in systemd_verify(tmp_path, broken).stderr.lower()


def test_the_unit_as_systemd_reads_it() -> None:
    unit = read_unit(recipe.unit())
    assert unit.warnings == []
    assert [c.words for c in unit.exec_start] == [[
        recipe.GUEST_PYTHON, recipe.GUEST_PATHS.bundle, "--config", recipe.GUEST_PATHS.identity]]
    # An agent restart (crash, upgrade) must leave the resources it started running.
    assert unit.kill_mode == "process"
    assert unit.restart == "always"
    assert unit.wanted_by == ["multi-user.target"]
    # One malloc arena and no tcache for the agent's process (its RSS: MALLOC_TUNABLES).
    assert unit.environment == {"GLIBC_TUNABLES": recipe.MALLOC_TUNABLES}


@pytest.mark.parametrize("offline_timeout", [1, FencingConfig.offline_timeout_seconds, 600, 3600])
def test_systemd_waits_longer_than_the_agent_takes_to_stop(offline_timeout: int) -> None:
    """On stop the agent takes its Failover groups offline within the offline timeout (its
    own deadline is one second past it); systemd's SIGKILL must come later."""
    unit = read_unit(recipe.unit(offline_timeout_seconds=offline_timeout))
    assert unit.timeout_stop >= offline_timeout + 1 + 10


def test_the_default_stop_timeout_follows_the_agents_default() -> None:
    assert read_unit(recipe.unit()).timeout_stop == (
        FencingConfig().offline_timeout_seconds + recipe.STOP_MARGIN_SECONDS)


def test_the_unit_runs_the_interpreter_and_paths_it_is_given() -> None:
    paths = dataclasses.replace(recipe.GUEST_PATHS, bundle="/opt/ha/agent.pyz",
                                identity="/opt/ha/agent.json")
    unit = read_unit(recipe.unit("/usr/libexec/platform-python", paths))
    assert unit.exec_start[0].words == [
        "/usr/libexec/platform-python", "/opt/ha/agent.pyz", "--config", "/opt/ha/agent.json"]


@pytest.mark.parametrize(("python", "paths", "field"), [
    ("python3", recipe.GUEST_PATHS, "python"),
    ("/usr/bin/python 3", recipe.GUEST_PATHS, "python"),
    (recipe.GUEST_PYTHON, dataclasses.replace(recipe.GUEST_PATHS, bundle="/opt/%n.pyz"),
     "paths.bundle"),
    (recipe.GUEST_PYTHON, dataclasses.replace(recipe.GUEST_PATHS, identity="/etc/$x.json"),
     "paths.identity"),
])
def test_the_unit_refuses_what_an_exec_line_would_misread(
        python: str, paths: recipe.GuestPaths, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        recipe.unit(python, paths)


@pytest.mark.parametrize("offline_timeout", [0, -5])
def test_the_unit_refuses_a_stop_with_no_time(offline_timeout: int) -> None:
    with pytest.raises(ValueError, match=r"^offline_timeout_seconds:"):
        recipe.unit(offline_timeout_seconds=offline_timeout)


# --------------------------------------------------------------------------- the identity


@pytest.mark.parametrize(("options", "expected"), [
    ({}, {}),
    ({"transport": "VSOCK", "watchdog_device": "/dev/watchdog0"},
     {"transport": "VSOCK", "watchdog_device": "/dev/watchdog0"}),
    ({"listen_address": "10.0.0.12", "port": 17480, "heartbeat_port": 17481},
     {"listen_address": "10.0.0.12", "port": 17480, "heartbeat_port": 17481}),
])
def test_the_identity_file_reads_back_in_the_agent(
        tmp_path: Path, options: dict[str, Any], expected: dict[str, Any]) -> None:
    path = tmp_path / "agent.json"
    path.write_text(recipe.identity_text(recipe.identity("web", "web-a", **options)))
    assert Identity.load(str(path)) == Identity(**{"cluster": "web", "member": "web-a",
                                                   **expected})


def test_the_identity_carries_the_protocols_ports_and_name_and_every_path() -> None:
    document = recipe.identity("web", "web-a")
    assert (document["port"], document["heartbeatPort"], document["operatorName"]) == (
        AGENT_PORT, HEARTBEAT_PORT, OPERATOR_NAME)
    # Every path spelled out: the guest's file does not lean on one agent's defaults.
    paths = recipe.GUEST_PATHS
    assert {k: document[k] for k in ("tlsCert", "tlsKey", "tlsCA", "heartbeatKeyFile",
                                      "stateDir")} == {
        "tlsCert": paths.tls_cert, "tlsKey": paths.tls_key, "tlsCA": paths.tls_ca,
        "heartbeatKeyFile": paths.heartbeat_key, "stateDir": paths.state_dir}
    assert "watchdogDevice" not in document  # none unless the guest has one


def test_the_guest_paths_are_where_the_agent_looks_by_default() -> None:
    bare = Identity.from_dict({"cluster": "web", "member": "web-a"})
    paths = recipe.GUEST_PATHS
    assert (bare.tls_cert, bare.tls_key, bare.tls_ca, bare.heartbeat_key_file,
            bare.state_dir) == (paths.tls_cert, paths.tls_key, paths.tls_ca,
                                paths.heartbeat_key, paths.state_dir)


@pytest.mark.parametrize(("cluster", "member", "options", "field"), [
    ("", "web-a", {}, "cluster"),
    ("web", "", {}, "member"),
    ("web", "web-a", {"transport": "Carrier"}, "transport"),
    ("web", "web-a", {"port": 0}, "port"),
    ("web", "web-a", {"port": 70000}, "port"),
    ("web", "web-a", {"heartbeat_port": 0}, "heartbeatPort"),
])
def test_the_identity_refuses_what_the_agent_would(
        cluster: str, member: str, options: dict[str, Any], field: str) -> None:
    with pytest.raises(FieldError, match=field):
        recipe.identity(cluster, member, **options)


# --------------------------------------------------------------------------- the cloud-config


def files_written(user_data: bytes) -> tuple[dict[str, Write], bytes]:
    """What cloud-init's write_files writes (path: the Write step) and the runcmd script."""
    plan = build_plan("i-1", "web-a", "NoCloud", user_data)
    [module] = [m for m in plan.stages["init"] if m.name == "write-files"]
    writes = {s.path: s for s in module.steps if isinstance(s, Write)}
    [runcmd] = [s for m in plan.stages["modules-config"] if m.name == "runcmd"
                for s in m.steps if isinstance(s, Write)]
    assert runcmd.path == f"{SCRIPTS_DIR}/runcmd"
    return writes, runcmd.data


def test_cloud_init_writes_the_agents_files_and_starts_it() -> None:
    identity = recipe.identity("web", "web-a", transport="VSOCK")
    config = recipe.cloud_config(identity, BUNDLE, SECRETS, python="/usr/bin/python3.9")
    data = recipe.user_data(config)
    assert data.startswith(b"#cloud-config\n")
    assert yaml.safe_load(data) == config
    writes, runcmd = files_written(data)
    paths = recipe.GUEST_PATHS
    assert {path: (w.data, oct(w.mode)) for path, w in writes.items()} == {
        paths.bundle: (BUNDLE, "0o755"),
        paths.identity: (recipe.identity_text(identity).encode(), "0o644"),
        paths.tls_ca: (SECRETS.ca, "0o644"),
        paths.tls_cert: (SECRETS.cert, "0o644"),
        paths.tls_key: (SECRETS.key, "0o600"),
        paths.heartbeat_key: (SECRETS.heartbeat_key, "0o600"),
        paths.unit: (recipe.unit("/usr/bin/python3.9").encode(), "0o644"),
    }
    assert json.loads(writes[paths.identity].data) == identity
    assert runcmd.splitlines()[-2:] == [b"systemctl daemon-reload",
                                        f"systemctl enable --now {recipe.UNIT_NAME}".encode()]


def test_the_secrets_go_where_the_identity_says() -> None:
    paths = dataclasses.replace(
        recipe.GUEST_PATHS, tls_cert="/srv/ha/tls/a.crt", tls_key="/srv/ha/tls/a.key",
        tls_ca="/srv/ha/tls/ca.crt", heartbeat_key="/srv/ha/hb.key",
        unit="/etc/systemd/system/ha.service")
    identity = recipe.identity("web", "web-a", paths=paths)
    config = recipe.cloud_config(identity, BUNDLE, SECRETS, paths=paths)
    writes, runcmd = files_written(recipe.user_data(config))
    assert writes["/srv/ha/tls/a.key"].data == SECRETS.key
    assert writes["/srv/ha/hb.key"].data == SECRETS.heartbeat_key
    assert writes["/srv/ha/tls/ca.crt"].data == SECRETS.ca
    assert b"systemctl enable --now ha\n" in runcmd + b"\n"


def test_same_inputs_same_user_data() -> None:
    def render() -> bytes:
        identity = recipe.identity("web", "web-a")
        return recipe.user_data(recipe.cloud_config(identity, BUNDLE, SECRETS))

    assert render() == render()


def test_the_bundle_travels_compressed() -> None:
    config = recipe.cloud_config(recipe.identity("web", "web-a"), BUNDLE, SECRETS)
    [entry] = [f for f in config["write_files"] if f["path"] == recipe.GUEST_PATHS.bundle]
    assert entry["encoding"] == "gz+b64"
    assert len(base64.b64decode(entry["content"])) < len(BUNDLE)


@pytest.mark.parametrize(("identity", "bundle", "secrets", "field"), [
    ({"cluster": "web"}, BUNDLE, SECRETS, "member"),
    ({"cluster": "web", "member": "web-a", "color": "blue"}, BUNDLE, SECRETS, "color"),
    ({"cluster": "web", "member": "web-a"}, b"", SECRETS, "agent_bundle"),
    ({"cluster": "web", "member": "web-a"}, BUNDLE,
     dataclasses.replace(SECRETS, heartbeat_key=b""), "secrets.heartbeat_key"),
    ({"cluster": "web", "member": "web-a"}, BUNDLE,
     dataclasses.replace(SECRETS, key=b""), "secrets.key"),
])
def test_the_cloud_config_refuses_bad_input(
        identity: dict[str, Any], bundle: bytes, secrets: recipe.AgentSecrets,
        field: str) -> None:
    with pytest.raises(ValueError, match=field):
        recipe.cloud_config(identity, bundle, secrets)
