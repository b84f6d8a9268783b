"""The install artifacts rendered as an administrator renders them: `kubectl kustomize` of
manifests/<overlay>, `helm template` of helm/guestha, each as a list of objects.

Both tools are the real ones, built from their Go modules (hack/testbed/build.py); the
unit tests compare what they render, the control-plane tests hand the same text to the
apiserver.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from testbed import build

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "guestha"
MANIFESTS = REPO / "manifests"

# The labels the chart adds and the kustomize install does not: which release and chart
# made an object, and the release's name in selectors (so two releases in one namespace do
# not select each other's pods).
HELM_LABELS = frozenset({"app.kubernetes.io/instance", "app.kubernetes.io/version",
                         "app.kubernetes.io/managed-by", "helm.sh/chart"})

Obj = dict[str, Any]


def run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(build.binary(tool)), *args], capture_output=True, text=True)


def objects(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def kustomize_text(overlay: str) -> str:
    """`kubectl kustomize manifests/<overlay>`, as text."""
    result = run("kubectl", "kustomize", str(MANIFESTS / overlay))
    assert result.returncode == 0, result.stderr
    return result.stdout


def kustomize(overlay: str) -> list[Obj]:
    return objects(kustomize_text(overlay))


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """helm with `args`; `template` renders for the test bed's Kubernetes version."""
    if args and args[0] == "template":
        args = (*args, "--kube-version", build.KUBERNETES_VERSION)
    return run("helm", *args)


def chart_text(*args: str, release: str = "guestha", namespace: str = "guestha-system",
               chart: Path = CHART) -> str:
    """`helm template` of the chart with `args` (e.g. --set, --include-crds), as text."""
    result = helm("template", release, str(chart), "--namespace", namespace, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def chart(*args: str, release: str = "guestha", namespace: str = "guestha-system") -> list[Obj]:
    return objects(chart_text(*args, release=release, namespace=namespace))


def without_helm_labels(value: Any) -> Any:
    """`value` with HELM_LABELS taken out wherever they stand (metadata, selectors, pod
    templates): those keys are only ever labels."""
    if isinstance(value, dict):
        return {k: without_helm_labels(v) for k, v in value.items() if k not in HELM_LABELS}
    if isinstance(value, list):
        return [without_helm_labels(v) for v in value]
    return value


def key(obj: Obj) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def by_key(found: list[Obj]) -> dict[tuple[str, str, str], Obj]:
    return {key(o): o for o in found}


def only(found: list[Obj], kind: str, name: str | None = None) -> Obj:
    """The one object of `kind` (and `name`) in `found`."""
    [obj] = [o for o in found if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return obj
