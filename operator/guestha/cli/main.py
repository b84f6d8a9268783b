"""kubectl-guestha: status, switch, freeze, unfreeze, clear and events, as kubectl plugin verbs.

Each verb that changes something makes one change of guestha's API that `kubectl apply`
could make too; the plugin spares the user the YAML and, for `switch --wait`, the polling.
VM power actions stay KubeVirt's own (virtctl). The exit codes (below) are for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

import kubernetes
import urllib3
import yaml

from guestha.cli import colour, events, exitcodes, follow, summary
from guestha.cli.kube import CLEAR_ANNOTATION, Client, Gone, now

DEFAULT_TIMEOUT = 300.0  # switch --wait: seconds before exit code 4


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    """kubectl's own connection flags, accepted before and after the verb."""
    parser.add_argument("--kubeconfig", default=default, help="path to the kubeconfig file")
    parser.add_argument("--context", default=default, help="the kubeconfig context to use")
    parser.add_argument("-n", "--namespace", default=default,
                        help="namespace (default: the context's, else 'default')")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl guestha", description=__doc__, epilog=exitcodes.HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(parser, None)
    # On the verbs, a flag that is not given must not overwrite one given before the verb.
    common = argparse.ArgumentParser(add_help=False)
    _common(common, argparse.SUPPRESS)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, text: str) -> argparse.ArgumentParser:
        return verbs.add_parser(name, parents=[common], help=text, description=text,
                                epilog=exitcodes.HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)

    status = verb("status", "clusters, members, service groups, faults and pending "
                  "switchovers at a glance (like hastatus -sum)")
    status.add_argument("-A", "--all-namespaces", action="store_true")
    status.add_argument("-o", "--output", choices=["json", "yaml"], default=None,
                        help="machine-readable output (field names: docs/cli.md)")
    switch = verb("switch", "move a Failover service group (creates a Switchover)")
    switch.add_argument("group")
    switch.add_argument("--to", default=None, help="member to move to (default: the best)")
    switch.add_argument("--wait", action="store_true",
                        help="follow the Switchover, one line per phase, until it ends")
    switch.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"with --wait: give up after this many seconds "
                        f"(default {DEFAULT_TIMEOUT:g}; exit code 4)")
    for name, text in (("freeze", "stop guestha acting on a group (spec.frozen)"),
                       ("unfreeze", "let guestha act on a group again"),
                       ("clear", "clear a group's faults (annotation guestha.io/clear)")):
        verb(name, text).add_argument("group")
    found = verb("events", "guestha's Events, oldest first (the newest on the last line)")
    found.add_argument("name", nargs="?", default=None,
                       help="only Events about this ServiceGroup, InGuestCluster or "
                       "Switchover")
    found.add_argument("-A", "--all-namespaces", action="store_true")
    return parser


class Console:
    """Where output goes, and whether it may be coloured."""

    def __init__(self, out: TextIO, environ: dict[str, str]) -> None:
        self.out, self.environ = out, environ

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def colour(self, output: str | None) -> bool:
        return colour.wanted(self.out.isatty(), self.environ, output)


def _status(client: Client, args: argparse.Namespace, namespace: str, console: Console
            ) -> int:
    scope = None if args.all_namespaces else namespace
    doc = summary.document(client.list("inguestclusters", scope),
                           client.list("servicegroups", scope),
                           client.list("switchovers", scope))
    if args.output == "json":
        console.say(json.dumps(doc, indent=2))
    elif args.output == "yaml":
        console.say(yaml.safe_dump(doc, sort_keys=False).rstrip())
    else:
        console.say(summary.render(doc, paint=console.colour(None)))
    return exitcodes.OK


def _events(client: Client, args: argparse.Namespace, namespace: str, console: Console
            ) -> int:
    scope = None if args.all_namespaces else namespace
    if args.name is not None and scope is not None:
        _one_of_ours(client, scope, args.name)
    found = events.guestha_events(client.events(scope), args.name)
    if not found:
        console.say("No guestha Events found.")
        return exitcodes.OK
    rows = events.rows(found)
    header = events.HEADER
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        console.say("  ".join([*(v.ljust(w) for v, w in zip(row, widths, strict=False)),
                               row[-1]]))
    return exitcodes.OK


class NotOurs(Exception):
    """A name given on the command line that is none of guestha's objects."""


def _one_of_ours(client: Client, namespace: str, name: str) -> None:
    """A clear error when `name` is none of guestha's objects in `namespace`."""
    for plural in ("servicegroups", "inguestclusters", "switchovers"):
        try:
            client.get(plural, namespace, name)
            return
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise
    raise NotOurs(f"no ServiceGroup, InGuestCluster or Switchover {namespace}/{name}")


def _switch(client: Client, args: argparse.Namespace, namespace: str, console: Console
            ) -> int:
    group = args.group
    client.get("servicegroups", namespace, group)  # a clear 404 before any change
    spec = {"serviceGroup": group, **({"to": args.to} if args.to else {})}
    created = client.create("switchovers", namespace, {
        "apiVersion": "guestha.io/v1alpha1", "kind": "Switchover",
        "metadata": {"generateName": f"{group}-"}, "spec": spec})
    name = created["metadata"]["name"]
    console.say(f"switchover {namespace}/{name} created")
    if not args.wait:
        return exitcodes.OK
    return follow.follow(lambda left: client.changes("switchovers", namespace, name, left),
                         lambda line: console.say(f"switchover {namespace}/{name}: {line}"),
                         args.timeout)


def _change(client: Client, args: argparse.Namespace, namespace: str, console: Console
            ) -> int:
    group = args.group
    client.get("servicegroups", namespace, group)  # a clear 404 before any change
    if args.verb in ("freeze", "unfreeze"):
        client.patch("servicegroups", namespace, group,
                     {"spec": {"frozen": args.verb == "freeze"}})
        console.say(f"servicegroup {namespace}/{group} {args.verb}d")
    else:
        client.patch("servicegroups", namespace, group,
                     {"metadata": {"annotations": {CLEAR_ANNOTATION: now()}}})
        console.say(f"servicegroup {namespace}/{group}: faults recorded before now will be "
                    f"cleared")
    return exitcodes.OK


VERBS: dict[str, Callable[[Client, argparse.Namespace, str, Console], int]] = {
    "status": _status, "switch": _switch, "freeze": _change, "unfreeze": _change,
    "clear": _change, "events": _events,
}


def run(argv: list[str] | None, console: Console) -> int:
    """Carry out one verb; return its exit code (argparse exits 2 by itself)."""
    args = _parser().parse_args(argv)
    client = Client(args.kubeconfig, args.context)
    namespace = args.namespace or client.default_namespace
    return VERBS[args.verb](client, args, namespace, console)


def main(argv: list[str] | None = None) -> int:
    console = Console(sys.stdout, dict(os.environ))
    try:
        return run(argv, console)
    except kubernetes.client.ApiException as e:
        print(f"error: {e.status} {e.reason}: {_message(e)}", file=sys.stderr)
    except kubernetes.config.ConfigException as e:
        print(f"error: no cluster to talk to: {e}", file=sys.stderr)
    except urllib3.exceptions.HTTPError as e:
        print(f"error: the cluster did not answer: {e}", file=sys.stderr)
    except (NotOurs, Gone) as e:
        print(f"error: {e}", file=sys.stderr)
    return exitcodes.API_ERROR


def _message(error: kubernetes.client.ApiException) -> str:
    try:
        return str(json.loads(error.body or "").get("message", error.body))
    except (TypeError, ValueError):
        return str(error.body)


if __name__ == "__main__":
    raise SystemExit(main())
