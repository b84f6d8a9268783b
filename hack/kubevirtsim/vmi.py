"""The VMI lifecycle: virt-controller's VMI controller and virt-handler in one.

Pending -> Scheduling -> Scheduled (a node picked) -> the guest host booted -> Running with
status.interfaces, Ready and AgentConnected; a guest that dies makes the VMI Failed (or
Succeeded when it powered itself off); a deleted VMI's guest is powered off, its final
phase stored (virt-handler's write), and only then the finalizer goes (virt-controller's),
so a watch's DELETED event shows how the guest ended. What a node's virt-handler would
write is written only while that node answers: on an Unresponsive node the VMI's status
freezes and its deletion stays pending behind the finalizer while the guest runs on. VMIs
have no status subresource: status is written with the whole object, guarded by
resourceVersion.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kubevirtsim import status as st
from kubevirtsim.api import SECRETS, VMIS, Api, ApiError, Obj, split_key
from kubevirtsim.events import Recorder
from kubevirtsim.guesthost import GuestSpec
from kubevirtsim.guests import Guest, Guests
from kubevirtsim.informer import Informer
from kubevirtsim.nodes import Nodes, NodeState, pick_node
from kubevirtsim.userdata import CloudInit, InvalidCloudInit, MissingSecret, cloud_init, hostname

log = logging.getLogger(__name__)

Mutation = Callable[[Obj], bool]  # changes the object in place; False: nothing to write

# A running VMI is looked at again this often even when nothing wakes it (its guest's
# agent wakes it when it changes: kubevirtsim.agentpoller)
RESYNC_SECONDS = 5.0
# KubeVirt's components write with client-go's default field manager, their binary's name
VIRT_HANDLER, VIRT_CONTROLLER = "virt-handler", "virt-controller"
RETRY_SECONDS = 2.0


def vsock_requested(vmi: Obj) -> bool:
    devices = vmi.get("spec", {}).get("domain", {}).get("devices", {})
    return devices.get("autoattachVSOCK") is True


def vsock_cid(address: str) -> int:
    """A VSOCK context id unique among live guests: from the guest's address (0-2 are
    reserved: hypervisor, loopback, host; KubeVirt hands out 3 and up)."""
    parts = [int(p) for p in address.split(".")]
    return 3 + parts[2] * 256 + parts[3]


class Requeue(Exception):
    """Look at this key again after `delay` seconds (not a failure)."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"requeue in {delay}s")
        self.delay = delay


class VMIController:
    """Reconciles one VMI key at a time; see the module docstring."""

    def __init__(
        self,
        api: Api,
        vmis: Informer,
        secrets: Informer,
        nodes: Nodes,
        guests: Guests,
        controller_events: Recorder,
        handler_events: Recorder,
        requeue: Callable[[str, float], None],
    ) -> None:
        self.api = api
        self.vmis = vmis
        self.secrets = secrets
        self.nodes = nodes
        self.guests = guests
        self.controller_events = controller_events
        self.handler_events = handler_events
        self.requeue = requeue

    # --- writing ---------------------------------------------------------------------------
    def write(
        self,
        key: str,
        uid: str,
        mutate: Mutation,
        current: Obj | None = None,
        manager: str = VIRT_CONTROLLER,
    ) -> Obj | None:
        """Apply `mutate` to the newest VMI `uid` and PUT it as `manager`; retried on 409.

        Returns the object as stored, or None when the VMI (that uid) is gone. What the
        node's virt-handler writes (the guest's life: booted, running, ended) is written
        as VIRT_HANDLER, the rest as VIRT_CONTROLLER, so managedFields tell who wrote a
        final phase, as on a real cluster.
        """
        obj = current if current is not None else self.vmis.get(key)
        ns, name = split_key(key)
        for _ in range(6):
            if obj is None or obj["metadata"].get("uid") != uid:
                return None
            if not mutate(obj):
                return obj
            try:
                stored = self.api.replace(VMIS, obj, manager=manager)
            except ApiError as exc:
                if exc.conflict:
                    obj = self.api.get(VMIS, ns, name)
                    continue
                if exc.not_found:
                    return None
                raise
            self.vmis.observe(stored)
            return stored
        raise ApiError(409, "Conflict", f"VMI {key} kept changing under the simulator")

    # --- helpers ---------------------------------------------------------------------------
    def _lookup_secret(self, namespace: str) -> Callable[[str], Obj | None]:
        def lookup(name: str) -> Obj | None:
            secret = self.secrets.get(f"{namespace}/{name}")
            if secret is None:  # the watch may lag a Secret created just before the VMI
                secret = self.api.get(SECRETS, namespace, name)
            return secret

        return lookup

    def load(self) -> dict[str, int]:
        """VMIs placed per node (not finished), for least-loaded placement."""
        load: dict[str, int] = {}
        for vmi in self.vmis.objects():
            node = vmi.get("status", {}).get("nodeName")
            if node and not st.is_final(vmi):
                load[node] = load.get(node, 0) + 1
        return load

    # --- the reconcile ---------------------------------------------------------------------
    def reconcile(self, key: str) -> None:
        vmi = self.vmis.get(key)
        for guest in self.guests.by_key(key):
            if vmi is None or guest.uid != vmi["metadata"].get("uid"):
                self._orphan(guest)
        if vmi is None:
            return
        for _ in range(8):  # run several steps in one go: each returns the stored object
            nxt = self._step(key, vmi)
            if nxt is None:
                return
            vmi = nxt

    def _orphan(self, guest: Guest) -> None:
        """A guest whose VMI is gone from the API (or is another VMI by now).

        Its node's virt-handler kills such a domain, but only while the node answers: a
        force deletion on a node that stopped answering leaves the guest running.
        """
        state = self.nodes.state(guest.node)
        if state is NodeState.UNRESPONSIVE:
            return
        if guest.alive():
            log.info(
                "guest %s (%s) on %s has no VMI any more: killing it",
                guest.key,
                guest.uid,
                guest.node,
            )
            self.guests.kill(guest)
        self.guests.forget(guest.uid)

    def _step(self, key: str, vmi: Obj) -> Obj | None:
        """One transition; returns the stored object to continue with, or None to stop."""
        uid = vmi["metadata"]["uid"]
        node = vmi.get("status", {}).get("nodeName")
        if node:
            state = self.nodes.state(node)
            if state is NodeState.ABSENT:
                return None  # a node that this simulator does not run
            if state is NodeState.UNRESPONSIVE:
                return None  # nobody on that node answers: everything stays as it is
            if state is NodeState.FENCED:
                return self._fenced(key, vmi)
        if st.deleting(vmi):
            return self._delete(key, vmi)
        phase = st.phase(vmi)
        if phase in st.FINAL_PHASES:
            return self._finished(key, vmi)
        if phase == "":
            return self.write(key, uid, self._mutate_pending, vmi)
        if phase == st.PENDING:
            return self.write(key, uid, lambda o: st.set_phase(o, st.SCHEDULING, st.now()), vmi)
        if phase == st.SCHEDULING:
            return self._schedule(key, vmi)
        if phase == st.SCHEDULED:
            return self._boot(key, vmi)
        if phase == st.RUNNING:
            return self._running(key, vmi)
        log.warning("VMI %s: unknown phase %r", key, phase)
        return None

    @staticmethod
    def _mutate_pending(obj: Obj) -> bool:
        changed = st.add_finalizer(obj, st.VMI_FINALIZER)
        return st.set_phase(obj, st.PENDING, st.now()) or changed

    # Scheduling: pick a node and check that the launcher could start (cloud-init data)
    def _cloud_init(self, key: str, vmi: Obj) -> CloudInit | Obj | None:
        """The VMI's cloud-init; or the stored VMI after recording why it cannot be had."""
        ns, _ = split_key(key)
        uid = vmi["metadata"]["uid"]
        try:
            return cloud_init(vmi.get("spec", {}), self._lookup_secret(ns or "default"))
        except MissingSecret as exc:
            message = f"{exc.field}: {exc.message}"
            if (
                st.condition(vmi, "Synchronized") is None
                or (st.condition(vmi, "Synchronized") or {}).get("message") != message
            ):
                self.controller_events.warning(vmi, st.SYNC_FAILED, message)

            def record(o: Obj) -> bool:
                conds = o.setdefault("status", {}).setdefault("conditions", [])
                return st.set_condition(
                    conds, "Synchronized", "False", st.now(), "SecretNotFound", message
                )

            self.write(key, uid, record, vmi, VIRT_HANDLER)
            raise Requeue(RETRY_SECONDS) from None
        except InvalidCloudInit as exc:
            message = f"invalid cloud-init: {exc}"
            self.controller_events.warning(vmi, st.FAILED, message)

            def fail(o: Obj) -> bool:
                s = o.setdefault("status", {})
                s["reason"] = "InvalidCloudInit"
                conds = s.setdefault("conditions", [])
                st.set_condition(
                    conds, "Synchronized", "False", st.now(), "InvalidCloudInit", message
                )
                st.set_condition(conds, "Ready", "False", st.now(), "InvalidCloudInit", message)
                st.set_phase(o, st.FAILED, st.now())
                return True

            return self.write(key, uid, fail, vmi, VIRT_HANDLER) or {}

    def _schedule(self, key: str, vmi: Obj) -> Obj | None:
        uid = vmi["metadata"]["uid"]
        got = self._cloud_init(key, vmi)
        if isinstance(got, dict):
            return None  # failed for good
        selector = vmi.get("spec", {}).get("nodeSelector")
        node = pick_node(self.nodes.objects(), selector, self.load())
        if node is None:
            message = (
                f"0/{len(self.nodes.names)} nodes are available: none is ready, "
                f"schedulable and matches nodeSelector {selector or {}}"
            )

            def unschedulable(o: Obj) -> bool:
                if st.phase(o) != st.SCHEDULING:
                    return False  # placed meanwhile (by another simulator run)
                conds = o.setdefault("status", {}).setdefault("conditions", [])
                return st.set_condition(
                    conds, "PodScheduled", "False", st.now(), "Unschedulable", message
                )

            self.write(key, uid, unschedulable, vmi)
            raise Requeue(RETRY_SECONDS)

        def scheduled(o: Obj) -> bool:
            if st.phase(o) != st.SCHEDULING:
                return False
            s = o.setdefault("status", {})
            s["nodeName"] = node
            o["metadata"].setdefault("labels", {})[st.NODE_NAME_LABEL] = node
            conds = s.setdefault("conditions", [])
            st.remove_condition(conds, "Synchronized")
            st.remove_condition(conds, "PodScheduled")
            st.set_phase(o, st.SCHEDULED, st.now())
            return True

        return self.write(key, uid, scheduled, vmi)

    # Scheduled: the node's handler boots the guest
    def _boot(self, key: str, vmi: Obj) -> Obj | None:
        uid = vmi["metadata"]["uid"]
        node = str(vmi["status"]["nodeName"])
        guest = self.guests.get(uid)
        if guest is None:
            got = self._cloud_init(key, vmi)
            if isinstance(got, dict):
                return None
            data: CloudInit | None = got
            spec = GuestSpec(
                key=key,
                uid=uid,
                hostname=hostname(vmi),
                datasource=data.datasource if data else "NoCloud",
                user_data=data.user_data if data else None,
                network_data=data.network_data if data else None,
                node=node,
            )
            try:
                guest = self.guests.boot(spec)
            except Exception as exc:  # as a virt-launcher that fails: the VMI fails
                log.exception("VMI %s: booting its guest on %s failed", key, node)
                message = f"booting the guest failed: {exc}"
                self.handler_events.warning(vmi, st.FAILED, message, node)
                return self.write(
                    key,
                    uid,
                    lambda o: self._mutate_final(o, st.FAILED, "BootFailed", message),
                    vmi,
                    VIRT_HANDLER,
                )
        if not guest.alive():
            return self._guest_gone(key, vmi, guest)
        stored = self.write(key, uid, lambda o: self._mutate_running(o, guest), vmi, VIRT_HANDLER)
        if stored is not None and st.phase(stored) == st.RUNNING:
            self.handler_events.normal(vmi, st.STARTED, "VirtualMachineInstance started.", node)
        self.requeue(key, RESYNC_SECONDS)
        return None

    def _mutate_running(self, obj: Obj, guest: Guest) -> bool:
        when = st.now()
        s = obj.setdefault("status", {})
        if st.phase(obj) not in (st.SCHEDULED, st.RUNNING):
            return False
        changed = st.set_phase(obj, st.RUNNING, when)
        conds = s.setdefault("conditions", [])
        changed |= st.set_condition(conds, "Ready", "True", when)
        changed |= st.remove_condition(conds, "Synchronized")
        changed |= st.set_condition(
            conds,
            "LiveMigratable",
            "False",
            when,
            "InterfaceNotLiveMigratable",
            "the simulator does not migrate guests",
        )
        try:
            address, mac = guest.host.address, guest.host.mac
        except Exception:
            log.exception("guest %s: no address", guest.key)
            address, mac = "", ""
        interfaces = [
            {
                "name": st.interface_name(obj),
                "interfaceName": "eth0",
                "ipAddress": address,
                "ipAddresses": [address] if address else [],
                "mac": mac,
                "infoSource": "domain, guest-agent",
                "queueCount": 1,
            }
        ]
        if s.get("interfaces") != interfaces:
            s["interfaces"] = interfaces
            changed = True
        cid = vsock_cid(address) if vsock_requested(obj) and address else None
        if cid is not None and s.get("VSOCKCID") != cid:
            s["VSOCKCID"] = cid  # the vsock endpoint dials this guest's ports
            changed = True
        agent = guest.agent_view()  # polled beside this reconcile: never waits on the guest
        if agent.connected:
            if not st.condition_true(obj, "AgentConnected"):
                changed |= st.set_condition(conds, "AgentConnected", "True", when, probe=True)
            if agent.os_info and s.get("guestOSInfo") != agent.os_info:
                s["guestOSInfo"] = dict(agent.os_info)
                changed = True
        elif st.condition(obj, "AgentConnected") is not None:
            changed |= st.remove_condition(conds, "AgentConnected")
        for field, value in (
            ("launcherContainerImageVersion", st.LAUNCHER_IMAGE),
            ("migrationMethod", "BlockMigration"),
            ("migrationTransport", "Unix"),
            ("qosClass", "Burstable"),
            ("guestOSInfo", s.get("guestOSInfo", {})),
        ):
            if s.get(field) != value:
                s[field] = value
                changed = True
        return changed

    # Running: follow the guest
    def _running(self, key: str, vmi: Obj) -> Obj | None:
        uid = vmi["metadata"]["uid"]
        guest = self.guests.get(uid)
        if guest is None or not guest.alive():
            return self._guest_gone(key, vmi, guest)
        self.write(key, uid, lambda o: self._mutate_running(o, guest), vmi, VIRT_HANDLER)
        self.requeue(key, RESYNC_SECONDS)
        return None

    def _guest_gone(self, key: str, vmi: Obj, guest: Guest | None) -> Obj | None:
        """The guest died by itself (or this simulator restarted: the node rebooted)."""
        uid = vmi["metadata"]["uid"]
        node = vmi.get("status", {}).get("nodeName")
        shut_down = guest is not None and guest.exit_code == 0
        if guest is None:
            reason, message = "NodeRebooted", "no guest for this VMI on its node (restarted)"
        elif shut_down:
            reason, message = "GuestShutdown", "the guest powered itself off"
        else:
            reason, message = "GuestCrashed", f"the guest exited with {guest.exit_code}"
        final = st.SUCCEEDED if shut_down else st.FAILED
        stored = self.write(
            key, uid, lambda o: self._mutate_final(o, final, reason, message), vmi, VIRT_HANDLER
        )
        if stored is not None:
            if final == st.SUCCEEDED:
                self.handler_events.normal(
                    vmi, st.STOPPED, "The VirtualMachineInstance was shut down.", node
                )
            else:
                self.handler_events.warning(
                    vmi, st.STOPPED, "The VirtualMachineInstance crashed.", node
                )
        return stored

    @staticmethod
    def _mutate_final(
        obj: Obj, final: str, reason: str, message: str, drop_finalizer: bool = False
    ) -> bool:
        changed = False
        if not st.is_final(obj):
            when = st.now()
            s = obj.setdefault("status", {})
            st.set_phase(obj, final, when)
            s["reason"] = reason
            conds = s.setdefault("conditions", [])
            st.set_condition(conds, "Ready", "False", when, reason, message)
            st.remove_condition(conds, "AgentConnected")
            changed = True
        if drop_finalizer:
            changed |= st.remove_finalizer(obj, st.VMI_FINALIZER)
        return changed

    # Final: make sure no guest is left, then release the VMI controller's finalizer
    def _finished(self, key: str, vmi: Obj) -> Obj | None:
        uid = vmi["metadata"]["uid"]
        guest = self.guests.get(uid)
        if guest is not None and guest.alive():
            self.guests.kill(guest)
        self.write(key, uid, lambda o: st.remove_finalizer(o, st.VMI_FINALIZER), vmi)
        return None

    # Deletion: power the guest off (graceful within the grace period), then let go
    def _delete(self, key: str, vmi: Obj) -> Obj | None:
        uid = vmi["metadata"]["uid"]
        node = vmi.get("status", {}).get("nodeName")
        guest = self.guests.get(uid)
        if guest is not None and guest.stopping and not guest.powered_off.is_set():
            return None  # a power-off is under way: it brings this key back when done
        if guest is not None and guest.alive():
            if not guest.stopping:
                grace = st.termination_grace(vmi)
                if grace > 0:
                    self.handler_events.normal(
                        vmi, st.SHUTTING_DOWN, "Signaled Graceful Shutdown", node
                    )
                self.guests.power_off(guest, grace)
            return None  # the guest's exit brings this key back
        if guest is not None:
            final = st.SUCCEEDED if (guest.graceful or guest.exit_code == 0) else st.FAILED
            reason, message = ("Deleted", "the VMI was deleted and its guest shut down")
        else:
            final, reason, message = st.FAILED, "Deleted", "the VMI was deleted"
        if not st.is_final(vmi):
            # virt-handler's write: the final phase is stored while the finalizer still
            # holds the VMI, so the object that a watch's DELETED event carries (the last
            # state stored) shows how the guest ended; the next step lets it go
            stored = self.write(
                key, uid, lambda o: self._mutate_final(o, final, reason, message), vmi, VIRT_HANDLER
            )
            if guest is not None and stored is not None:
                if final == st.SUCCEEDED:
                    self.handler_events.normal(
                        vmi, st.STOPPED, "The VirtualMachineInstance was shut down.", node
                    )
                else:
                    self.handler_events.warning(
                        vmi, st.STOPPED, "The VirtualMachineInstance crashed.", node
                    )
            return stored
        # virt-controller's write: the finalizer goes once the VMI is final
        stored = self.write(key, uid, lambda o: st.remove_finalizer(o, st.VMI_FINALIZER), vmi)
        if guest is not None and (
            stored is None or st.VMI_FINALIZER not in (stored["metadata"].get("finalizers") or [])
        ):
            self.guests.forget(uid)
        return None

    # Fenced node: its guests are dead, the control plane finishes its VMIs
    def _fenced(self, key: str, vmi: Obj) -> Obj | None:
        uid = vmi["metadata"]["uid"]
        guest = self.guests.get(uid)
        if guest is not None and guest.alive():
            self.guests.kill(guest)
        was_final = st.is_final(vmi)
        self.write(
            key,
            uid,
            lambda o: self._mutate_final(
                o,
                st.FAILED,
                "NodeFenced",
                "the node was fenced: its guests are powered off",
                drop_finalizer=True,
            ),
            vmi,
        )
        if not was_final:
            self.controller_events.warning(
                vmi, st.STOPPED, "The VirtualMachineInstance crashed: its node was fenced."
            )
        if guest is not None:
            self.guests.forget(uid)
        return None
