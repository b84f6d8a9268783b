"""The simulator process: informers, work queues and controllers wired together.

One process plays virt-controller (VM and VMI controllers, scheduling) and the
virt-handler of every simulated node. It starts from a clean slate (guests of an
earlier run are swept away, as a node reboot would), and on stop powers off every guest
it booted and tears down the guest network, leaving no process, netns or bridge behind.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from kubevirtsim import guesthost
from kubevirtsim import status as st
from kubevirtsim.api import NODES, SECRETS, VMIS, VMS, Api, Obj, split_key
from kubevirtsim.events import Recorder
from kubevirtsim.guests import Guests
from kubevirtsim.informer import Informer
from kubevirtsim.nodes import KUBELET_LEASE_SECONDS, Nodes, NodeState, node_state
from kubevirtsim.subresources import Subresources
from kubevirtsim.userdata import referenced_secrets
from kubevirtsim.virtapi import VirtApi
from kubevirtsim.vm import VMController
from kubevirtsim.vmi import Requeue, VMIController
from kubevirtsim.workqueue import WorkQueue

log = logging.getLogger(__name__)

# logged when the shared guest bridge stays at shutdown, because another run uses it
NETWORK_KEPT = "guest network kept"


def _other_guest_networks() -> list[str]:
    """Guest network namespaces left on this machine once ours are gone: another
    simulator run (another state dir) still uses the shared bridge."""
    netns_dir = Path("/run/netns")
    prefix = guesthost.NETNS_PREFIX
    if not netns_dir.is_dir():
        return []
    return sorted(n.name for n in netns_dir.iterdir() if n.name.startswith(prefix))


class Simulator:
    """Everything of one simulator run; `run()` blocks until `stop` is set."""

    def __init__(
        self,
        kubeconfig: Path,
        state_dir: Path,
        node_names: list[str],
        heartbeat_seconds: float = 15.0,
        lease_seconds: int = KUBELET_LEASE_SECONDS,
        resync_seconds: float = 30.0,
        workers: int = 4,
        namespace: str | None = None,
        api_port: int | None = 0,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.stop = threading.Event()
        self.resync_seconds = resync_seconds
        self.api = Api(kubeconfig)
        self.node_informer = Informer(self.api, NODES, self.stop)
        self.vm_informer = Informer(self.api, VMS, self.stop, namespace)
        self.vmi_informer = Informer(self.api, VMIS, self.stop, namespace)
        self.secret_informer = Informer(self.api, SECRETS, self.stop, namespace)
        self.nodes = Nodes(
            self.api,
            self.node_informer,
            node_names,
            heartbeat_seconds,
            lease_seconds,
            self.stop,
        )
        self.vmi_queue = WorkQueue("vmi", self._reconcile_vmi, workers, self.stop)
        self.vm_queue = WorkQueue("vm", self._reconcile_vm, max(2, workers // 2), self.stop)
        self.node_queue = WorkQueue("node", self._reconcile_node, 1, self.stop)
        self.guests = Guests(self.state_dir, self.vmi_queue.add)
        controller_events = Recorder(self.api, "virt-controller")
        handler_events = Recorder(self.api, "virt-handler")
        self.vmis = VMIController(
            self.api,
            self.vmi_informer,
            self.secret_informer,
            self.nodes,
            self.guests,
            controller_events,
            handler_events,
            self.vmi_queue.add_after,
        )
        self.vms = VMController(
            self.api,
            self.vm_informer,
            self.vmi_informer,
            controller_events,
            self.vm_queue.add_after,
        )
        self._node_states: dict[str, NodeState] = {}
        # virt-api's subresource API (None: not served). Like virt-api it is one per cluster:
        # a simulator confined to one namespace leaves it to the cluster-wide one.
        self.virt_api = (
            VirtApi(
                self.api,
                Subresources(self.api, self.guests, self.nodes),
                self.state_dir / "virt-api",
                api_port,
            )
            if api_port is not None and namespace is None
            else None
        )
        self.vmi_informer.add_handler(self._vmi_changed)
        self.vm_informer.add_handler(lambda key, old, new: self.vm_queue.add(key))
        self.node_informer.add_handler(self._node_changed)
        self.secret_informer.add_handler(self._secret_changed)

    # --- event handlers: they only enqueue ---------------------------------------------------
    def _vmi_changed(self, key: str, old: Obj | None, new: Obj | None) -> None:
        self.vmi_queue.add(key)
        self.vm_queue.add(key)

    def _node_changed(self, name: str, old: Obj | None, new: Obj | None) -> None:
        if self.nodes.owns(name) and node_state(old) != node_state(new):
            self.node_queue.add(name)

    def _secret_changed(self, key: str, old: Obj | None, new: Obj | None) -> None:
        ns, name = split_key(key)
        for vmi in self.vmi_informer.objects():
            if vmi["metadata"].get("namespace") != ns or st.phase(vmi) not in (
                "",
                st.PENDING,
                st.SCHEDULING,
                st.SCHEDULED,
            ):
                continue
            if name in referenced_secrets(vmi.get("spec", {})):
                self.vmi_queue.add(f"{ns}/{vmi['metadata']['name']}")

    # --- reconcilers -----------------------------------------------------------------------
    def _reconcile_vmi(self, key: str) -> None:
        try:
            self.vmis.reconcile(key)
        except Requeue as again:
            self.vmi_queue.add_after(key, again.delay)

    def _reconcile_vm(self, key: str) -> None:
        self.vms.reconcile(key)

    def _vmis_on(self, node: str) -> list[str]:
        return [
            f"{v['metadata']['namespace']}/{v['metadata']['name']}"
            for v in self.vmi_informer.objects()
            if v.get("status", {}).get("nodeName") == node
        ]

    def _reconcile_node(self, name: str) -> None:
        state = self.nodes.state(name)
        before = self._node_states.get(name)
        if before != state:
            log.info("node %s: %s -> %s", name, before.value if before else "-", state.value)
            self._node_states[name] = state
        if state is NodeState.UNRESPONSIVE:
            return
        if state is NodeState.FENCED:
            threads = [
                threading.Thread(target=self.guests.kill, args=(g,), daemon=True)
                for g in self.guests.on_node(name)
                if g.alive()
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
        if state is NodeState.READY and before is not None and before is not NodeState.READY:
            self.nodes.wake(name)  # back: Lease, status and heartbeat at once
        for key in self._vmis_on(name):
            self.vmi_queue.add(key)
        for guest in self.guests.on_node(name):
            self.vmi_queue.add(guest.key)

    # --- running ---------------------------------------------------------------------------
    def _enqueue_all(self) -> None:
        for key in self.vmi_informer.list_keys():
            self.vmi_queue.add(key)
        for key in self.vm_informer.list_keys():
            self.vm_queue.add(key)

    def _sweep_orphans(self) -> None:
        """Guests whose VMI is gone or replaced: their key is looked at again."""
        for guest in self.guests.all():
            vmi = self.vmi_informer.get(guest.key)
            if vmi is None or vmi["metadata"].get("uid") != guest.uid:
                self.vmi_queue.add(guest.key)

    def start(self) -> bool:
        """Sweep leftovers, list everything, create the nodes, start the workers.

        Waits for the apiserver as long as it takes (logging why); False if stopped first.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        guesthost.cleanup_stale(self.state_dir)
        informers = (self.node_informer, self.vm_informer, self.vmi_informer, self.secret_informer)
        for informer in informers:
            informer.start()
        waited = 0.0
        while not all(i.synced.is_set() for i in informers):
            if self.stop.wait(1.0):
                return False
            waited += 1.0
            if waited % 30 == 0:
                missing = [i.resource.plural for i in informers if not i.synced.is_set()]
                log.warning(
                    "still no list of %s from the apiserver after %.0fs", ", ".join(missing), waited
                )
        while True:
            try:
                self.nodes.ensure()
                break
            except Exception:
                log.exception("creating the simulated nodes failed; trying again")
                if self.stop.wait(2.0):
                    return False
        for name in self.nodes.names:
            self._node_states[name] = self.nodes.state(name)
        self.nodes.start()
        for queue in (self.node_queue, self.vm_queue, self.vmi_queue):
            queue.start()
        self._enqueue_all()
        if self.virt_api is not None:
            try:
                self.virt_api.start()
            except Exception:
                log.exception(
                    "virt-api: the subresource API could not be started; running without it"
                )
        log.info(
            "simulator running: nodes %s, state in %s", ", ".join(self.nodes.names), self.state_dir
        )
        return True

    def run(self) -> None:
        """Start, then resync until stopped; always powers everything off at the end."""
        try:
            if not self.start():
                return
            last_resync = time.monotonic()
            while not self.stop.wait(1.0):
                self._sweep_orphans()
                if time.monotonic() - last_resync >= self.resync_seconds:
                    self._enqueue_all()
                    last_resync = time.monotonic()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Power off every guest and remove the guest network (idempotent)."""
        self.stop.set()
        if self.virt_api is not None:
            try:
                self.virt_api.stop()
            except Exception:
                log.exception("virt-api: stopping failed")
        for queue in (self.vmi_queue, self.vm_queue, self.node_queue):
            queue.shutdown()
        log.info("powering off %d guest(s)", len(self.guests.all()))
        self.guests.kill_all()
        try:
            guesthost.cleanup_stale(self.state_dir)
        except Exception:
            log.exception("cleaning the state dir failed")
        try:
            if _other_guest_networks():
                log.info(NETWORK_KEPT + ": guests of another simulator run still use it")
            elif not guesthost.teardown_network():
                log.info(NETWORK_KEPT + ": a guest of another simulator run is booting")
        except Exception:
            log.exception("tearing down the guest network failed")
        self.api.close()
        log.info("simulator stopped")
