"""A list-then-watch cache of one kind, as client-go's informers keep for KubeVirt.

Each informer lists its kind, then watches from the list's resourceVersion, and lists again
when the watch says 410 Gone (its resourceVersion is too old) or breaks. Every change is
reported by key to the handlers, which only enqueue work: reconciling reads the cache.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable

from kubevirtsim.api import Api, ApiError, Obj, Resource, key_of

log = logging.getLogger(__name__)

Handler = Callable[[str, Obj | None, Obj | None], None]  # key, old, new (None = absent)


def newer(a: str, b: str) -> bool:
    """True when resourceVersion a is newer than b (etcd revisions; opaque otherwise)."""
    if a.isdigit() and b.isdigit():
        return int(a) > int(b)
    return a != b


class Informer:
    """Keeps every object of one kind (all namespaces) and tells handlers what changed."""

    def __init__(
        self, api: Api, resource: Resource, stop: threading.Event, namespace: str | None = None
    ) -> None:
        self.api = api
        self.resource = resource
        self.namespace = namespace if resource.namespaced else None
        self.stop = stop
        self.handlers: list[Handler] = []
        self._items: dict[str, Obj] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"watch-{resource.plural}", daemon=True
        )

    def add_handler(self, handler: Handler) -> None:
        self.handlers.append(handler)

    def start(self) -> None:
        self._thread.start()

    # --- reads -----------------------------------------------------------------------------
    def get(self, key: str) -> Obj | None:
        """A private deep copy of the cached object: callers may change it freely."""
        with self._lock:
            obj = self._items.get(key)
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self) -> list[Obj]:
        with self._lock:
            return [copy.deepcopy(o) for o in self._items.values()]

    def list_keys(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def observe(self, obj: Obj) -> None:
        """Take an object that this process just wrote, if it is newer than the cache.

        Saves reconciling once more against the older copy until the watch catches up. The
        handlers hear of it now: the watch event of this version will be skipped as already
        seen, and other controllers (the VM's, for a VMI's status) must still learn of it.
        """
        key = key_of(obj)
        with self._lock:
            old = self._items.get(key)
            if old is None or old["metadata"].get("uid") != obj["metadata"].get("uid"):
                return  # unknown or replaced: the watch tells (no ghost after a DELETED)
            if not newer(obj["metadata"]["resourceVersion"], old["metadata"]["resourceVersion"]):
                return
            new = copy.deepcopy(obj)
            self._items[key] = new
        self._notify(key, old, new)

    # --- the watch loop --------------------------------------------------------------------
    def _notify(self, key: str, old: Obj | None, new: Obj | None) -> None:
        for handler in self.handlers:
            try:
                handler(key, old, new)
            except Exception:
                log.exception("handler of %s %s failed", self.resource.kind, key)

    def _relist(self) -> str:
        listing = self.api.list_all(self.resource, self.namespace)
        fresh = {key_of(o): o for o in listing.get("items", [])}
        with self._lock:
            old_items = self._items
            self._items = fresh
        for key, obj in fresh.items():
            old = old_items.get(key)
            if old is None or old["metadata"].get("resourceVersion") != obj["metadata"].get(
                "resourceVersion"
            ):
                self._notify(key, old, obj)
        for key, old in old_items.items():
            if key not in fresh:
                self._notify(key, old, None)
        self.synced.set()
        return str(listing["metadata"]["resourceVersion"])

    def _apply(self, kind: str, obj: Obj) -> None:
        key = key_of(obj)
        with self._lock:
            old = self._items.get(key)
            if kind == "DELETED":
                if old is not None and old["metadata"].get("uid") == obj["metadata"].get("uid"):
                    del self._items[key]
                else:
                    return
            else:
                if (
                    old is not None
                    and old["metadata"].get("uid") == obj["metadata"].get("uid")
                    and not newer(
                        obj["metadata"]["resourceVersion"], old["metadata"]["resourceVersion"]
                    )
                ):
                    # this process already observed its own write of this version
                    return
                self._items[key] = obj
        self._notify(key, old, None if kind == "DELETED" else obj)

    def _run(self) -> None:
        rv = ""
        backoff = 0.2
        while not self.stop.is_set():
            try:
                if not rv:
                    rv = self._relist()
                for event in self.api.watch(self.resource, rv, namespace=self.namespace):
                    if self.stop.is_set():
                        return
                    kind, obj = event.get("type"), event.get("object", {})
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            log.info(
                                "%s watch expired (410 Gone): listing again", self.resource.plural
                            )
                        else:
                            log.warning("%s watch error: %s", self.resource.plural, obj)
                        rv = ""
                        break
                    rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._apply(str(kind), obj)
                backoff = 0.2
            except ApiError as exc:
                if self.stop.is_set():
                    return
                if exc.gone:
                    rv = ""
                    continue
                log.warning(
                    "%s watch failed: %s; retrying in %.1fs", self.resource.plural, exc, backoff
                )
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                if self.stop.is_set():
                    return
                log.exception("%s watch broke; listing again", self.resource.plural)
                rv = ""
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
