"""The OLM bundle checked by the operator framework's own validation library
(github.com/operator-framework/api, built by hack/testbed/build.py into a small program,
hack/gotools/bundlevalidate), and its examples accepted by a real apiserver.

The library's checks are OLM's: the bundle loads as OLM's tooling loads it, owned CRDs
are in the bundle, install modes, examples against the owned APIs, OperatorHub's fields,
removed APIs for the Kubernetes version the test bed runs. It does not read descriptor
paths; the program adds that check (DescriptorPathNotInCRD) beside the library's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from testbed import build

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundle"
CSV = "manifests/guestha.clusterserviceversion.yaml"


@pytest.fixture(scope="module")
def validator() -> Path:
    return build.build_tool("bundlevalidate")


def validate(validator: Path, folder: Path) -> tuple[int, list[dict[str, Any]], str]:
    minor = ".".join(build.KUBERNETES_VERSION.lstrip("v").split(".")[:2])
    result = subprocess.run([str(validator), "-k8s-version", minor, str(folder)],
                            capture_output=True, text=True, timeout=120)
    findings = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, findings, result.stderr


def broken_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(BUNDLE, copy)
    return copy


def test_the_bundle_passes_the_operator_frameworks_validation(validator: Path) -> None:
    code, findings, stderr = validate(validator, BUNDLE)
    assert (code, findings) == (0, []), stderr


def test_a_csv_whose_owned_crd_is_missing_is_refused(validator: Path, tmp_path: Path) -> None:
    folder = broken_copy(tmp_path)
    (folder / "manifests" / "switchovers.guestha.io.yaml").unlink()
    code, findings, _ = validate(validator, folder)
    assert code == 1
    assert [(f["level"], f["type"]) for f in findings] == [("Error", "BundleNotValid")]
    assert findings[0]["detail"] == ('owned CRD "guestha.io/v1alpha1, Kind=Switchover" '
                                     'not found in bundle "guestha.v0.1.0"')


def test_a_bad_descriptor_path_is_refused(validator: Path, tmp_path: Path) -> None:
    folder = broken_copy(tmp_path)
    csv = folder / CSV
    text = csv.read_text()
    assert text.count("- path: onlineOn\n") == 1
    csv.write_text(text.replace("- path: onlineOn\n", "- path: onlineon\n"))
    code, findings, _ = validate(validator, folder)
    assert code == 1
    assert [(f["type"], f["value"]) for f in findings] == [
        ("DescriptorPathNotInCRD", "onlineon")]
    assert findings[0]["detail"] == ('ServiceGroup descriptor path "onlineon": the CRD\'s '
                                     'status schema has no field "onlineon"')


def test_a_csv_without_a_supported_install_mode_is_refused(validator: Path,
                                                           tmp_path: Path) -> None:
    folder = broken_copy(tmp_path)
    csv = folder / CSV
    text = csv.read_text()
    assert text.count("type: AllNamespaces\n    supported: true") == 1
    csv.write_text(text.replace("type: AllNamespaces\n    supported: true",
                                "type: AllNamespaces\n    supported: false"))
    code, findings, _ = validate(validator, folder)
    assert code == 1
    assert [f["detail"] for f in findings] == [
        "(guestha.v0.1.0) none of InstallModeTypes are supported"]


def test_the_examples_pass_a_server_side_dry_run(kube: Any) -> None:
    import yaml
    csv = yaml.safe_load((BUNDLE / CSV).read_text())
    examples = json.loads(csv["metadata"]["annotations"]["alm-examples"])
    namespace = f"olm-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", namespace)
    try:
        out = kube.kubectl("create", "--dry-run=server", "-n", namespace, "-o", "name",
                           "-f", "-", input=json.dumps(
                               {"apiVersion": "v1", "kind": "List", "items": examples}))
        assert out.stdout.split() == ["inguestcluster.guestha.io/web",
                                      "servicegroup.guestha.io/shop",
                                      "switchover.guestha.io/shop-to-web-b"]
    finally:
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
