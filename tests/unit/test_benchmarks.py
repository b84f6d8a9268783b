"""Benchmarks stay runnable, and kits stay below them.

Benchmarks are not run by the test suite (their figures take minutes); what can silently
break is their start: an import moved, a kit renamed. Each starts here through
hack/bench/run, the way README's Benchmarks section runs them. And the direction of
dependencies: benchmarks import kits, kits never import a benchmark or a test, tests never
import a benchmark, and no benchmark patches sys.path (the launcher sets the path).
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest

from kits import sources
from kits.interpreters import agent_python

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "hack" / "bench" / "run"
BENCH = ROOT / "hack" / "bench"
KITS = ROOT / "tests" / "kits"


def benchmarks() -> list[str]:
    """The benchmarks hack/bench/run knows (it lists them on a bare call)."""
    done = subprocess.run([str(RUN)], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0  # a usage error
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("benchmarks:")]
    return line.split(":", 1)[1].split()


imports = sources.imported


def uses_sys_path(path: Path) -> bool:
    return any(isinstance(node, ast.Attribute) and node.attr == "path"
               and isinstance(node.value, ast.Name) and node.value.id == "sys"
               for node in ast.walk(ast.parse(path.read_text(), str(path))))


def test_the_launcher_knows_every_benchmark() -> None:
    programs = sorted(p.stem for p in BENCH.glob("*.py")
                      if 'if __name__ == "__main__":' in p.read_text())
    assert benchmarks() == programs
    assert {"agent", "channel", "controlplane", "fsprobe"} <= set(programs)


@pytest.mark.parametrize("name", benchmarks())
def test_each_benchmark_starts(name: str) -> None:
    """`--help` imports everything the benchmark needs and parses its options."""
    done = subprocess.run([str(RUN), name, "--help"], capture_output=True, text=True,
                          timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: hack/bench/run {name}"), done.stdout


def test_an_unknown_benchmark_is_named() -> None:
    done = subprocess.run([str(RUN), "nonesuch"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "no benchmark 'nonesuch'" in done.stderr


def test_fsprobe_runs_with_the_guests_python() -> None:
    """The one benchmark meant for the guests' interpreter, in its quickest mode."""
    done = subprocess.run([str(RUN), "fsprobe", "--trials", "1"], capture_output=True,
                          text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "GUESTHA_BENCH_PYTHON": agent_python()})
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["look"]["n"] == figures["check_start"]["n"] == 1


def test_kits_import_no_benchmark_and_no_test() -> None:
    bad = {f"{path.name}: {name}" for path in sorted(KITS.glob("*.py"))
           for name in imports(path)
           if name.split(".")[0] in ("bench", "tests", "conftest", "resource_helpers",
                                     "kubevirtkit")
           or name.split(".")[-1].startswith("test_")}
    assert not bad, sorted(bad)


def test_tests_import_no_benchmark() -> None:
    tests = [p for p in (ROOT / "tests").rglob("*.py") if KITS not in p.parents]
    bad = {f"{path.relative_to(ROOT)}: {name}" for path in tests for name in imports(path)
           if name.split(".")[0] == "bench"}
    assert not bad, sorted(bad)


def test_no_benchmark_patches_sys_path() -> None:
    bad = [p.name for p in sorted(BENCH.glob("*.py")) if uses_sys_path(p)]
    assert not bad


def test_the_checks_see_what_they_are_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import sys\nsys.path.insert(0, '.')\nfrom bench.agent import main\n"
                      "from . import x\n")
    assert imports(sample) == {"sys", "bench.agent", "."}
    assert uses_sys_path(sample)
    sample.write_text("import sys\nprint(sys.argv)\n")
    assert not uses_sys_path(sample)
