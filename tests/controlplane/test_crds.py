"""guestha's CRDs as a real kube-apiserver serves them: samples, explain, columns, defaults,
and the corpus of specs the apiserver must refuse.

The corpus lives in `invalid/*.yaml`: each file holds one object and `# expect: <text>`
comment lines; the apiserver must refuse the object with an error that contains every
expected text (the first one names the field path). A file with two documents is an
update case: the first document is created, then the second is applied over it and must
be refused (immutable fields, CEL transition rules).
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "manifests" / "samples"
INVALID = Path(__file__).resolve().parent / "invalid"
GUESTHA = "guestha.io/v1alpha1"


class Kube(Protocol):
    """What these tests need of the session's `kube` fixture (tests/conftest.py)."""

    kubeconfig: Path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> Any: ...


def sample_objects() -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) for every object in manifests/samples, in file order."""
    found = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


def in_namespace(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A copy of a namespaced object, moved to `namespace`."""
    moved = copy.deepcopy(obj)
    moved["metadata"]["namespace"] = namespace
    return moved


def as_list(objects: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def get(kube: Kube, kind: str, name: str, namespace: str) -> dict[str, Any]:
    out = kube.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
    return dict(json.loads(out))


def contains(actual: Any, wanted: Any) -> bool:
    """Whether `actual` holds everything in `wanted` (maps may have more keys)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            k in actual and contains(actual[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(contains(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return bool(actual == wanted)


@pytest.fixture(scope="module")
def namespace(kube: Kube) -> Iterator[str]:
    """A namespace of this module's own, deleted at the end with everything in it."""
    name = f"crds-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--timeout=120s")


# --- samples -------------------------------------------------------------------------------


def test_samples_are_in_the_apps_namespace_which_sorts_first() -> None:
    objects = sample_objects()
    first_file, first = objects[0]
    assert (first_file, first["kind"], first["metadata"]["name"]) == (
        "00-namespace.yaml",
        "Namespace",
        "apps",
    )
    assert {o["metadata"].get("namespace") for _, o in objects[1:]} == {"apps"}
    kinds = sorted(o["kind"] for _, o in objects[1:])
    assert kinds == [
        "InGuestCluster",
        "ServiceGroup",
        "Switchover",
        "VirtualMachine",
        "VirtualMachine",
        "VirtualMachine",
    ]


def test_sample_vms_carry_a_small_cloud_config() -> None:
    vms = [o for _, o in sample_objects() if o["kind"] == "VirtualMachine"]
    assert sorted(v["metadata"]["name"] for v in vms) == ["web-a", "web-b", "web-c"]
    for vm in vms:
        assert vm["spec"]["runStrategy"] == "Always"
        volumes = {v["name"]: v for v in vm["spec"]["template"]["spec"]["volumes"]}
        assert any("containerDisk" in v for v in volumes.values())
        seeds = [v["cloudInitNoCloud"] for v in volumes.values() if "cloudInitNoCloud" in v]
        assert len(seeds) == 1
        user_data = seeds[0]["userData"]
        assert user_data.startswith("#cloud-config\n")
        assert len(user_data.encode()) <= 2048  # KubeVirt's limit for inline user-data
        config = yaml.safe_load(user_data)
        assert config["write_files"] and config["runcmd"]


@pytest.mark.parametrize("file", sorted(p.name for p in SAMPLES.glob("*.yaml")))
def test_sample_passes_a_server_dry_run(kube: Kube, namespace: str, file: str) -> None:
    objects = [o for f, o in sample_objects() if f == file]
    if file == "00-namespace.yaml":
        out = kube.kubectl(
            "apply", "--server-side", "--dry-run=server", "-f", "-", input=as_list(objects)
        )
    else:
        out = kube.kubectl(
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            "-",
            input=as_list([in_namespace(o, namespace) for o in objects]),
        )
    assert "(server dry run)" in out.stdout


def test_samples_are_created_and_read_back(kube: Kube, namespace: str) -> None:
    objects = [in_namespace(o, namespace) for _, o in sample_objects() if o["kind"] != "Namespace"]
    kube.kubectl("create", "-f", "-", input=as_list(objects))
    for obj in objects:
        stored = get(
            kube,
            f"{obj['kind'].lower()}.{obj['apiVersion'].split('/')[0]}",
            obj["metadata"]["name"],
            namespace,
        )
        assert contains(stored["spec"], obj["spec"]), (obj["kind"], stored["spec"])
    shop = get(kube, "sg", "shop", namespace)
    assert shop["spec"]["resources"][2]["attributes"]["command"][:3] == [
        "python3",
        "-m",
        "http.server",
    ]
    listed = kube.kubectl("get", "guestha", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(listed) == [
        "inguestcluster.guestha.io/web",
        "servicegroup.guestha.io/shop",
        "switchover.guestha.io/shop-to-web-b",
    ]


# --- kubectl explain and printer columns ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "wanted"),
    [
        ("inguestcluster.spec.heartbeat", ["peerTimeoutMilliseconds", "LLT", "Default 3000"]),
        ("inguestcluster.spec.fencing.policy", ["KubeVirt", "SelfFence", "quorum lease"]),
        ("inguestcluster.status.conditions", ["Available", "Degraded", "lastTransitionTime"]),
        ("servicegroup.spec.systems", ["SystemList", "priority"]),
        (
            "servicegroup.spec.resources.monitor.offlineIntervalSeconds",
            ["OfflineMonitorInterval", "Default", "300"],
        ),
        ("servicegroup.spec.resources.attributes.command", ["Process", "no", "shell"]),
        ("servicegroup.status.lastFailover", ["durationMilliseconds", "most recent failover"]),
        ("switchover.spec.to", ["Left out", "failoverPolicy"]),
        ("switchover.status.phase", ["Pending", "Running", "Succeeded", "Failed"]),
    ],
)
def test_kubectl_explain_prints_descriptions(kube: Kube, path: str, wanted: list[str]) -> None:
    # The apiserver publishes a new CRD's OpenAPI a moment after it is established.
    deadline = time.monotonic() + 30
    while True:
        out = kube.kubectl("explain", path, check=False)
        text = " ".join(out.stdout.split())
        if out.returncode == 0 and all(w in text for w in wanted):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"kubectl explain {path}: {out.stdout}{out.stderr}")
        time.sleep(1)


def test_printer_columns(kube: Kube, namespace: str) -> None:
    objects = [
        {
            "apiVersion": GUESTHA,
            "kind": "InGuestCluster",
            "metadata": {"name": "cols"},
            "spec": {"members": [{"name": "a"}, {"name": "b"}, {"name": "c"}]},
        },
        {
            "apiVersion": GUESTHA,
            "kind": "ServiceGroup",
            "metadata": {"name": "cols"},
            "spec": {"cluster": "cols", "systems": [{"member": "a", "priority": 0}]},
        },
        {
            "apiVersion": GUESTHA,
            "kind": "Switchover",
            "metadata": {"name": "cols"},
            "spec": {"serviceGroup": "cols", "to": "b"},
        },
    ]
    kube.kubectl("create", "-n", namespace, "-f", "-", input=as_list(objects))
    statuses = {
        "igc": {
            "memberCount": 3,
            "readyMembers": 2,
            "quorum": True,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "reason": "MajorityRunning",
                    "message": "2 of 3 members running",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        },
        "sg": {"state": "Online", "onlineOn": ["a"], "failovers": 4},
        "swo": {"phase": "Running", "from": "a", "to": "b"},
    }
    for kind, status in statuses.items():
        done = kube.kubectl(
            "patch",
            kind,
            "cols",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
            check=kind != "swo",
        )
        # An operator in the same session may finish the Switchover first (its member VMs
        # do not exist): a finished phase is kept (CEL), and the table shows that one.
        assert done.returncode == 0 or "keeps its phase" in done.stderr, done.stderr

    # The cells are compared with the stored status read around the table, so the test holds
    # even when an operator in the same session rewrites the status meanwhile.
    def cell(value: Any) -> str:
        if value is None:
            return "<none>"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, list):
            return json.dumps(value, separators=(",", ":"))
        return str(value)

    def condition(status: dict[str, Any], type_: str) -> Any:
        found = [c["status"] for c in status.get("conditions", []) if c["type"] == type_]
        return found[0] if found else None

    columns: dict[str, tuple[list[str], Any]] = {
        "igc": (
            ["MEMBERS", "READY", "QUORUM", "AVAILABLE"],
            lambda o: [
                o["status"].get("memberCount"),
                o["status"].get("readyMembers"),
                o["status"].get("quorum"),
                condition(o["status"], "Available"),
            ],
        ),
        "sg": (
            ["CLUSTER", "STATE", "ONLINE-ON", "FAILOVERS"],
            lambda o: [
                o["spec"]["cluster"],
                o["status"].get("state"),
                o["status"].get("onlineOn"),
                o["status"].get("failovers"),
            ],
        ),
        "swo": (
            ["SERVICE-GROUP", "FROM", "TO", "PHASE"],
            lambda o: [
                o["spec"]["serviceGroup"],
                o["status"].get("from"),
                o["status"].get("to"),
                o["status"].get("phase"),
            ],
        ),
    }
    for kind, (names, values) in columns.items():
        for _ in range(20):
            before = get(kube, kind, "cols", namespace)
            out = kube.kubectl("get", kind, "cols", "-n", namespace).stdout
            after = get(kube, kind, "cols", namespace)
            if before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]:
                break
        head, line = out.rstrip("\n").splitlines()
        header = head.split()
        assert header == ["NAME", *names, "AGE"]
        # cells by the header's positions: an empty cell (a status field the operator of
        # the session left out) must not shift the others
        starts, at = [], 0
        for n in header:
            at = head.index(n, at)
            starts.append(at)
            at += len(n)
        row = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        wanted = ["cols", *(cell(v) for v in values(after))]
        assert row[:-1] == [w if w != "<none>" or r else "" for w, r in zip(
            wanted, row[:-1], strict=True)], kind
    wide = kube.kubectl("get", "sg", "cols", "-n", namespace, "-o", "wide").stdout
    assert wide.split()[:8] == [
        "NAME",
        "CLUSTER",
        "STATE",
        "ONLINE-ON",
        "FAILOVERS",
        "FROZEN",
        "TYPE",
        "AGE",
    ]


# --- defaults ------------------------------------------------------------------------------


def test_server_applies_defaults(kube: Kube, namespace: str) -> None:
    objects = [
        {
            "apiVersion": GUESTHA,
            "kind": "InGuestCluster",
            "metadata": {"name": "minimal"},
            "spec": {"members": [{"name": "a"}]},
        },
        {
            "apiVersion": GUESTHA,
            "kind": "ServiceGroup",
            "metadata": {"name": "minimal"},
            "spec": {
                "cluster": "minimal",
                "systems": [{"member": "a", "priority": 0}],
                "resources": [
                    {
                        "name": "app",
                        "type": "Process",
                        "attributes": {"command": ["sleep", "infinity"]},
                    }
                ],
                "dependencies": [{"serviceGroup": "other"}],
                "service": {"ports": [{"port": 80}]},
            },
        },
    ]
    kube.kubectl("create", "-n", namespace, "-f", "-", input=as_list(objects))
    cluster = get(kube, "igc", "minimal", namespace)["spec"]
    assert cluster == {
        "members": [{"name": "a", "capacity": 100}],
        "heartbeat": {"intervalMilliseconds": 500, "peerTimeoutMilliseconds": 3000},
        "fencing": {"policy": "KubeVirt", "selfFenceTimeoutSeconds": 10, "watchdog": True},
        "channel": {"transport": "Network", "port": 7480},
        "injection": {"mode": "Webhook"},
        "migration": {"maxPauseSeconds": 30},
        "agent": {"upgrade": "Automatic"},
    }
    group = get(kube, "sg", "minimal", namespace)["spec"]
    resource = group.pop("resources")[0]
    assert group == {
        "cluster": "minimal",
        "systems": [{"member": "a", "priority": 0}],
        "type": "Failover",
        "failoverPolicy": "Priority",
        "autoStart": True,
        "autoFailover": True,
        "frozen": False,
        "onlineRetryLimit": 0,
        "faultExpirySeconds": 0,
        "load": 0,
        "dependencies": [{"serviceGroup": "other", "kind": "OnlineLocal", "rigidity": "Firm"}],
        "service": {"ports": [{"port": 80, "protocol": "TCP"}]},
    }
    assert resource == {
        "name": "app",
        "type": "Process",
        "attributes": {"command": ["sleep", "infinity"]},
        "critical": True,
        "restartLimit": 0,
        "toleranceLimit": 0,
        "confIntervalSeconds": 600,
        "onlineWaitLimit": 2,
        "faultOnMonitorTimeouts": 4,
        "monitor": {"intervalSeconds": 60, "offlineIntervalSeconds": 300, "timeoutSeconds": 60},
        "timeouts": {"onlineSeconds": 300, "offlineSeconds": 300, "cleanSeconds": 60},
    }
    # A partly given object keeps what was given and gets the rest.
    kube.kubectl(
        "create",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": GUESTHA,
                "kind": "InGuestCluster",
                "metadata": {"name": "partial"},
                "spec": {
                    "memberSelector": {"matchLabels": {"ha": "web"}},
                    "heartbeat": {"intervalMilliseconds": 1000},
                    "fencing": {"policy": "None"},
                },
            }
        ),
    )
    partial = get(kube, "igc", "partial", namespace)["spec"]
    assert partial["heartbeat"] == {"intervalMilliseconds": 1000, "peerTimeoutMilliseconds": 3000}
    assert partial["fencing"] == {"policy": "None", "selfFenceTimeoutSeconds": 10, "watchdog": True}


# --- accepted edge cases -------------------------------------------------------------------


EDGE_CASES: dict[str, dict[str, Any]] = {
    "selector-exists": {
        "kind": "InGuestCluster",
        "spec": {
            "memberSelector": {"matchExpressions": [{"key": "ha", "operator": "Exists"}]},
            "channel": {"transport": "VSOCK", "port": 1},
            "injection": {"mode": "Template"},
            "migration": {"maxPauseSeconds": 0},
        },
    },
    "every-resource-type": {
        "kind": "ServiceGroup",
        "spec": {
            "cluster": "web",
            "type": "Parallel",
            "failoverPolicy": "RoundRobin",
            "systems": [{"member": "web-a", "priority": 5}, {"member": "web-b", "priority": 1}],
            "autoStartList": ["web-b"],
            "resources": [
                {
                    "name": "vip",
                    "type": "IP",
                    "attributes": {"address": "fd00::10", "prefixLength": 64, "interface": "eth0"},
                },
                {
                    "name": "db",
                    "type": "OCF",
                    "dependsOn": ["vip"],
                    "attributes": {
                        "agent": "ocf:heartbeat:pgsql",
                        "parameters": {"pgport": 5432, "pgdata": "/srv/pg"},
                    },
                },
                {"name": "unit", "type": "Systemd", "attributes": {"unit": "nginx.service"}},
                {
                    "name": "app",
                    "type": "Application",
                    "dependsOn": ["db", "vip"],
                    "attributes": {
                        "startProgram": "/opt/app/start",
                        "stopProgram": "/opt/app/stop",
                        "pidFiles": ["/run/app.pid"],
                        "user": "app",
                        "env": {"APP_MODE": "ha"},
                    },
                },
                {
                    "name": "data",
                    "type": "Mount",
                    "attributes": {
                        "device": "LABEL=data",
                        "mountPoint": "/srv/data",
                        "createMountPoint": True,
                    },
                },
            ],
            "dependencies": [
                {"serviceGroup": "db-tier", "kind": "OnlineLocal", "rigidity": "Hard"},
                {"serviceGroup": "backup", "kind": "OfflineLocal", "rigidity": "Soft"},
            ],
            "service": {
                "name": "edge",
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080},
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        },
    },
    "switchover-to-anyone": {"kind": "Switchover", "spec": {"serviceGroup": "shop"}},
}


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_cases_are_accepted(kube: Kube, namespace: str, name: str) -> None:
    case = EDGE_CASES[name]
    obj = {
        "apiVersion": GUESTHA,
        "kind": case["kind"],
        "metadata": {"name": name},
        "spec": case["spec"],
    }
    kube.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(obj))


# --- refused specs -------------------------------------------------------------------------


def invalid_cases() -> list[Path]:
    return sorted(INVALID.glob("*.yaml"))


def expectations(path: Path) -> list[str]:
    return [
        line.split(":", 1)[1].strip()
        for line in path.read_text().splitlines()
        if line.startswith("# expect:")
    ]


def test_the_invalid_corpus_is_well_formed() -> None:
    cases = invalid_cases()
    assert len(cases) >= 20
    for path in cases:
        assert expectations(path), f"{path.name} has no '# expect:' line"
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) in (1, 2), path.name
        assert all("namespace" not in d.get("metadata", {}) for d in docs), path.name
        if len(docs) == 2:
            assert docs[0]["metadata"]["name"] == docs[1]["metadata"]["name"], path.name


@pytest.mark.parametrize("path", invalid_cases(), ids=lambda p: p.stem)
def test_invalid_spec_is_refused(kube: Kube, namespace: str, path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    if len(docs) == 1:
        result = kube.kubectl(
            "create",
            "--dry-run=server",
            "-n",
            namespace,
            "-f",
            "-",
            input=json.dumps(docs[0]),
            check=False,
        )
    else:
        kube.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(docs[0]))
        result = kube.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-n",
            namespace,
            "-f",
            "-",
            input=json.dumps(docs[1]),
            check=False,
        )
    assert result.returncode != 0, f"{path.name} was accepted:\n{result.stdout}"
    for expected in expectations(path):
        assert expected in result.stderr, f"{path.name}: {expected!r} not in {result.stderr}"


def test_a_finished_switchover_keeps_its_phase(kube: Kube, namespace: str) -> None:
    kube.kubectl(
        "create",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": GUESTHA,
                "kind": "Switchover",
                "metadata": {"name": "finished"},
                "spec": {"serviceGroup": "shop"},
            }
        ),
    )

    def set_status(status: dict[str, Any], check: bool = True) -> Any:
        return kube.kubectl(
            "patch",
            "swo",
            "finished",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
            check=check,
        )

    final = {"Succeeded", "Failed"}

    def phase() -> Any:
        return get(kube, "swo", "finished", namespace).get("status", {}).get("phase")

    # Unfinished phases move freely. An operator running in the same session may finish
    # the Switchover on its own meanwhile (its group does not exist here): from then on
    # only the refusal below can be checked.
    for step in ({"phase": "Pending"}, {"phase": "Running", "from": "web-a", "to": "web-b"}):
        result = set_status(step, check=False)
        if result.returncode != 0:
            assert phase() in final, result.stderr
            assert "keeps its phase" in result.stderr
            break
    if phase() not in final:
        set_status({"phase": "Succeeded", "message": "shop is online on web-b"}, check=False)
    assert phase() in final
    set_status({"message": "a note may still change"})
    refused = set_status({"phase": "Running"}, check=False)
    assert refused.returncode != 0
    assert "status.phase" in refused.stderr
    assert "keeps its phase" in refused.stderr
