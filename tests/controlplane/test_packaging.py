"""The ways an administrator installs guestha, judged by the real apiserver: a server-side
dry run (`kubectl apply --server-side --dry-run=server`) of the kustomize install, of the
monitoring objects and of the Helm chart, so that every field of every object passes the
apiserver's own validation (built-in kinds, guestha's CRDs, prometheus-operator's CRDs).

prometheus-operator's ServiceMonitor and PrometheusRule CRDs (third_party/prometheus-operator)
are installed here only, and taken out again: no other test or cluster part relies on them.
Rendering itself (what the objects say, the chart equal to the kustomize install) is
tests/unit/test_install_manifests.py's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kits import rendering
from kits.rendering import REPO, only

pytestmark = pytest.mark.controlplane

MONITORING_CRDS = sorted((REPO / "third_party" / "prometheus-operator").glob("*.yaml"))


def dry_run(kube: Any, *args: str, input: str | None = None) -> str:
    """A server-side apply dry run; the apiserver's answer, one line per object."""
    result = kube.kubectl("apply", "--server-side", "--dry-run=server",
                          "--field-manager=guestha-packaging-test", *args, input=input)
    return str(result.stdout)


@pytest.fixture(scope="module")
def namespace(kube: Any) -> None:
    """The install's namespace exists (a dry run creates nothing, so the namespaced objects
    of the same dry run would find none)."""
    kube.kubectl("create", "namespace", "guestha-system", check=False)


@pytest.fixture(scope="module")
def monitoring_crds(kube: Any) -> Iterator[None]:
    files = [a for f in MONITORING_CRDS for a in ("-f", str(f))]
    kube.kubectl("apply", "--server-side", *files)
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", *files)
    try:
        yield
    finally:
        kube.kubectl("delete", "--ignore-not-found", *files)


def test_the_kustomize_install_is_accepted(kube: Any, namespace: None) -> None:
    out = dry_run(kube, "-k", str(REPO / "manifests" / "install"))
    objects = rendering.kustomize("install")
    assert out.count("(server dry run)") == len(objects), out
    for kind, name in (("deployment.apps", "guestha-operator"),
                       ("poddisruptionbudget.policy", "guestha-operator"),
                       ("networkpolicy.networking.k8s.io", "guestha-operator"),
                       ("service", "guestha-operator-metrics")):
        assert f"{kind}/{name} serverside-applied (server dry run)" in out


def test_the_monitoring_objects_are_accepted(kube: Any, namespace: None,
                                             monitoring_crds: None) -> None:
    out = dry_run(kube, "-k", str(REPO / "manifests" / "monitoring"))
    assert "servicemonitor.monitoring.coreos.com/guestha-operator serverside-applied" in out
    assert "prometheusrule.monitoring.coreos.com/guestha-operator serverside-applied" in out


def test_the_chart_with_everything_on_is_accepted(kube: Any, namespace: None,
                                                  monitoring_crds: None) -> None:
    text = rendering.chart_text("--set", "monitoring.serviceMonitor.enabled=true",
                                "--set", "monitoring.prometheusRule.enabled=true",
                                "--set", "verbose=true")
    out = dry_run(kube, "-f", "-", input=text)
    assert out.count("(server dry run)") == len(rendering.objects(text)), out
    container = only(rendering.objects(text), "Deployment")["spec"]["template"]["spec"][
        "containers"][0]
    assert "--verbose" in container["command"]


def test_the_prometheusrule_is_refused_when_broken(kube: Any, namespace: None,
                                                    monitoring_crds: None) -> None:
    """The dry run can fail: prometheus-operator's schema refuses a duration that is none."""
    text = (REPO / "manifests" / "monitoring" / "prometheusrule.yaml").read_text()
    broken = text.replace("for: 1m", "for: soon", 1)
    result = kube.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-",
                          input=broken, check=False)
    assert result.returncode != 0
    assert "rules[0].for" in result.stderr, result.stderr


def test_the_fencing_rbac_is_accepted(kube: Any) -> None:
    """manifests/fencing stays applicable as it was (its own test runs fence_kubevirt)."""
    path: Path = REPO / "manifests" / "fencing" / "fence-kubevirt-rbac.yaml"
    made = [name for name in ("cluster-fencing", "vms")
            if kube.kubectl("create", "namespace", name, check=False).returncode == 0]
    try:
        out = dry_run(kube, "-f", str(path))
    finally:
        for name in made:
            kube.kubectl("delete", "namespace", name, "--wait=false")
    assert out.count("(server dry run)") == 3, out
