"""The operator image's Containerfile, checked without a container engine (none runs here).

Two halves:
- BuildKit's own parser and the instruction-level rules of its linter read the file
  (hack/testbed/dockercheck.py, built from github.com/moby/buildkit), and the things the
  image must keep are asserted on what BuildKit parsed: a multi-stage build, a numeric
  non-root USER, the venv copied whole from the build stage, the entry point being
  guestha-operator, OCI labels with the version, no shell form where the runtime has no
  shell.
- The build stage's steps run into a folder on this machine (a venv, the wheel built from
  this checkout, bytecode, the agent bundle): the operator's entry point starts from it with
  nothing of the checkout on its path, finds the agent's sources and builds the same agent
  bundle, and writes nothing while it runs (the Deployment's root filesystem is
  read-only). The venv takes the third-party packages from this machine's Python
  (--system-site-packages) instead of resolving them anew from the package index.

Marked controlplane with the other tests that need Go-built tools (helm's in
test_packaging.py): the tier that builds and caches them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from guestha.cloudinit import bundle
from testbed import dockercheck

pytestmark = pytest.mark.controlplane

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"


@pytest.fixture(scope="module")
def parsed() -> dict[str, Any]:
    found = dockercheck.check(CONTAINERFILE)
    for ins in found["instructions"]:
        ins["command"] = ins["command"].lower()
    return found


def pairs(args: list[str]) -> dict[str, str]:
    """LABEL and ENV arguments as BuildKit gives them: key, value, "=" triples."""
    return {k: v.strip('"') for k, v in zip(args[::3], args[1::3], strict=True)}


def runtime(parsed: dict[str, Any]) -> list[dict[str, Any]]:
    """The instructions of the last stage (the image that ships)."""
    froms = [i for i, ins in enumerate(parsed["instructions"]) if ins["command"] == "from"]
    return list(parsed["instructions"][froms[-1]:])


def only(instructions: list[dict[str, Any]], command: str) -> dict[str, Any]:
    found = [i for i in instructions if i["command"] == command]
    assert len(found) == 1, f"{command}: {found}"
    return found[0]


def test_buildkit_parses_it_and_its_linter_finds_nothing(parsed: dict[str, Any]) -> None:
    assert parsed["warnings"] == []
    assert parsed["lint"] == []
    assert [s["name"] for s in parsed["stages"]] == ["build", ""]


def test_buildkit_and_its_linter_do_catch_mistakes(tmp_path: Path) -> None:
    """The checks above can fail: a file with lint findings and one that does not parse."""
    sloppy = tmp_path / "Sloppy"
    sloppy.write_text("FROM debian:12 as Build\nMAINTAINER me\n")
    assert [finding.split()[0] for finding in dockercheck.check(sloppy)["lint"]] == [
        "StageNameCasing", "FromAsCasing", "MaintainerDeprecated"]
    broken = tmp_path / "Broken"
    broken.write_text("FROM debian:12\nCOPY --nosuchflag=1 a b\n")
    with pytest.raises(subprocess.CalledProcessError):
        dockercheck.check(broken)


def test_the_runtime_runs_as_a_numeric_non_root_user(parsed: dict[str, Any]) -> None:
    user = only(runtime(parsed), "user")["args"][0]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, user
    assert gid == "" or (gid.isdigit() and int(gid) != 0), user


def test_the_runtime_copies_only_the_venv_from_the_build_stage(parsed: dict[str, Any]) -> None:
    copies = [i for i in runtime(parsed) if i["command"] == "copy"]
    assert [(c["flags"], c["args"]) for c in copies] == [(["--from=build"], ["/app", "/app"])]
    assert not [i for i in runtime(parsed) if i["command"] == "run"], "RUN needs a shell"


def test_the_entry_point_is_guestha_operator_in_exec_form(parsed: dict[str, Any]) -> None:
    entry = only(runtime(parsed), "entrypoint")
    assert entry["jsonForm"], "a shell-form ENTRYPOINT needs /bin/sh, which the runtime lacks"
    assert entry["args"] == ["/app/bin/guestha-operator"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "guestha-operator" in scripts
    path = pairs(only(runtime(parsed), "env")["args"])["PATH"]
    assert path.split(":")[0] == "/app/bin", "the manifests' command: guestha-operator"


def test_the_build_stage_makes_the_venv_the_bundle_and_the_bytecode(
        parsed: dict[str, Any]) -> None:
    build = " ".join(i["args"][0] for i in parsed["instructions"] if i["command"] == "run")
    for step in ("ca-certificates",  # Debian's pip checks the index against the system store
                 "python3 -m venv /app", "pip wheel", "/wheels/guestha-*.whl",
                 "uninstall --yes pip setuptools",  # build tools are not needed to run
                 "compileall -q --invalidation-mode unchecked-hash /app/lib",
                 "-m guestha.cloudinit.bundle /app/share/guestha-agent.pyz"):
        assert step in build, step


def test_the_labels_say_what_and_which_version(parsed: dict[str, Any]) -> None:
    labels = pairs(only(runtime(parsed), "label")["args"])
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.title"] == "guestha-operator"
    arg = only(runtime(parsed), "arg")["args"][0]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert arg == f"VERSION={version}"


def test_the_go_module_pins_the_buildkit_the_builder_names() -> None:
    mod = (dockercheck.SOURCE / "go.mod").read_text()
    assert f"github.com/moby/buildkit {dockercheck.BUILDKIT_VERSION}" in mod


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_the_build_steps_run_into_a_folder_give_a_working_operator(tmp_path: Path) -> None:
    app, wheels = tmp_path / "app", tmp_path / "wheels"
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args: str | Path, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([str(a) for a in args], cwd=cwd, env=clean, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, (args, out.stdout[-2000:], out.stderr[-2000:])
        return out

    src = tmp_path / "src"  # what the build stage's COPY lines bring, and nothing else
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "operator", src / "operator",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run(sys.executable, "-m", "venv", "--system-site-packages", app)
    # the wheel's build backend (setuptools, as pyproject.toml asks) from the package
    # index, as in the image's build
    run(app / "bin/pip", "wheel", "--no-deps", "--wheel-dir", wheels, src)
    (wheel,) = wheels.glob("guestha-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        (metadata,) = (n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line for line in whl.read(metadata).decode().splitlines()
                    if line.startswith("Requires-Dist: ")]
    # the image installs no extra: the operator's dependencies only, no client library
    assert any(r.startswith("Requires-Dist: kopf") for r in requires), requires
    assert all("extra ==" in r for r in requires if "kubernetes" in r or "pykube" in r), \
        requires
    run(app / "bin/pip", "install", "--no-deps", "--no-index", "--no-compile", wheel)
    run(app / "bin/python3", "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash",
        app / "lib")
    (app / "share").mkdir()
    printed = run(app / "bin/python3", "-m", "guestha.cloudinit.bundle",
                  app / "share/guestha-agent.pyz").stdout
    from_tree = bundle.build()
    assert from_tree.version in printed
    assert (app / "share/guestha-agent.pyz").read_bytes() == from_tree.data

    where = run(app / "bin/python3", "-c", "import guestha; print(guestha.__file__)",
                cwd=Path("/")).stdout.strip()
    assert Path(where).is_relative_to(app), where
    before = _files(app)
    helped = run(app / "bin/guestha-operator", "--help", cwd=Path("/"))
    assert "--liveness" in helped.stdout
    same = run(app / "bin/python3", "-c",
               "from guestha.controller.userdata import operator_bundle; "
               "print(operator_bundle().sha256)", cwd=Path("/")).stdout.strip()
    assert same == from_tree.sha256, "the operator in the folder builds the same agent"
    assert _files(app) == before, "nothing is written at run time (read-only root)"
