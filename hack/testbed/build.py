"""Build kube-apiserver, kube-controller-manager, kubectl and etcd from their Go modules,
cached by version; and the small Go checkers of the delivery artifacts (the OLM bundle's
validator, the Argo CD health checks' Lua runner) from their sources in hack/gotools/.

k8s.io/kubernetes and etcd's server cannot be `go install`ed: their go.mod files replace
their own sub-modules with local paths. A tiny wrapper module per component pins each
replaced module to the published version of the same release and builds from there.
The binaries land in the user's cache directory under a folder named by the versions, so
a second run finds them and starts in seconds.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
STAGING_VERSION = "v0.36.3"
ETCD_VERSION = "v3.6.16"
ETCD_SUBMODULES = ("api", "client/pkg", "client/v3", "pkg")
HELM_VERSION = "v3.22.0"
# the programs built from the one k8s.io/kubernetes wrapper module, and what each needs in
# tools.go so that `go mod tidy` records its dependencies
KUBERNETES_COMMANDS = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver/app",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager/app",
    "kubectl": "k8s.io/kubectl/pkg/cmd",
}
ALL_BINARIES = ("etcd", *KUBERNETES_COMMANDS, "helm")
OPERATOR_FRAMEWORK_API_VERSION = "v0.45.0"  # OLM's validation library (needs Go 1.26.3)
GOPHER_LUA_VERSION = "v1.1.2"  # the Lua engine Argo CD embeds
SIGS_YAML_VERSION = "v1.6.0"
GOTOOLS_SOURCE = Path(__file__).resolve().parents[1] / "gotools"


@dataclass(frozen=True)
class GoTool:
    """A checker built from hack/gotools/<name>/main.go in a wrapper module of its own that
    requires `requires` (module -> version); the first entry's version names its cache."""

    name: str
    go: str
    requires: tuple[tuple[str, str], ...]


GO_TOOLS = {
    tool.name: tool for tool in (
        GoTool("bundlevalidate", "1.26.3",
               (("github.com/operator-framework/api", OPERATOR_FRAMEWORK_API_VERSION),)),
        GoTool("luahealth", "1.26.0",
               (("github.com/yuin/gopher-lua", GOPHER_LUA_VERSION),
                ("sigs.k8s.io/yaml", SIGS_YAML_VERSION))),
    )
}


def cache_root() -> Path:
    """The guestha cache folder (XDG_CACHE_HOME or ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "guestha"


def kubernetes_dir() -> Path:
    return cache_root() / f"kubernetes-{KUBERNETES_VERSION}"


def etcd_dir() -> Path:
    return cache_root() / f"etcd-{ETCD_VERSION}"


def helm_dir() -> Path:
    return cache_root() / f"helm-{HELM_VERSION}"


def binary(name: str) -> Path:
    """Where a built binary lives: kube-apiserver, kube-controller-manager, kubectl, etcd
    or helm."""
    folder = {"etcd": etcd_dir(), "helm": helm_dir()}.get(name, kubernetes_dir())
    return folder / "bin" / name


def _go(args: list[str], cwd: Path) -> None:
    env = dict(os.environ, GOFLAGS="-mod=mod -buildvcs=false", CGO_ENABLED="0")
    print(f"+ go {' '.join(args)}  (in {cwd})", file=sys.stderr, flush=True)
    subprocess.run(["go", *args], cwd=cwd, env=env, check=True)


def _staging_modules() -> list[str]:
    """The modules that k8s.io/kubernetes's own go.mod replaces with ./staging paths."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
        check=True, capture_output=True, text=True, cwd=cache_root(),
    ).stdout
    gomod = Path(json.loads(out)["GoMod"]).read_text()
    return sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", gomod, re.M)))


def build_kubernetes() -> None:
    """The Kubernetes programs that the cache lacks, from one wrapper module: a cache made
    before a program joined KUBERNETES_COMMANDS gets only that program built (the Go build
    cache makes it quick)."""
    missing = [name for name in KUBERNETES_COMMANDS if not binary(name).exists()]
    if not missing:
        return
    src = kubernetes_dir() / "wrapper"
    src.mkdir(parents=True, exist_ok=True)
    replaces = "\n".join(f"replace {m} => {m} {STAGING_VERSION}" for m in _staging_modules())
    (src / "go.mod").write_text(
        f"module guestha.io/testbed/kubernetes\n\ngo 1.26.0\n\n"
        f"require k8s.io/kubernetes {KUBERNETES_VERSION}\n\n{replaces}\n"
    )
    imports = "".join(f'\t_ "{pkg}"\n' for pkg in KUBERNETES_COMMANDS.values())
    (src / "tools.go").write_text(
        f"//go:build tools\n\npackage tools\n\nimport (\n{imports})\n"
    )
    _go(["mod", "tidy"], src)
    out = kubernetes_dir() / "bin"
    out.mkdir(parents=True, exist_ok=True)
    # Stamp the version as Kubernetes' own build does, so /version and kubectl report it.
    major, minor = KUBERNETES_VERSION[1:].split(".")[:2]
    stamp = " ".join(
        f"-X k8s.io/{pkg}.{k}={v}"
        for pkg in ("component-base/version", "client-go/pkg/version")
        for k, v in (("gitVersion", KUBERNETES_VERSION), ("gitMajor", major),
                     ("gitMinor", minor), ("gitTreeState", "clean"))
    )
    for name in missing:
        _go(["build", "-trimpath", f"-ldflags=-s -w {stamp}", "-o", str(out / (name + ".tmp")),
             f"k8s.io/kubernetes/cmd/{name}"], src)
        (out / (name + ".tmp")).rename(out / name)


def build_etcd() -> None:
    if binary("etcd").exists():
        return
    src = etcd_dir() / "wrapper"
    src.mkdir(parents=True, exist_ok=True)
    replaces = "\n".join(
        f"replace go.etcd.io/etcd/{m}/v3 => go.etcd.io/etcd/{m}/v3 {ETCD_VERSION}"
        if not m.endswith("/v3") else
        f"replace go.etcd.io/etcd/{m} => go.etcd.io/etcd/{m} {ETCD_VERSION}"
        for m in ETCD_SUBMODULES
    )
    (src / "go.mod").write_text(
        f"module guestha.io/testbed/etcd\n\ngo 1.26.0\n\n"
        f"require go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n\n{replaces}\n"
    )
    (src / "tools.go").write_text(
        '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3/etcdmain"\n'
    )
    _go(["mod", "tidy"], src)
    out = etcd_dir() / "bin"
    out.mkdir(parents=True, exist_ok=True)
    _go(["build", "-trimpath", "-ldflags=-s -w", "-o", str(out / "etcd.tmp"),
         "go.etcd.io/etcd/server/v3"], src)
    (out / "etcd.tmp").rename(out / "etcd")


def build_helm() -> None:
    """helm, to render and check the chart (its module installs as it is)."""
    if binary("helm").exists():
        return
    out = helm_dir() / "bin"
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOBIN=str(out), CGO_ENABLED="0")
    print(f"+ go install helm.sh/helm/v3/cmd/helm@{HELM_VERSION}", file=sys.stderr, flush=True)
    subprocess.run(["go", "install", "-trimpath", "-ldflags=-s -w",
                    f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"], env=env, check=True)


def tool_dir(name: str) -> Path:
    """The cache folder of a Go checker: named by its library's version and a hash of its
    source, so that an edited main.go is built again and an old build is never used."""
    tool = GO_TOOLS[name]
    source = (GOTOOLS_SOURCE / name / "main.go").read_bytes()
    digest = hashlib.sha256(source + repr(tool).encode()).hexdigest()[:12]
    return cache_root() / f"{name}-{tool.requires[0][1]}-{digest}"


def build_tool(name: str) -> Path:
    """The Go checker `name` (a key of GO_TOOLS), built into the cache when missing; one
    build at a time per cache, as build_all."""
    binary_path = tool_dir(name) / "bin" / name
    if binary_path.exists():
        return binary_path
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary_path.exists():
            return binary_path
        if shutil.which("go") is None:
            raise SystemExit(f"go is not on PATH: {name} is built from Go modules")
        tool = GO_TOOLS[name]
        src = tool_dir(name) / "wrapper"
        src.mkdir(parents=True, exist_ok=True)
        requires = "\n".join(f"require {module} {version}" for module, version in tool.requires)
        (src / "go.mod").write_text(
            f"module guestha.io/hack/{name}\n\ngo {tool.go}\n\n{requires}\n")
        shutil.copyfile(GOTOOLS_SOURCE / name / "main.go", src / "main.go")
        _go(["mod", "tidy"], src)
        binary_path.parent.mkdir(parents=True, exist_ok=True)
        _go(["build", "-trimpath", "-ldflags=-s -w", "-o", str(binary_path) + ".tmp", "."], src)
        Path(str(binary_path) + ".tmp").rename(binary_path)
    return binary_path


def build_all() -> None:
    """Build whatever is missing from the cache.

    One build at a time per cache: test sessions and `hack/devcluster up` started side by
    side wait for each other here instead of writing the same wrapper module at once.
    """
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(binary(name).exists() for name in ALL_BINARIES):
            return
        if shutil.which("go") is None:
            raise SystemExit("go is not on PATH: the control plane is built from Go modules")
        build_etcd()
        build_kubernetes()
        build_helm()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the binary paths")
    parser.add_argument("--tool", action="append", choices=sorted(GO_TOOLS), default=[],
                        help="build (and with --print, print) this Go checker too")
    args = parser.parse_args(argv)
    build_all()
    tools = [build_tool(name) for name in args.tool]
    if args.print:
        for name in ALL_BINARIES:
            print(binary(name))
        for path in tools:
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
