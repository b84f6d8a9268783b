"""The agent's bundle upgrade rules without a guest: the launcher's step as a table, what
PUT /v1/bundle refuses (naming the field), the checks of a bundle's bytes, the files the
launcher leaves behind, and an older agent's status (without `bundle`) still read.
(The real thing, a guest's agent restarting into a bundle: tests/agent/test_agent_upgrade.py.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from guestha.agent import bundles
from guestha.agent.bundles import ABANDON, ROLLBACK, RUN, TRY, BundleFiles, launch_step
from guestha.cloudinit import bundle, recipe
from guestha.protocol.bundle import MAX_BUNDLE_BYTES, BundleInstalled, BundleUpload
from guestha.protocol.fields import FieldError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("marker", "trial_exists", "running_trial", "step"), [
    (None, False, False, RUN),  # no upgrade under way
    (None, True, False, RUN),  # a leftover trial file (removed by launch)
    ({"starts": 0}, True, False, TRY),  # just installed
    ({"starts": 1}, True, False, TRY),  # it crashed once: once more
    ({"starts": 2}, True, False, ROLLBACK),  # it never came up in MAX_TRIAL_STARTS starts
    ({"starts": 7}, True, False, ROLLBACK),
    ({"starts": -1}, True, False, ROLLBACK),  # a marker that makes no sense: the old one
    ({"starts": "1"}, True, False, ROLLBACK),
    ({}, True, False, ROLLBACK),
    ({"starts": 0}, False, False, ABANDON),  # the trial file is gone
    ({"starts": 1}, True, True, RUN),  # this process is the trial: it runs (and commits)
])
def test_launch_step(marker: dict[str, Any] | None, trial_exists: bool, running_trial: bool,
                     step: str) -> None:
    assert bundles.MAX_TRIAL_STARTS == 2
    assert launch_step(marker, trial_exists, running_trial) == step


def upload_body(change: dict[str, Any]) -> dict[str, Any]:
    return {**BundleUpload.of(b"some bytes", "v1").to_dict(), **change}


def test_upload_round_trip() -> None:
    upload = BundleUpload.of(b"bytes of a bundle", "v1.2-3")
    assert BundleUpload.from_dict(upload.to_dict()) == upload


@pytest.mark.parametrize(("change", "message"), [
    ({"sha256": "ab" * 32}, "body.sha256: the bundle's sha256 is"),
    ({"sha256": "AB" * 32}, "body.sha256: 64 lower-case hex digits"),
    ({"sha256": "ab"}, "body.sha256: 64 lower-case hex digits"),
    ({"version": "1 2"}, "body.version: at most 64 letters"),
    ({"version": "x" * 65}, "body.version: at most 64 letters"),
    ({"version": ""}, "body.version: must be a non-empty string"),
    ({"bundle": "%%%"}, "body.bundle: not base64"),
    ({"bundle": ""}, "body.bundle: must be a non-empty string"),
    ({"bundle": "A" * ((MAX_BUNDLE_BYTES + 2) // 3 * 4 + 4)}, "body.bundle: larger than"),
])
def test_upload_refusals_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(FieldError) as e:
        BundleUpload.from_dict(upload_body(change))
    assert str(e.value).startswith(message), e.value


def test_installed_answer_round_trip() -> None:
    answer = BundleInstalled("op-1", 3, "v2", "v1", True)
    assert BundleInstalled.from_dict(answer.to_dict()) == answer
    with pytest.raises(FieldError, match=r"body\.installed"):
        BundleInstalled.from_dict({**answer.to_dict(), "installed": False})


def test_check_bundle() -> None:
    good = bundle.build(version="v-test")
    bundles.check_bundle(good.data, "v-test")
    with pytest.raises(ValueError, match=r"the bundle is version .v-test., not .v-other."):
        bundles.check_bundle(good.data, "v-other")
    with pytest.raises(ValueError, match="not an agent bundle"):
        bundles.check_bundle(b"#!/bin/sh\nexit 0\n", "v-test")
    assert bundle.build().version != "v-test"  # without the hook: the content hash


def test_files_of_a_trial_name_the_stable_bundle(tmp_path: Path) -> None:
    stable = BundleFiles("/usr/local/lib/guestha/guestha-agent.pyz",
                         "/usr/local/lib/guestha/guestha-agent.pyz", str(tmp_path))
    assert not stable.is_trial
    trial = stable.trial_path("v2")
    assert trial == "/usr/local/lib/guestha/guestha-agent.pyz.trial-v2"
    assert BundleFiles(stable.stable, trial, str(tmp_path)).is_trial


def write_json(path: Path, raw: Any) -> None:
    path.write_text(json.dumps(raw))


def test_launch_rolls_back_a_trial_that_never_came_up(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    stable = tmp_path / "agent.pyz"
    stable.write_bytes(b"old")
    files = BundleFiles(str(stable), str(stable), str(state))
    files.install(b"new", "v2", "v1", "op-1")
    trial = Path(files.trial_path("v2"))
    assert trial.read_bytes() == b"new" and stable.read_bytes() == b"old"
    marker = json.loads((state / bundles.TRIAL_FILE).read_text())
    assert marker["starts"] == 0 and marker["path"] == str(trial)
    marker["starts"] = bundles.MAX_TRIAL_STARTS  # started that often, never committed
    write_json(state / bundles.TRIAL_FILE, marker)

    files.launch([])  # rolls back: does not exec

    assert not trial.exists() and not (state / bundles.TRIAL_FILE).exists()
    assert stable.read_bytes() == b"old"
    rollback = files.status().rollback
    assert rollback is not None and rollback.version == "v2"
    assert "did not come up in 2 start(s); v1 restored" in rollback.reason
    # a new install is a new try: the rollback is forgotten until it fails too
    files.install(b"newer", "v3", "v1", "op-2")
    assert files.status().rollback is None


def test_launch_drops_leftovers(tmp_path: Path) -> None:
    stable = tmp_path / "agent.pyz"
    stable.write_bytes(b"old")
    (tmp_path / "agent.pyz.trial-v2").write_bytes(b"committed, or never tried")
    files = BundleFiles(str(stable), str(stable), str(tmp_path))
    files.launch([])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.pyz"]
    # a marker whose trial file is gone is dropped
    write_json(tmp_path / bundles.TRIAL_FILE, {"path": str(tmp_path / "gone"), "starts": 0})
    files.launch([])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.pyz"]


def test_a_trial_commits_itself(tmp_path: Path) -> None:
    stable = tmp_path / "agent.pyz"
    stable.write_bytes(b"old")
    files = BundleFiles(str(stable), str(stable), str(tmp_path))
    files.install(b"new", "v2", "v1", "op-1")
    trial = BundleFiles(str(stable), files.trial_path("v2"), str(tmp_path))
    trial.commit("v2")
    assert stable.read_bytes() == b"new"
    assert (tmp_path / "agent.pyz.previous").read_bytes() == b"old"
    assert not (tmp_path / bundles.TRIAL_FILE).exists()
    # the file the trial runs from stays until the next start's launcher
    assert Path(trial.runs).exists()


def test_the_unit_never_gives_up_restarting_the_agent() -> None:
    text = recipe.unit()
    unit_section = text.split("[Service]")[0]
    assert "StartLimitIntervalSec=0\n" in unit_section
    assert "Restart=always\n" in text and "KillMode=process\n" in text
