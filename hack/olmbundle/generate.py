"""Build the bundle's files from the project's sources (see the package docstring)."""

from __future__ import annotations

import base64
import copy
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BUNDLE = REPO / "bundle"
INSTALL = REPO / "manifests" / "base"  # the Deployment, RBAC, Services, PDB (kustomize base)
SAMPLES = REPO / "manifests" / "samples"
CRDS = REPO / "crds"
CHART = REPO / "helm" / "guestha" / "Chart.yaml"
PACKAGE = "guestha"
CHANNEL = "candidate"  # OLM's channel naming: candidate (pre-release), fast, stable
DEPLOYMENT_NAMESPACE = "guestha-system"  # the plain manifests' namespace
GROUP = "guestha.io"


class BundleError(ValueError):
    """The sources do not make a valid bundle; the message names the file and field."""


def version() -> str:
    with open(REPO / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def _docs(paths: Iterable[Path]) -> list[dict[str, Any]]:
    return [d for p in paths for d in yaml.safe_load_all(p.read_text()) if d]


def crds() -> dict[str, dict[str, Any]]:
    """The CRD files by kind."""
    return {d["spec"]["names"]["kind"]: d for d in _docs(sorted(CRDS.glob("*.yaml")))}


def min_kube_version() -> str:
    """The Helm chart's kubeVersion (">=1.30.0-0") as OLM's minKubeVersion ("1.30.0")."""
    found = re.fullmatch(r">=\s*(\d+\.\d+\.\d+)(-0)?", str(yaml.safe_load(
        CHART.read_text()).get("kubeVersion", "")))
    if found is None:
        raise BundleError(f"{CHART}: kubeVersion must read '>=X.Y.Z' to give minKubeVersion")
    return found.group(1)


def schema_at(crd: Mapping[str, Any], root: str, path: str) -> dict[str, Any]:
    """The schema of `root` (spec or status) + dotted `path` in the CRD's served version;
    BundleError naming the missing segment when the CRD has no such field."""
    version_ = next(v for v in crd["spec"]["versions"] if v.get("served"))
    node: dict[str, Any] = version_["schema"]["openAPIV3Schema"]["properties"][root]
    walked = root
    for part in path.split("."):
        props = node.get("properties") or {}
        if part not in props:
            kind = crd["spec"]["names"]["kind"]
            raise BundleError(f"descriptor path {root}.{path} of {kind}: {walked} has no "
                              f"field {part!r} in the CRD")
        node = props[part]
        walked += "." + part
    return node


def _descriptors(crd: Mapping[str, Any], root: str, rows: list[list[Any]]
                 ) -> list[dict[str, Any]]:
    out = []
    for path, name, x_descriptors in rows:
        description = " ".join(str(schema_at(crd, root, path).get("description", "")).split())
        entry: dict[str, Any] = {"path": path, "displayName": name}
        if description:
            entry["description"] = description
        if x_descriptors:
            entry["x-descriptors"] = list(x_descriptors)
        out.append(entry)
    return out


def _owned(base: Mapping[str, Any], found: Mapping[str, dict[str, Any]]
           ) -> list[dict[str, Any]]:
    owned = []
    for kind, crd in sorted(found.items()):
        if kind not in base["owned"]:
            raise BundleError(f"{HERE / 'csv-base.yaml'}: owned.{kind} missing (crds/ has it)")
        ui = base["owned"][kind]
        served = next(v for v in crd["spec"]["versions"] if v.get("served"))
        description = served["schema"]["openAPIV3Schema"].get("description",
                                                               ui["displayName"])
        owned.append({
            "name": crd["metadata"]["name"], "version": served["name"], "kind": kind,
            "displayName": ui["displayName"],
            "description": " ".join(str(description).split()),
            "resources": [{"kind": k, "name": "", "version": v} for k, v in ui["resources"]],
            "specDescriptors": _descriptors(crd, "spec", ui["specDescriptors"]),
            "statusDescriptors": _descriptors(crd, "status", ui["statusDescriptors"]),
        })
    extra = set(base["owned"]) - set(found)
    if extra:
        raise BundleError(f"{HERE / 'csv-base.yaml'}: owned {sorted(extra)} not in crds/")
    return owned


def install_objects() -> list[dict[str, Any]]:
    """The kustomize base's own objects (its CRDs come from crds/ above)."""
    return [d for d in _docs(sorted(INSTALL.glob("*.yaml"))) if d.get("kind") != "Kustomization"]


def _deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    spec = copy.deepcopy(deployment["spec"])
    for container in spec["template"]["spec"]["containers"]:
        # OLM installs into the namespace the user picks: the webhook Service is there
        container["command"] = [
            c.replace(f"--webhook-service={DEPLOYMENT_NAMESPACE}/",
                      "--webhook-service=$(POD_NAMESPACE)/") for c in container["command"]]
    return {"name": deployment["metadata"]["name"],
            "label": dict(deployment["metadata"].get("labels") or {}), "spec": spec}


def _permissions(objects: list[dict[str, Any]], account: str
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(clusterPermissions, permissions) from the ClusterRoles and Roles bound to the
    operator's ServiceAccount: a Role in its own namespace stays namespaced; a Role
    elsewhere can only be granted cluster-wide by a CSV (see the package docstring)."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    cluster_rules: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == account
                   for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        role = roles[(ref["kind"], namespace, ref["name"])]
        if ref["kind"] == "Role" and namespace == DEPLOYMENT_NAMESPACE:
            rules.extend(role["rules"])
        else:
            cluster_rules.extend(role["rules"])
    return ([{"serviceAccountName": account, "rules": cluster_rules}],
            [{"serviceAccountName": account, "rules": rules}])


def alm_examples() -> list[dict[str, Any]]:
    """The samples' guestha objects, without namespace (created where the user is)."""
    examples = []
    for doc in _docs(sorted(SAMPLES.glob("*.yaml"))):
        if doc.get("apiVersion", "").startswith(GROUP + "/"):
            example = copy.deepcopy(doc)
            example["metadata"].pop("namespace", None)
            examples.append(example)
    order = {"InGuestCluster": 0, "ServiceGroup": 1, "Switchover": 2}
    return sorted(examples, key=lambda e: order.get(e["kind"], 9))


def csv() -> dict[str, Any]:
    base = yaml.safe_load((HERE / "csv-base.yaml").read_text())
    objects = install_objects()
    deployment = _deployment(objects)
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    cluster_permissions, permissions = _permissions(objects, account)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    image = container["image"]
    v = version()
    icon = base64.b64encode((HERE / "icon.svg").read_bytes()).decode()
    return {
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": f"{PACKAGE}.v{v}",
            "annotations": {
                "alm-examples": json.dumps(alm_examples(), indent=2),
                "capabilities": base["capabilities"],
                "categories": base["categories"],
                "containerImage": image,
                "description": " ".join(base["shortDescription"].split()),
                "repository": base["links"][0]["url"],
                "support": base["provider"]["name"],
                "operatorframework.io/suggested-namespace": DEPLOYMENT_NAMESPACE,
            },
        },
        "spec": {
            "displayName": base["displayName"],
            "description": base["description"],
            "version": v,
            "maturity": base["maturity"],
            "minKubeVersion": min_kube_version(),
            "provider": base["provider"],
            "maintainers": base["maintainers"],
            "links": base["links"],
            "keywords": base["keywords"],
            "icon": [{"base64data": icon, "mediatype": "image/svg+xml"}],
            "installModes": [
                {"type": "OwnNamespace", "supported": False},
                {"type": "SingleNamespace", "supported": False},
                {"type": "MultiNamespace", "supported": False},
                {"type": "AllNamespaces", "supported": True},
            ],
            "install": {"strategy": "deployment", "spec": {
                "clusterPermissions": cluster_permissions,
                "permissions": permissions,
                "deployments": [deployment],
            }},
            "customresourcedefinitions": {"owned": _owned(base, crds())},
            "nativeAPIs": [{"group": "kubevirt.io", "version": "v1", "kind": k}
                           for k in ("VirtualMachine", "VirtualMachineInstance")],
            "relatedImages": [{"name": "guestha-operator", "image": image}],
        },
    }


def _services(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's Services (webhook, metrics) and its PodDisruptionBudget, which OLM
    creates in the install namespace as they are."""
    out = []
    for obj in objects:
        if obj["kind"] in ("Service", "PodDisruptionBudget"):
            obj = copy.deepcopy(obj)
            obj["metadata"].pop("namespace", None)
            out.append(obj)
    return out


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the description, alm-examples) as literal blocks."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def _dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=100)


HEADER = "# Generated by hack/bundle from the project's sources: do not edit.\n"


def files() -> dict[str, str]:
    """Every file of bundle/, by path relative to it."""
    out = {f"manifests/{PACKAGE}.clusterserviceversion.yaml": HEADER + _dump(csv())}
    for path in sorted(CRDS.glob("*.yaml")):
        out[f"manifests/{path.name}"] = path.read_text()  # byte for byte
    for obj in _services(install_objects()):
        kind = obj["kind"].lower()
        version = obj["apiVersion"].split("/")[-1]
        out[f"manifests/{obj['metadata']['name']}_{version}_{kind}.yaml"] = HEADER + _dump(obj)
    out["metadata/annotations.yaml"] = HEADER + _dump({"annotations": {
        "operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
        "operators.operatorframework.io.bundle.manifests.v1": "manifests/",
        "operators.operatorframework.io.bundle.metadata.v1": "metadata/",
        "operators.operatorframework.io.bundle.package.v1": PACKAGE,
        "operators.operatorframework.io.bundle.channels.v1": CHANNEL,
        "operators.operatorframework.io.bundle.channel.default.v1": CHANNEL,
    }})
    return out


def write(folder: Path = BUNDLE) -> None:
    """Write the bundle into `folder`, removing files it no longer has."""
    wanted = files()
    for old in folder.rglob("*") if folder.exists() else ():
        if old.is_file() and str(old.relative_to(folder)) not in wanted:
            old.unlink()
    for name, text in wanted.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def stale(folder: Path = BUNDLE) -> list[str]:
    """The files of `folder` that differ from what `write` would make (missing, changed or
    extra), by relative path."""
    wanted = files()
    found = {str(p.relative_to(folder)): p.read_text()
             for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}
    return sorted(n for n in set(wanted) | set(found) if wanted.get(n) != found.get(n))
