"""docs/api-reference.md is what hack/apidocs renders from the CRDs, and it covers them."""

from __future__ import annotations

import pytest
import yaml

from testbed import apidocs

pytestmark = pytest.mark.unit


def test_the_checked_in_reference_is_fresh() -> None:
    assert apidocs.OUTPUT.read_text() == apidocs.render(), (
        "docs/api-reference.md is stale: run hack/apidocs")


def test_every_field_of_every_crd_has_a_row() -> None:
    text = apidocs.render()
    for path in sorted(apidocs.CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        kind = crd["spec"]["names"]["kind"]
        section = text.split(f"## {kind}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("spec", "status"):
            schema = root["properties"].get(part)
            if schema is None:
                continue
            block = section.split(f"### {kind}.{part}\n", 1)[1].split("\n### ", 1)[0]
            for field, _, _ in apidocs._fields(schema, ""):
                assert f"| `{field}` |" in block, f"{kind}.{part}.{field}"
