"""The simulator's guest side and its seams: the host/guest plan, the guest commands' wire,
and the zipapp the guests run (built here, run with this interpreter as the guests do).

Guest hosts themselves need root: tests/agent/test_guesthost.py boots them. Here the parts
that can fail on their own: a plan that does not read back the same on the guest's side,
a wire that garbles an argument, a bundle that is not reproducible, lacks a module the
guest imports, or makes each systemctl call import more than its client.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubevirtsim.cloudinit.planner import build_plan
from kubevirtsim.guestinit import bundle, client, pid1, plan
from kubevirtsim.guestinit.client import Reply, WireError
from kubevirtsim.guestinit.cloudinit_runner import CloudInitRunner
from kubevirtsim.guestinit.processes import Reaper
from kubevirtsim.guestinit.services import ServiceManager
from kubevirtsim.guestinit.tools import ControlServer

pytestmark = pytest.mark.unit

HACK = Path(__file__).resolve().parents[2] / "hack"
GUEST_MODULES = sorted(
    p.stem for p in (HACK / "kubevirtsim" / "guestinit").glob("*.py") if p.name != "bundle.py"
)

# --------------------------------------------------------------------------- the plan


def every_step_plan() -> plan.Plan:
    """A plan holding each step type once, with awkward values."""
    steps: list[plan.Step] = [
        plan.Write("/etc/x", b"\x00\xff binary\n", 0o600, append=True),
        plan.Symlink(path="/var/lib/cloud/instance", target="/var/lib/cloud/instances/i"),
        plan.Log("a warning with 'quotes' and \u00fcnicode"),
        plan.Fail("write_files[3].path: missing"),
        plan.Run(("/bin/sh", "-c", "echo $X"), {"INSTANCE_ID": "i", "EMPTY": ""}),
        plan.RunParts(("/var/lib/cloud/instance/scripts/a", "/var/lib/cloud/instance/scripts/b")),
        plan.Hostname("web", "web.example.org"),
        plan.Timezone("Europe/Berlin"),
        plan.FinalMessage(),
    ]
    stages = {name: [] for name in plan.STAGES} | {"init": [plan.Module("all", steps)]}
    return plan.Plan("i", "web", "ConfigDrive", stages, ["a note"])


def test_every_step_type_reads_back_the_same() -> None:
    original = every_step_plan()
    assert {type(s).op for s in original.stages["init"][0].steps} == set(plan.STEP_TYPES)
    text = original.dumps()
    assert plan.Plan.loads(text) == original
    assert plan.Plan.loads(text.encode()) == original


def test_a_built_plan_reads_back_the_same() -> None:
    built = build_plan(
        "uid-1",
        "vm-a",
        "NoCloud",
        b"#cloud-config\nbootcmd: [echo b]\nruncmd: [date]\ntimezone: UTC\n"
        b"write_files:\n  - {path: /a, content: x, permissions: '0600', defer: true}\n",
    )
    assert plan.Plan.from_json(json.loads(json.dumps(built.to_json()))) == built


def _mutated(change: Any) -> dict[str, Any]:
    value = every_step_plan().to_json()
    change(value)
    return value


def _steps(value: dict[str, Any]) -> list[dict[str, Any]]:
    return list(value["stages"][1]["modules"][0]["steps"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda v: _steps(v)[0].pop("path"),
            r"stages\[1\]\.modules\[0\]\.steps\[0\]\.path: missing",
        ),
        (
            lambda v: _steps(v)[0].update(op="frobnicate"),
            r"steps\[0\]\.op: unknown step 'frobnicate'",
        ),
        (lambda v: _steps(v)[0].update(data="not base64!"), r"steps\[0\]\.data: not base64"),
        (lambda v: _steps(v)[0].update(mode=True), r"steps\[0\]\.mode: must be int, not bool"),
        (lambda v: _steps(v)[4].update(argv=["/bin/sh", 5]), r"steps\[4\]\.argv\[1\]: must be str"),
        (lambda v: _steps(v)[4].update(env={"A": 1}), r"steps\[4\]\.env\.A: must be str"),
        (lambda v: v.update(datasource="Azure"), r"datasource: 'Azure' is not one of"),
        (lambda v: v["stages"].reverse(), r"stages: .* not in cloud-init's order"),
        (lambda v: v["stages"][0].update(name="init"), r"stages\[1\]\.name: 'init' .* twice"),
        (lambda v: v.pop("instance_id"), r"^instance_id: missing"),
        (lambda v: v.update(stages={}), r"stages: must be list, not dict"),
    ],
)
def test_a_bad_plan_names_the_field(change: Any, message: str) -> None:
    with pytest.raises(plan.PlanError, match=message):
        plan.Plan.from_json(_mutated(change))


def test_a_plan_that_is_not_json_or_an_object() -> None:
    with pytest.raises(plan.PlanError, match=r"plan\.json: not JSON"):
        plan.Plan.loads("{")
    with pytest.raises(plan.PlanError, match="plan: must be an object, not list"):
        plan.Plan.loads("[]")


def test_status_mirror() -> None:
    for state in plan.STATES:
        assert plan.decode_status(plan.encode_status(state, 1.5)) == state
    with pytest.raises(plan.PlanError, match="'booting' is not one of"):
        plan.encode_status("booting", 0)
    with pytest.raises(plan.PlanError, match="status: 'x' is not one of"):
        plan.decode_status(b'{"status": "x"}')
    with pytest.raises(plan.PlanError, match="not a JSON object"):
        plan.decode_status(b"[1]")


def test_overlay_names() -> None:
    assert [plan.overlay_name(p) for p in ("/etc", "/var/lib", "/")] == ["etc", "var_lib", "root"]


# --------------------------------------------------------------------------- the wire

ODD_ARGS = ["show", "-p", "A,B", "", "two words", "new\nline", "caf\u00e9", "raw\udce9byte", "-"]


def test_request_round_trip() -> None:
    data = client.encode_request("systemctl", ODD_ARGS, "/srv/with space")
    assert client.decode_request(data) == ("systemctl", ODD_ARGS, "/srv/with space")
    assert client.decode_request(client.encode_request("journalctl", [], "")) == (
        "journalctl",
        [],
        "/",
    )


def test_bad_requests() -> None:
    with pytest.raises(WireError, match="NUL"):
        client.encode_request("systemctl", ["a\0b"], "/")
    with pytest.raises(WireError, match="no known tool"):
        client.decode_request(b"rm\0/\0-rf")
    with pytest.raises(WireError, match="no known tool"):
        client.decode_request(b"")


def test_reply_round_trip() -> None:
    reply = Reply(3, ["inactive", "caf\u00e9 \udce9"], ["warning: x", ""])
    assert client.decode_reply(client.encode_reply(reply)) == (
        3,
        "inactive\ncaf\u00e9 \udce9\n",
        "warning: x\n\n",
    )
    assert client.decode_reply(client.encode_reply(Reply(-9))) == (-9, "", "")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is not 'RC OUT_LENGTH'"),
        (b"0 3", "is not 'RC OUT_LENGTH'"),
        (b"zero 3\nabc", "is not 'RC OUT_LENGTH'"),
        (b"0 10\nabc", "ends after 3 of 10 bytes"),
    ],
)
def test_bad_replies(data: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        client.decode_reply(data)


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        (["--unit=x", "sleep", "1"], 1),
        (["-u", "x", "sleep"], 2),
        (["-q", "--wait", "--unit", "y", "cmd", "--unit", "z"], 4),
        (["-p", "Restart=always", "-E", "A=B", "run"], 4),
        (["--", "-dashed-command"], 1),
        (["--unit", "x"], 2),
        ([], 0),
    ],
)
def test_systemd_run_command_start(argv: list[str], start: int) -> None:
    assert client.command_start(argv) == start


def test_which_resolves_as_systemd_run_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (tmp_path / "bin" / "data").write_text("not executable")
    monkeypatch.setenv("PATH", f"/nonexistent:{tmp_path / 'bin'}")
    monkeypatch.chdir(tmp_path)
    assert client.which("tool") == str(tool)
    assert client.which("./bin/tool") == str(tool)  # relative to the caller's cwd, made absolute
    assert client.which("data") is None
    assert client.which("missing") is None


# --------------------------------------------------------------------------- PID 1's end


@pytest.fixture
def control(tmp_path: Path) -> Iterator[str]:
    """A real ControlServer (its service manager, no services) on a socket in tmp_path."""
    path = str(tmp_path / "c.sock")
    runner = CloudInitRunner(every_step_plan(), Reaper(), lambda state: None)
    server = ControlServer(ServiceManager(Reaper()), runner, path)
    server.start()
    yield path
    server.listener.shutdown(socket.SHUT_RDWR)  # ends its accept loop
    server.listener.close()


def test_client_and_control_server(control: str) -> None:
    assert client.call("systemctl", ["is-active", "nosuch"], "/", control) == (3, "inactive\n", "")
    assert client.call("systemctl", ["is-active", "-q", "a", "b"], "/", control) == (3, "", "")
    rc, out, err = client.call("systemctl", ["--user", "status"], "/", control)
    assert (rc, out) == (1, "") and "user services are not simulated" in err
    # a unit name that is not UTF-8 reaches PID 1 and comes back as it was sent
    show = ["show", "-p", "Id,ActiveState", "caf\udce9"]
    assert client.call("systemctl", show, "/", control) == (
        0,
        "Id=caf\udce9.service\nActiveState=inactive\n",
        "",
    )


def test_control_server_answers_a_garbled_request(control: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(control)
        sock.sendall(b"nosuchtool\0/")
        sock.shutdown(socket.SHUT_WR)
        rc, out, err = client.decode_reply(client.read_all(sock))
    assert (rc, out) == (1, "") and err.startswith("guestinit: WireError: request names no")


# --------------------------------------------------------------------------- the zipapp


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[bundle.Bundle, Path]:
    result = bundle.build()
    path = tmp_path_factory.mktemp("bundle") / plan.BUNDLE_FILE
    path.write_bytes(result.data)
    return result, path


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    """This interpreter as the guests run it: isolated, no site module."""
    return subprocess.run(
        [sys.executable, "-I", "-S", *args], capture_output=True, text=True, timeout=60
    )


def test_bundle_holds_source_and_bytecode_of_every_guest_module(
    built: tuple[bundle.Bundle, Path],
) -> None:
    result, _ = built
    names = list(result.files)
    assert names == sorted(names)
    modules = [f"kubevirtsim/guestinit/{m}.py" for m in GUEST_MODULES]
    expected = ["__main__.py", "kubevirtsim/__init__.py", *modules]
    assert sorted(names) == sorted([*expected, *(n + "c" for n in expected)])
    assert "kubevirtsim/guestinit/bundle.py" not in names  # host side only
    with zipfile.ZipFile(io.BytesIO(result.data)) as archive:
        infos = archive.infolist()
        assert {i.date_time for i in infos} == {bundle.ZIP_TIME}
        assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
        pyc = archive.read("kubevirtsim/guestinit/client.pyc")
        source = archive.read("kubevirtsim/guestinit/client.py")
    assert pyc[:4] == bundle.importlib.util.MAGIC_NUMBER
    assert int.from_bytes(pyc[4:8], "little") == 0b11  # checked hash-based
    assert pyc[8:16] == bundle.importlib.util.source_hash(source)


def test_bundle_is_reproducible_across_processes(built: tuple[bundle.Bundle, Path]) -> None:
    program = (
        f"import sys; sys.path.insert(0, {str(HACK)!r}); {{}}"
        "from kubevirtsim.guestinit import bundle; print(bundle.build().sha256)"
    )
    plain = subprocess.run(
        [sys.executable, "-c", program.format("")], capture_output=True, text=True, check=True
    )
    loaded = subprocess.run(  # another process state: heavy imports first
        [sys.executable, "-c", program.format("import json, yaml, email, asyncio; ")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert plain.stdout.strip() == loaded.stdout.strip() == built[0].sha256
    assert hashlib.sha256(built[1].read_bytes()).hexdigest() == built[0].sha256


def test_guest_modules_import_from_the_bundle_alone(built: tuple[bundle.Bundle, Path]) -> None:
    """PID 1's imports resolve inside the zipapp, from bytecode, with no site-packages."""
    program = (
        f"import sys; sys.path.insert(0, {str(built[1])!r}); "
        "import kubevirtsim.guestinit.pid1, json; "
        "mods = {n: m.__file__ for n, m in sys.modules.items() if n.startswith('kubevirtsim')}; "
        "print(json.dumps(mods))"
    )
    result = _python("-c", program)
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)
    assert sorted(files) == sorted(
        ["kubevirtsim", "kubevirtsim.guestinit"]
        + [f"kubevirtsim.guestinit.{m}" for m in GUEST_MODULES if m != "__init__"]
    )
    assert all(f.startswith(f"{built[1]}/") and f.endswith(".pyc") for f in files.values())


def test_stale_bytecode_is_never_used(tmp_path: Path, built: tuple[bundle.Bundle, Path]) -> None:
    changed = tmp_path / "changed.pyz"
    with zipfile.ZipFile(io.BytesIO(built[0].data)) as old, zipfile.ZipFile(changed, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename == "kubevirtsim/guestinit/client.py":
                data += b"\nMARKER = 1\n"
            new.writestr(info, data)
    program = (
        f"import sys; sys.path.insert(0, {str(changed)!r}); "
        "import kubevirtsim.guestinit.client as c; print(c.MARKER, c.__file__.endswith('.py'))"
    )
    result = _python("-c", program)
    assert (result.returncode, result.stdout) == (0, "1 True\n"), result.stderr


def test_a_guest_command_imports_its_client_only(
    tmp_path: Path, built: tuple[bundle.Bundle, Path]
) -> None:
    """The shim's own command line, with -X importtime: what each systemctl call loads.
    Outside a guest there is no PID 1 to ask, and the command says so."""
    shim = pid1.shim(sys.executable, "systemctl", str(built[1]))
    script = tmp_path / "systemctl"
    script.write_text(shim.replace(" -I -S ", " -I -S -X importtime ", 1))
    script.chmod(0o755)
    result = subprocess.run(
        [str(script), "is-active", "x"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.endswith(
        "systemctl: System has not been booted by the simulated init "
        f"({client.CONTROL_SOCK}: No such file or directory)\n"
    )
    imported = {
        line.split("|")[2].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    ours = {m for m in imported if m.startswith("kubevirtsim")}
    assert ours == {"kubevirtsim", "kubevirtsim.guestinit", "kubevirtsim.guestinit.client"}
    heavy = {"re", "json", "socket", "enum", "typing", "subprocess", "threading", "runpy"}
    assert imported & heavy == set(), imported & heavy


def test_zipapp_main_dispatches(built: tuple[bundle.Bundle, Path]) -> None:
    usage = _python(str(built[1]))
    assert usage.returncode == 2 and "usage: guestinit.pyz" in usage.stderr
    not_pid1 = _python(str(built[1]), "boot", "/nonexistent")
    assert not_pid1.returncode == 2 and "must run as PID 1" in not_pid1.stderr
    tool = _python(str(built[1]), "journalctl", "-u", "x")
    assert tool.returncode == 1 and "System has not been booted" in tool.stderr
