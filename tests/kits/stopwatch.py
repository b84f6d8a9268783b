"""Following a stopped VMI as the operator does: a watch (DELETED events included) folded
into guestha's StopRecord, the node and its Lease read afresh for each verdict.

The fencing tests and the fencing benchmark share it.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import kubernetes
from kubernetes import client as kclient
from kubernetes import watch

from guestha.kubevirt import kubeapi
from guestha.kubevirt.fencing import (
    NODE_LEASE_NAMESPACE,
    NodeView,
    StopRecord,
    StopVerdict,
    stop_verdict,
)
from kits.waiting import wait_for


class Observer:
    """The VMI `name` as a watch delivers it, folded into a StopRecord on each verdict.
    `stop()` ends the watch. `api`: guestha's client (the operator's reads); the watch
    runs on the `kubernetes` client of the same `kubeconfig` (a test's tool, not the
    operator's)."""

    def __init__(self, api: kubeapi.Client, kubeconfig: str, namespace: str,
                 name: str) -> None:
        self.api = api
        self._watch_api = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig)
        self.namespace = namespace
        self.name = name
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()
        self.record: StopRecord | None = None

    def _follow(self) -> None:
        objects = kclient.CustomObjectsApi(self._watch_api)
        while True:
            try:
                for event in self._watch.stream(  # type: ignore[no-untyped-call]
                    objects.list_namespaced_custom_object, "kubevirt.io", "v1",
                    self.namespace, "virtualmachineinstances",
                    field_selector=f"metadata.name={self.name}", timeout_seconds=60,
                ):
                    self.events.put((event["type"], event["object"]))
            except Exception:  # a broken watch: start another, as an informer does
                time.sleep(0.2)
            if self._stopped.is_set():
                return

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()  # type: ignore[no-untyped-call]

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = kubeapi.call_sync(self.api, "GET", path)
            return found
        except kubeapi.ApiError as exc:
            if exc.not_found:
                return None
            raise

    def vmi(self) -> dict[str, Any] | None:
        return self.get(f"/apis/kubevirt.io/v1/namespaces/{self.namespace}/"
                        f"virtualmachineinstances/{self.name}")

    def node(self, name: str | None) -> NodeView | None:
        if not name:
            return None
        return NodeView.from_objects(
            self.get(f"/api/v1/nodes/{name}"),
            self.get(f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/"
                     f"leases/{name}"),
            time.time())

    def begin(self) -> StopRecord:
        vmi = self.vmi()
        assert vmi is not None
        self.record = StopRecord.begin(vmi, self.node(vmi["status"].get("nodeName")),
                                       time.time())
        return self.record

    def verdict(self) -> StopVerdict:
        record = self.record
        assert record is not None
        while True:
            try:
                kind, obj = self.events.get_nowait()
            except queue.Empty:
                break
            record = record.seen(obj, self.node(record.node), deleted=kind == "DELETED")
        current = self.vmi()
        record = record.seen(current, self.node(record.node))
        self.record = record
        return stop_verdict(record.observation(current, self.node(record.node), time.time()))

    def confirmed(self, reason: str, timeout: float = 60.0,
                  interval: float = 0.2) -> StopVerdict:
        last: list[StopVerdict] = []

        def check() -> StopVerdict | None:
            last[:] = [self.verdict()]
            return last[0] if last[0].confirmed else None

        try:
            verdict = wait_for(check, timeout, interval,
                               f"the stop of {self.name} confirmed ({reason})")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last verdict {last}, record {self.record}") from None
        assert verdict is not None and verdict.reason == reason, verdict
        return verdict

    def pending_throughout(self, seconds: float, reasons: set[str], alive: list[int]
                           ) -> None:
        """The verdict stays Pending with one of `reasons`, and the guest runs, for `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            verdict = self.verdict()
            assert not verdict.confirmed, verdict
            assert verdict.reason in reasons, verdict
            assert all(pid_alive(pid) for pid in alive), "the guest stopped meanwhile"
            time.sleep(0.5)


def pid_alive(pid: int) -> bool:
    """Whether a host process runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
