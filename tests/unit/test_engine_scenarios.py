"""The engine's golden scenarios: each file's state in, its expected plan out.

Each file in tests/unit/engine_scenarios/ is one rule, policy or edge (see
tests/kits/enginescenarios.py for the format). On a difference the test prints the
scenario's description and a unified diff of the expected and the actual plan.

Regenerating: `GUESTHA_UPDATE_GOLDEN=1 pytest tests/unit/test_engine_scenarios.py`
rewrites every file's `expect` from what the engine plans now. Then read every changed
file: the expectation must be what the rules say is right, not what the code did.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest
import yaml

from guestha.engine import plan, reasons
from kits import enginescenarios as sc

pytestmark = pytest.mark.unit

UPDATE = os.environ.get("GUESTHA_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("path", sc.files(), ids=lambda p: p.stem)
def test_scenario(path: Path) -> None:
    data = sc.read(path)
    assert str(data.get("description", "")).strip(), f"{path.name}: no description"
    got = plan(sc.state(data))
    assert all(m.strip() for m in sc.messages(got)), "every message says something"
    actual = sc.compact(got)
    if UPDATE:
        sc.write_expect(path, actual)
        return
    expected = data.get("expect")
    if expected != actual:
        want = yaml.safe_dump(expected, sort_keys=False).splitlines()
        have = yaml.safe_dump(actual, sort_keys=False).splitlines()
        diff = "\n".join(difflib.unified_diff(want, have, "expected", "planned", lineterm=""))
        pytest.fail(f"{path.name}: {' '.join(str(data['description']).split())}\n{diff}",
                    pytrace=False)


def test_there_are_enough_scenarios() -> None:
    assert len(sc.files()) >= 40


def test_reasons_are_camel_case_words() -> None:
    assert reasons.ALL
    for word in reasons.ALL:
        assert re.fullmatch(r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)*", word), word


def test_reasons_are_distinct() -> None:
    names = [k for k, v in vars(reasons).items() if k.isupper() and isinstance(v, str)]
    values = [getattr(reasons, k) for k in names]
    assert len(values) == len(set(values))
