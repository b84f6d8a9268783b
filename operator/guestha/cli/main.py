"""kubectl-guestha: status, switch, freeze, unfreeze and clear, as kubectl plugin verbs.

Each verb is one change of guestha's API that `kubectl apply` could make too; the plugin
only spares the user the YAML. VM power actions stay KubeVirt's own (virtctl).
"""

from __future__ import annotations

import argparse
import json
import sys

import kubernetes

from guestha.cli import summary
from guestha.cli.kube import CLEAR_ANNOTATION, Client, now


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl guestha", description=__doc__)
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument("--context", default=None)
    parser.add_argument("-n", "--namespace", default=None)
    verbs = parser.add_subparsers(dest="verb", required=True)
    status = verbs.add_parser("status", help="clusters, members and service groups")
    status.add_argument("-A", "--all-namespaces", action="store_true")
    switch = verbs.add_parser("switch", help="move a Failover service group (a Switchover)")
    switch.add_argument("group")
    switch.add_argument("--to", default=None, help="member to move to (default: the best)")
    for verb, text in (("freeze", "stop guestha acting on a group (spec.frozen)"),
                       ("unfreeze", "let guestha act on a group again"),
                       ("clear", "clear a group's faults (annotation guestha.io/clear)")):
        verbs.add_parser(verb, help=text).add_argument("group")
    return parser


def run(argv: list[str] | None = None) -> str:
    """Carry out one verb; return what to print."""
    args = _parser().parse_args(argv)
    client = Client(args.kubeconfig, args.context)
    namespace = args.namespace or client.default_namespace
    if args.verb == "status":
        scope = None if args.all_namespaces else namespace
        return summary.render(client.list("inguestclusters", scope),
                              client.list("servicegroups", scope))
    group = args.group
    client.get("servicegroups", namespace, group)  # a clear 404 before any change
    if args.verb in ("freeze", "unfreeze"):
        client.patch("servicegroups", namespace, group,
                     {"spec": {"frozen": args.verb == "freeze"}})
        return f"servicegroup {namespace}/{group} {args.verb}d"
    if args.verb == "clear":
        client.patch("servicegroups", namespace, group,
                     {"metadata": {"annotations": {CLEAR_ANNOTATION: now()}}})
        return f"servicegroup {namespace}/{group}: faults recorded before now will be cleared"
    spec = {"serviceGroup": group, **({"to": args.to} if args.to else {})}
    created = client.create("switchovers", namespace, {
        "apiVersion": "guestha.io/v1alpha1", "kind": "Switchover",
        "metadata": {"generateName": f"{group}-"}, "spec": spec})
    return f"switchover {namespace}/{created['metadata']['name']} created"


def main(argv: list[str] | None = None) -> int:
    try:
        print(run(argv))
    except kubernetes.client.ApiException as e:
        print(f"error: {e.status} {e.reason}: {_message(e)}", file=sys.stderr)
        return 1
    return 0


def _message(error: kubernetes.client.ApiException) -> str:
    try:
        return str(json.loads(error.body or "").get("message", error.body))
    except (TypeError, ValueError):
        return str(error.body)


if __name__ == "__main__":
    raise SystemExit(main())
