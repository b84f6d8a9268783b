"""A checkout stands alone: no tracked file reads or links anything outside it.

A user clones the project into an empty folder and runs `bash hack/demo`; nothing beside
the checkout exists there. So every tracked file is scanned for the ways a path can leave
the checkout: relative `../` paths (Markdown links, strings) that climb above its root,
`Path(__file__)` parents beyond the root, `.parent` of the repository root, absolute paths
into the folder that holds the checkout, environment variables naming such a folder, and
symbolic links pointing out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
# This file spells out the patterns it looks for (and needs the folder that holds the
# checkout to look for it): it is the one file not scanned.
SELF = Path(__file__).resolve().relative_to(REPO).as_posix()

URL = re.compile(r"[a-zA-Z][\w+.-]*://\S+")
UP = re.compile(r"(?<![\w.])((?:\.\./)+)[\w.-]*")  # ../../x, not .../x
FILE_PARENTS = re.compile(r"Path\(__file__\)(?:\.resolve\(\))?\.parents\[(\d+)\]")
FILE_PARENT_CHAIN = re.compile(r"Path\(__file__\)(?:\.resolve\(\))?((?:\.parent)+)\b")
ROOT_PARENT = re.compile(r"\b(?:REPO|ROOT|REPO_ROOT)\.parent\b")
# an environment variable that once pointed at a folder beside the checkout
SIBLING_ENV = re.compile("GUESTHA_" + "SHARED")


def tracked() -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to say which files are tracked")
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True,
                         check=True).stdout
    return [p for p in out.decode().split("\0") if p]


def escapes(path: str, text: str, holder: str,
            beside: frozenset[str] | None = None) -> list[str]:
    """How the file at `path` (relative to the root) with content `text` points outside
    the checkout, whose parent folder is `holder` (pure: the rules, tested below too).

    `beside`: the names of what lies beside the checkout in `holder`; an absolute path
    into `holder` counts only when it names one of them. A checkout may sit in a folder
    such as /tmp, where a test's own /tmp/x is not a path beside the checkout. None: any
    name counts."""
    depth = len(PurePosixPath(path).parts) - 1  # folders between the root and the file
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        plain = URL.sub("", line)
        for match in UP.finditer(plain):
            if match.group(1).count("../") > depth:
                found.append(f"{path}:{number}: {match.group(0)} climbs above the checkout")
        for match in FILE_PARENTS.finditer(line):
            if int(match.group(1)) > depth:
                found.append(f"{path}:{number}: {match.group(0)} is above the checkout")
        for match in FILE_PARENT_CHAIN.finditer(line):
            if match.group(1).count(".parent") - 1 > depth:
                found.append(f"{path}:{number}: {match.group(0)} is above the checkout")
        for pattern in (ROOT_PARENT, SIBLING_ENV):
            for match in pattern.finditer(line):
                found.append(f"{path}:{number}: {match.group(0)} is outside the checkout")
        if holder not in ("", "/"):
            for match in re.finditer(rf"(?<![\w.}})\]$-]){re.escape(holder)}/([\w.-]*)", plain):
                if beside is None or match.group(1) in beside:
                    found.append(f"{path}:{number}: {match.group(0)} is outside the checkout")
    return found


def test_no_tracked_file_refers_to_a_path_outside_the_checkout() -> None:
    # What lies beside the checkout, and the folder its tests were once read from.
    beside = frozenset({"shared", *(p.name for p in REPO.parent.iterdir() if p != REPO)})
    found = []
    for path in tracked():
        if path == SELF:
            continue
        full = REPO / path
        if full.is_symlink():
            target = (full.parent / os.readlink(full)).resolve()
            if not target.is_relative_to(REPO):
                found.append(f"{path}: a symbolic link to {target}")
            continue
        try:
            text = full.read_text()
        except (UnicodeDecodeError, FileNotFoundError):
            continue  # binary, or deleted in the work tree
        found += escapes(path, text, str(REPO.parent), beside)
    assert not found, "paths outside the checkout:\n" + "\n".join(found)


@pytest.mark.parametrize(("path", "line", "leaves"), [
    ("README.md", "see [the brief](../" + "shared/DESIGN.md)", True),
    ("docs/x.md", "see [the API](../README.md)", False),
    ("docs/x.md", "see [it](../../elsewhere.md)", True),
    ("docs/x.md", "PUT .../virtualmachines/NAME/stop", False),
    ("docs/x.md", "https://example.org/a/../b", False),
    ("tests/unit/t.py", 'parse("heartbeat:../x")', False),
    ("tests/unit/t.py", "Path(__file__).resolve().parents[2]", False),
    ("tests/unit/t.py", "Path(__file__).resolve().parents[3] / 'shared'", True),
    ("hack/devcluster", "Path(__file__).resolve().parent.parent / 'operator'", False),
    ("hack/devcluster", "Path(__file__).resolve().parent.parent.parent", True),
    ("hack/testbed/devcluster.py", "REPO" + ".parent / 'shared'", True),
    ("hack/testbed/x.py", "os.environ['GUESTHA_" + "SHARED']", True),
    ("hack/x.py", "open('/home/me" + "/shared/crds.yaml')", True),
    ("hack/x.py", 'f"{base}/home/me/{name}"', False),
    ("hack/x.py", "open('/usr/lib/ocf/resource.d')", False),
])
def test_the_rules(path: str, line: str, leaves: bool) -> None:
    assert bool(escapes(path, line, "/home/me")) is leaves


@pytest.mark.parametrize(("line", "leaves"), [
    ('open("/tmp/shared/kubevirt/crds.yaml")', True),  # beside the checkout
    ('marker = "/tmp/marker-"', False),  # a test's own file in /tmp, not beside it
    ('echo = "/tmp/x"', False),
])
def test_a_checkout_in_tmp_flags_only_what_lies_beside_it(line: str, leaves: bool) -> None:
    assert bool(escapes("tests/t.py", line, "/tmp", frozenset({"shared"}))) is leaves
