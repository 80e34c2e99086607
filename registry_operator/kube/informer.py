"""Informers: an indexed `Store` fed by reflectors, and the event handlers that hear of its changes.

`InformerBase` applies every change to the store first and then notifies its handlers. Each handler
has its own unbounded queue and thread (`HandlerRegistration`), so a slow handler delays nobody
else. `SharedInformer` is one reflector (see reflector.py) + one store: a relist that no longer
contains a cached object emits a delete with `final_state_unknown=True` (client-go's
DeletedFinalStateUnknown tombstone). Objects known by name only are in byname.py; the factory that
shares informers between users is factory.py.

Memory: an informer keeps only what its reconcilers read: its transform (transforms.py) runs on
every object before it is stored. Select what you watch: label and field selectors are part of the
factory key, and objects known by name only (users' Secrets) go through `byname.ByNameInformer`
rather than an unfiltered informer.

Objects passed to handlers are the cached dicts themselves: handlers must not mutate them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from registry_operator.kube.cache import IndexFunc, Object, Store, object_key
from registry_operator.kube.clock import REAL_CLOCK, Clock
from registry_operator.kube.reflector import ExponentialBackoff, ListerWatcher, Reflector
from registry_operator.kube.transforms import Transform

log = logging.getLogger(__name__)


# --- handlers ---------------------------------------------------------------------------------------
class ResourceEventHandler(Protocol):
    def on_add(self, obj: Object, is_in_initial_list: bool) -> None: ...

    def on_update(self, old: Object, new: Object) -> None:
        """Also called on resync and relist with old is new (or the same resourceVersion)."""
        ...

    def on_delete(self, obj: Object, final_state_unknown: bool) -> None:
        """`final_state_unknown`: the deletion was inferred from a relist; `obj` is the last seen state."""
        ...


@dataclass
class EventHandlerFuncs:
    """A ResourceEventHandler from optional callables."""

    add: Callable[[Object, bool], None] | None = None
    update: Callable[[Object, Object], None] | None = None
    delete: Callable[[Object, bool], None] | None = None

    def on_add(self, obj: Object, is_in_initial_list: bool) -> None:
        if self.add is not None:
            self.add(obj, is_in_initial_list)

    def on_update(self, old: Object, new: Object) -> None:
        if self.update is not None:
            self.update(old, new)

    def on_delete(self, obj: Object, final_state_unknown: bool) -> None:
        if self.delete is not None:
            self.delete(obj, final_state_unknown)


# --- informer ---------------------------------------------------------------------------------------
_Notification = tuple[str, Object, Any]


class HandlerRegistration:
    """Returned by `add_event_handler`; `has_synced()` once the initial adds were delivered."""

    _SYNCED_MARKER = "synced"

    def __init__(self, informer: InformerBase, handler: ResourceEventHandler) -> None:
        self._informer_name = informer.name
        self.handler = handler
        self._cond = threading.Condition()
        self._pending: deque[_Notification] = deque()
        self._stopped = False
        self._synced = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=f"handler-{informer.name}", daemon=True)
        self._thread.start()

    def _push(self, notification: _Notification) -> None:
        with self._cond:
            self._pending.append(notification)
            self._cond.notify_all()

    def _push_synced_marker(self) -> None:
        self._push((self._SYNCED_MARKER, {}, None))

    def has_synced(self) -> bool:
        with self._cond:
            return self._synced

    def _stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                kind, obj, extra = self._pending.popleft()
                if kind == self._SYNCED_MARKER:
                    self._synced = True
                    self._cond.notify_all()
                    continue
                self._busy = True
            try:
                if kind == "add":
                    self.handler.on_add(obj, bool(extra))
                elif kind == "update":
                    self.handler.on_update(extra, obj)
                else:
                    self.handler.on_delete(obj, bool(extra))
            except Exception:
                log.exception("informer %s: event handler failed", self._informer_name)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every queued notification was handled (tests, diagnostics)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)


class InformerBase:
    """An indexed store plus event handlers, fed by one or more reflectors (see subclasses).

    Every change goes to the store first, then to each handler's queue. `resync()` replays the
    cache as updates. Subclasses decide where objects come from and when the cache counts as synced
    (`_mark_synced`).
    """

    def __init__(
        self,
        *,
        name: str,
        indexers: Mapping[str, IndexFunc] | None = None,
        resync_period: float | None = None,
        clock: Clock = REAL_CLOCK,
        transform: Transform | None = None,
    ) -> None:
        self.name = name
        self.store = self._new_store(indexers)
        self._clock = clock
        self._resync_period = resync_period
        self._transform = transform
        self._lock = threading.RLock()
        self._handlers: list[HandlerRegistration] = []
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False

    def _new_store(self, indexers: Mapping[str, IndexFunc] | None) -> Store:
        return Store(indexers)

    # --- configuration ---------------------------------------------------------------------------
    def set_transform(self, transform: Transform | None) -> None:
        """Set the transform (client-go's SetTransform): only before `start()`, so that every cached
        object went through the same one."""
        with self._lock:
            if self._started:
                raise RuntimeError(f"informer {self.name}: set the transform before start()")
            self._transform = transform

    @property
    def transform(self) -> Transform | None:
        return self._transform

    def _transformed(self, obj: Object) -> Object:
        return self._transform(obj) if self._transform is not None else obj

    # --- handlers --------------------------------------------------------------------------------
    def add_event_handler(self, handler: ResourceEventHandler) -> HandlerRegistration:
        """Register `handler`; if the cache is already filled it first gets an add per object."""
        with self._lock:
            registration = HandlerRegistration(self, handler)
            self._handlers.append(registration)
            if self._synced.is_set():
                for obj in self.store.list(copy=False):
                    registration._push(("add", obj, True))
                registration._push_synced_marker()
            return registration

    def remove_event_handler(self, registration: HandlerRegistration) -> None:
        with self._lock:
            if registration in self._handlers:
                self._handlers.remove(registration)
        registration._stop()

    def add_indexers(self, indexers: Mapping[str, IndexFunc]) -> None:
        self.store.add_indexers(indexers)

    def _notify(self, notification: _Notification) -> None:
        for registration in self._handlers:
            registration._push(notification)

    def _mark_synced(self) -> None:
        """Called with the lock held once the initial state is in the store."""
        if self._synced.is_set():
            return
        for registration in self._handlers:
            registration._push_synced_marker()
        self._synced.set()

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._started

    def has_synced(self) -> bool:
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def _start_resync(self) -> None:
        if self._resync_period:
            resync = threading.Thread(target=self._resync_loop, name=f"resync-{self.name}", daemon=True)
            self._threads.append(resync)
            resync.start()

    def _stop_handlers_and_join(self, timeout: float | None) -> None:
        with self._lock:
            handlers = list(self._handlers)
        for registration in handlers:
            registration._stop()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # --- resync ----------------------------------------------------------------------------------
    def resync(self) -> int:
        """Replay every cached object to the handlers as an update (no API call); returns the count."""
        with self._lock:
            cached = self.store.list(copy=False)
            for obj in cached:
                self._notify(("update", obj, obj))
            return len(cached)

    def _resync_loop(self) -> None:
        assert self._resync_period is not None
        while True:
            # 10% jitter spreads the resyncs of different informers.
            period = self._resync_period * (1.0 + 0.1 * random.random())
            if self._clock.sleep(period, self._stop):
                return
            if self._synced.is_set():
                self.resync()

    # --- watch events (any reflector) -------------------------------------------------------------
    def apply_event(self, event_type: str, obj: Object) -> None:
        obj = self._transformed(obj)
        with self._lock:
            if event_type == "DELETED":
                self.store.delete(object_key(obj))
                self._notify(("delete", obj, False))
                return
            old = self.store.upsert(obj)
            if old is None:
                self._notify(("add", obj, False))
            else:
                self._notify(("update", obj, old))


class SharedInformer(InformerBase):
    """One reflector + one indexed store, shared by any number of event handlers."""

    def __init__(
        self,
        lister_watcher: ListerWatcher,
        *,
        name: str,
        indexers: Mapping[str, IndexFunc] | None = None,
        resync_period: float | None = None,
        clock: Clock = REAL_CLOCK,
        backoff: ExponentialBackoff | None = None,
        watch_timeout_range: tuple[int, int] = (300, 600),
        page_size: int = 500,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(
            name=name, indexers=indexers, resync_period=resync_period, clock=clock, transform=transform
        )
        self.reflector = Reflector(
            lister_watcher,
            self,
            name=name,
            clock=clock,
            backoff=backoff,
            watch_timeout_range=watch_timeout_range,
            page_size=page_size,
        )

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        reflector = threading.Thread(target=self.reflector.run, name=f"reflector-{self.name}", daemon=True)
        self._threads.append(reflector)
        reflector.start()
        self._start_resync()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop watching and delivering; wait up to `timeout` (real seconds) for the threads."""
        self._stop.set()
        self.reflector.stop()
        self._stop_handlers_and_join(timeout)

    # --- reflector sink --------------------------------------------------------------------------
    def replace(self, items: list[Object], resource_version: str) -> None:
        items = [self._transformed(item) for item in items]
        with self._lock:
            initial = not self._synced.is_set()
            added, updated, deleted = self.store.replace(items)
            for obj in added:
                self._notify(("add", obj, initial))
            for old, new in updated:
                self._notify(("update", new, old))
            for obj in deleted:
                self._notify(("delete", obj, True))
            if initial:
                self._mark_synced()
