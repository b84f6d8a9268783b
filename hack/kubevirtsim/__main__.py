"""`python3 -m kubevirtsim`: run the KubeVirt simulator until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from kubevirtsim.nodes import KUBELET_LEASE_SECONDS
from kubevirtsim.simulator import Simulator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m kubevirtsim",
        description="a KubeVirt simulator: virt-controller and virt-handler stand-ins that "
        "boot each VMI as an isolated guest host, talking to the apiserver only through "
        "its API",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        required=True,
        help="kubeconfig of the cluster (KubeVirt's CRDs installed)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        help="folder for the guests' files (swept clean at start and stop)",
    )
    parser.add_argument(
        "--nodes",
        default="node-1,node-2,node-3",
        help="comma-separated names of the simulated nodes",
    )
    parser.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=15.0,
        help="virt-handler heartbeat interval (default 15)",
    )
    parser.add_argument(
        "--node-lease-seconds",
        type=int,
        default=KUBELET_LEASE_SECONDS,
        help="leaseDurationSeconds of each node's Lease in kube-node-lease, renewed every "
        f"quarter of it (default {KUBELET_LEASE_SECONDS}, as kubelet); match it to "
        "kube-controller-manager's --node-monitor-grace-period",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=30.0,
        help="look at every object again this often (default 30)",
    )
    parser.add_argument(
        "--namespace",
        default=None,
        help="only this namespace's VMs, VMIs and Secrets (default: all namespaces)",
    )
    parser.add_argument(
        "--api-port",
        type=int,
        default=0,
        help="port of virt-api's subresource API on 127.0.0.1 (default 0: any free port)",
    )
    parser.add_argument(
        "--no-subresource-api",
        action="store_true",
        help="do not serve subresources.kubevirt.io (no APIService is registered; a "
        "simulator confined with --namespace never serves it)",
    )
    parser.add_argument("--workers", type=int, default=4, help="VMI workers (default 4)")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.nodes.split(",") if n.strip()]
    if not names:
        parser.error("--nodes: give at least one node name")
    if args.heartbeat_seconds <= 0:
        parser.error("--heartbeat-seconds must be positive")
    if args.node_lease_seconds <= 0:
        parser.error("--node-lease-seconds must be positive")
    args.node_names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    sim = Simulator(
        args.kubeconfig,
        args.state_dir,
        args.node_names,
        heartbeat_seconds=args.heartbeat_seconds,
        lease_seconds=args.node_lease_seconds,
        resync_seconds=args.resync_seconds,
        workers=args.workers,
        namespace=args.namespace,
        api_port=None if args.no_subresource_api else args.api_port,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("kubevirtsim").info("signal %d: stopping", signum)
        sim.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sim.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
