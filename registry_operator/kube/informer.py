"""Reflector (list + watch) and shared informers.

Reflector semantics follow client-go `tools/cache/reflector.go`:
- The first LIST asks for resourceVersion "0" (served from the API server's watch cache); later
  relists ask for the last synced RV ("not older than"). If a LIST answers 410 Expired / "too large
  resource version", it is retried at once with RV "" (a quorum read).
- The resume point is the LIST's own metadata.resourceVersion, never an item's.
- The watch runs from there with bookmarks, a random server timeout in [5, 10) minutes and a client
  read timeout a little longer. A clean close reconnects from the last RV without relisting;
  connection failures back off and reconnect; 410 Gone ("too old resource version") relists.
- Backoff: 0.8 s, factor 2, jitter 1.0, capped at 30 s, reset after 2 minutes without trouble.

An informer owns one reflector and one indexed `Store`, applies every change to the store first
and then notifies its handlers. Each handler has its own unbounded queue and thread, so a slow
handler delays nobody else. A relist that no longer contains a cached object emits a delete with
`final_state_unknown=True` (client-go's DeletedFinalStateUnknown tombstone).

Memory: an informer keeps only what its reconcilers read. A transform (client-go's SetTransform,
controller-runtime's cache transforms) runs on every object before it is stored; the factory's
default drops `metadata.managedFields` and kubectl's last-applied-configuration annotation, which
often outweigh the rest of an object and are never read from a cache. LISTs are paginated like
client-go's pager (`page_size` per request; an expired continue token falls back to one full LIST).
Select what you watch: label and field selectors are part of the factory key, and objects known by
name only (users' Secrets) go through `byname.ByNameInformer` rather than an unfiltered informer.

Objects passed to handlers are the cached dicts themselves: handlers must not mutate them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from registry_operator.kube import objects
from registry_operator.kube.cache import IndexFunc, Object, Store, object_key, split_key
from registry_operator.kube.client import Client
from registry_operator.kube.clock import REAL_CLOCK, Clock
from registry_operator.kube.errors import (
    ApiError,
    ConnectionFailed,
    Gone,
    NotFound,
    ServerError,
    TooManyRequests,
    is_too_large_resource_version,
)
from registry_operator.kube.resources import Resource
from registry_operator.kube.watch import WatchEvent

log = logging.getLogger(__name__)

DEFAULT_RESYNC_PERIOD = 10 * 60 * 60.0

LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"

# Runs on every object an informer receives (listed or watched, deletions included) before it is
# stored or handed to a handler. It may change the object in place and must return it; it must be
# cheap, pure and keep metadata.name/namespace/resourceVersion.
Transform = Callable[[Object], Object]


# --- transforms -------------------------------------------------------------------------------------
def strip_managed_fields(obj: Object) -> Object:
    """Drop `metadata.managedFields` (server-side apply bookkeeping; a PUT without it keeps it)."""
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    return obj


def strip_managed_fields_and_last_applied(obj: Object) -> Object:
    """The default transform: `strip_managed_fields`, and kubectl's last-applied-configuration
    annotation (a full copy of the object as last applied).

    Not for objects written back with a PUT of the cached copy: the PUT would drop the annotation
    from the object and break the user's next `kubectl apply` (use `strip_managed_fields` there).
    """
    strip_managed_fields(obj)
    annotations = (obj.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict) and LAST_APPLIED_ANNOTATION in annotations:
        del annotations[LAST_APPLIED_ANNOTATION]
        if not annotations:
            del obj["metadata"]["annotations"]
    return obj


DEFAULT_TRANSFORM: Transform = strip_managed_fields_and_last_applied


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


# --- list/watch source ------------------------------------------------------------------------------
class WatchStreamLike(Protocol):
    def __iter__(self) -> Iterator[WatchEvent]: ...

    def close(self) -> None: ...


class ListerWatcher(Protocol):
    def list(self, resource_version: str, page_size: int | None) -> Object:
        """{"metadata": {"resourceVersion": ...}, "items": [...]} for the whole collection."""
        ...

    def watch(self, resource_version: str, timeout_seconds: int, read_timeout: float) -> WatchStreamLike: ...


def _selector_string(selector: str | Mapping[str, str] | None) -> str | None:
    """A canonical selector string, so equal selectors share one informer (`a=1,b=2` = `b=2,a=1`)."""
    if selector is None:
        return None
    if isinstance(selector, str):
        if "(" in selector:  # set-based terms hold commas of their own: keep the string as given
            return selector.strip() or None
        return ",".join(sorted(term.strip() for term in selector.split(",") if term.strip())) or None
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or None


@dataclass(frozen=True)
class ClientListerWatcher:
    """List and watch one resource through a `Client`, scoped by namespace and selectors."""

    client: Client
    resource: Resource
    namespace: str | None = None
    label_selector: str | None = None
    field_selector: str | None = None

    def list(self, resource_version: str, page_size: int | None) -> Object:
        return self.client.list(
            self.resource,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            resource_version=resource_version,
            page_size=page_size,
        )

    def watch(self, resource_version: str, timeout_seconds: int, read_timeout: float) -> WatchStreamLike:
        return self.client.watch(
            self.resource,
            self.namespace,
            resource_version=resource_version,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            timeout_seconds=timeout_seconds,
            allow_bookmarks=True,
            read_timeout=read_timeout,
        )


# --- backoff ----------------------------------------------------------------------------------------
class ExponentialBackoff:
    """client-go's exponential backoff manager: initial·factor^n (+jitter), capped, reset when idle."""

    def __init__(
        self,
        initial: float = 0.8,
        cap: float = 30.0,
        factor: float = 2.0,
        jitter: float = 1.0,
        reset_after: float = 120.0,
        clock: Clock = REAL_CLOCK,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._initial = initial
        self._cap = cap
        self._factor = factor
        self._jitter = jitter
        self._reset_after = reset_after
        self._clock = clock
        self._rand = rand
        self._current = initial
        self._last: float | None = None

    def next_delay(self) -> float:
        now = self._clock.now()
        if self._last is not None and now - self._last > self._reset_after:
            self._current = self._initial
        self._last = now
        base = self._current
        self._current = min(self._current * self._factor, self._cap)
        return min(base * (1.0 + self._rand() * self._jitter), self._cap)


# --- reflector --------------------------------------------------------------------------------------
class ReflectorSink(Protocol):
    def replace(self, items: list[Object], resource_version: str) -> None: ...

    def apply_event(self, event_type: str, obj: Object) -> None: ...


@dataclass
class ReflectorStats:
    lists: int = 0  # successful LISTs, the initial one included
    expired: int = 0  # 410 / "too old resource version" answers that forced a relist
    list_fallbacks: int = 0  # LISTs retried with RV "" because the RV was unavailable
    watches: int = 0  # watch requests that were opened
    watch_events: int = 0
    bookmarks: int = 0
    errors: int = 0  # failures that led to a backoff


class Reflector:
    def __init__(
        self,
        lister_watcher: ListerWatcher,
        sink: ReflectorSink,
        *,
        name: str,
        clock: Clock = REAL_CLOCK,
        backoff: ExponentialBackoff | None = None,
        watch_timeout_range: tuple[int, int] = (300, 600),
        read_timeout_margin: float = 30.0,
        page_size: int = 500,
    ) -> None:
        self.name = name
        self._lw = lister_watcher
        self._sink = sink
        self._clock = clock
        self._backoff = backoff or ExponentialBackoff(clock=clock)
        self._watch_timeout_range = watch_timeout_range
        self._read_timeout_margin = read_timeout_margin
        self._page_size = page_size
        self._stop = threading.Event()
        self._stream_lock = threading.Lock()
        self._stream: WatchStreamLike | None = None
        self._last_sync_rv = ""
        self._rv_unavailable = False
        self.stats = ReflectorStats()

    @property
    def last_sync_resource_version(self) -> str:
        return self._last_sync_rv

    def stop(self) -> None:
        self._stop.set()
        with self._stream_lock:
            stream = self._stream
        if stream is not None:
            stream.close()

    def run(self) -> None:
        """List and watch until `stop()`; never raises."""
        while not self._stop.is_set():
            try:
                self._list()
                self._watch_until_relist_needed()
            except Exception as error:
                if self._stop.is_set():
                    break
                self.stats.errors += 1
                log.warning("reflector %s: list/watch failed, retrying: %s", self.name, error)
            if self._stop.is_set():
                break
            self._clock.sleep(self._backoff.next_delay(), self._stop)

    def _relist_resource_version(self) -> str:
        if self._rv_unavailable:
            return ""
        return self._last_sync_rv or "0"

    def _list_page_size(self, resource_version: str) -> int | None:
        """client-go's pager rule: pages for RV "" (etcd) and "0" (the watch cache ignores the limit
        there, but an API server without one pages); none for a relist "not older than" a known RV,
        which the watch cache can then serve whole instead of sending the request to etcd."""
        if resource_version in ("", "0"):
            return self._page_size or None
        return None

    def _list(self) -> None:
        resource_version = self._relist_resource_version()
        try:
            result = self._lw.list(resource_version, self._list_page_size(resource_version))
        except ApiError as error:
            if resource_version == "" or not (
                isinstance(error, Gone) or is_too_large_resource_version(error)
            ):
                raise
            # The RV is no longer (or not yet) available: fall back to a consistent read.
            self.stats.list_fallbacks += 1
            self._rv_unavailable = True
            result = self._lw.list("", self._list_page_size(""))
        self._rv_unavailable = False
        list_rv = objects.resource_version(result)
        self._sink.replace(list(result.get("items") or []), list_rv)
        self._last_sync_rv = list_rv
        self.stats.lists += 1

    def _watch_until_relist_needed(self) -> None:
        while not self._stop.is_set():
            timeout_seconds = random.randrange(*self._watch_timeout_range)
            try:
                stream = self._lw.watch(
                    self._last_sync_rv, timeout_seconds, timeout_seconds + self._read_timeout_margin
                )
            except Gone:
                self.stats.expired += 1
                return
            except (ConnectionFailed, TooManyRequests, ServerError) as error:
                # The API server is unreachable or overloaded: keep our RV, wait, watch again.
                self.stats.errors += 1
                log.info("reflector %s: cannot watch, backing off: %s", self.name, error)
                self._clock.sleep(self._backoff.next_delay(), self._stop)
                continue
            with self._stream_lock:
                self._stream = stream
            if self._stop.is_set():
                stream.close()
                return
            self.stats.watches += 1
            started = self._clock.now()
            events = 0
            try:
                for event in stream:
                    events += 1
                    self._handle(event)
                    if self._stop.is_set():
                        return
            except Gone:
                self.stats.expired += 1
                return
            except ConnectionFailed as error:
                # The stream broke (API server restart, network): resume from the last RV.
                self.stats.errors += 1
                log.info("reflector %s: watch interrupted: %s", self.name, error)
                self._clock.sleep(self._backoff.next_delay(), self._stop)
                continue
            finally:
                with self._stream_lock:
                    self._stream = None
                stream.close()
            if events == 0 and self._clock.now() - started < 1.0 and not self._stop.is_set():
                # A watch that ends at once without events points at a problem: don't hot-loop.
                self.stats.errors += 1
                self._clock.sleep(self._backoff.next_delay(), self._stop)

    def _handle(self, event: WatchEvent) -> None:
        obj = event.object
        resource_version = objects.resource_version(obj)
        if event.type == "BOOKMARK":
            self.stats.bookmarks += 1
        elif event.type in ("ADDED", "MODIFIED", "DELETED"):
            self.stats.watch_events += 1
            self._sink.apply_event(event.type, obj)
        else:
            log.warning("reflector %s: ignoring watch event of type %r", self.name, event.type)
            return
        if resource_version:
            self._last_sync_rv = resource_version


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


# --- objects known by name --------------------------------------------------------------------------
ReferenceFunc = Callable[[Object], Iterable[str]]


class ReadThroughStore(Store):
    """The store of a `ByNameInformer`: a key that is not watched yet (or whose watch has not listed
    yet) is read from the API instead of answering "not found" from an empty cache."""

    def __init__(self, indexers: Mapping[str, IndexFunc] | None, informer: ByNameInformer) -> None:
        super().__init__(indexers)
        self._informer = informer
        self.read_through = 0  # GETs sent because a key was not (yet) watched, for tests/diagnostics

    def get(self, key: str, *, copy: bool = True) -> Object | None:
        if self._informer.is_watched(key):
            return super().get(key, copy=copy)
        self.read_through += 1
        return self._informer.fetch(key)


@dataclass
class _Watched:
    reflector: Reflector
    sink: _KeySink
    synced: bool = False
    thread: threading.Thread | None = None


class _KeySink:
    """A reflector sink for one watched key of a ByNameInformer."""

    def __init__(self, informer: ByNameInformer, key: str) -> None:
        self._informer = informer
        self._key = key

    def replace(self, items: list[Object], resource_version: str) -> None:
        self._informer._replace_key(self._key, self, items)

    def apply_event(self, event_type: str, obj: Object) -> None:
        self._informer._apply_key_event(self._key, self, event_type, obj)


class ByNameInformer(InformerBase):
    """Objects of one resource that are known by name — Secrets a user names in a spec — without
    caching the rest of their kind: one list+watch (`fieldSelector=metadata.name=<name>`, in the
    object's namespace) per referenced key, all feeding one store and one set of handlers.

    What is watched follows references: `track_references(referrers, refs)` watches every key that
    `refs` returns for some object of the `referrers` informer (reference-counted over all
    referrers and sources), and stops watching a key — dropping it from the cache, with a delete
    notification — once nothing refers to it. Reads of a key that is not watched yet (a spec
    changed a moment ago, its watch is still being opened) go to the API (`ReadThroughStore`).

    Costs one API-server watch per referenced key: meant for the few objects users name, not for
    whole collections.
    """

    def __init__(
        self,
        client: Client,
        resource: Resource,
        *,
        name: str,
        indexers: Mapping[str, IndexFunc] | None = None,
        resync_period: float | None = None,
        clock: Clock = REAL_CLOCK,
        transform: Transform | None = None,
        watch_timeout_range: tuple[int, int] = (300, 600),
    ) -> None:
        super().__init__(
            name=name, indexers=indexers, resync_period=resync_period, clock=clock, transform=transform
        )
        self._client = client
        self.resource = resource
        self._watch_timeout_range = watch_timeout_range
        self._watched: dict[str, _Watched] = {}
        self._counts: dict[str, int] = {}
        self._references: dict[tuple[int, str], frozenset[str]] = {}
        self._sources: list[tuple[InformerBase, HandlerRegistration]] = []

    def _new_store(self, indexers: Mapping[str, IndexFunc] | None) -> Store:
        return ReadThroughStore(indexers, self)

    # --- what is watched -------------------------------------------------------------------------
    def track_references(self, referrers: InformerBase, refs: ReferenceFunc) -> None:
        """Watch every key ("namespace/name", or "name") that `refs(obj)` gives for an object of
        `referrers`, for as long as some object refers to it."""
        source_id = len(self._sources)

        def update(obj: Object) -> None:
            self._set_references((source_id, object_key(obj)), frozenset(refs(obj)))

        def delete(obj: Object, _unknown: bool) -> None:
            self._set_references((source_id, object_key(obj)), frozenset())

        handler = EventHandlerFuncs(lambda o, _i: update(o), lambda _o, n: update(n), delete)
        registration = referrers.add_event_handler(handler)
        with self._lock:
            self._sources.append((referrers, registration))

    def watched_keys(self) -> list[str]:
        with self._lock:
            return sorted(self._watched)

    def is_watched(self, key: str) -> bool:
        """Whether `key` is watched and its watch has listed it (the cache answers for it)."""
        with self._lock:
            watched = self._watched.get(key)
            return watched is not None and watched.synced

    def fetch(self, key: str) -> Object | None:
        """GET `key` from the API, through the transform; None when it does not exist."""
        namespace, name = split_key(key)
        try:
            obj = self._client.get(self.resource, name, namespace or None)
        except NotFound:
            return None
        obj.setdefault("apiVersion", self.resource.api_version)
        obj.setdefault("kind", self.resource.kind)
        return self._transformed(obj)

    def _set_references(self, referrer: tuple[int, str], keys: frozenset[str]) -> None:
        with self._lock:
            old = self._references.get(referrer, frozenset())
            if keys == old:
                return
            if keys:
                self._references[referrer] = keys
            else:
                self._references.pop(referrer, None)
            for key in keys - old:
                self._counts[key] = self._counts.get(key, 0) + 1
                if self._counts[key] == 1:
                    self._watch(key)
            for key in old - keys:
                self._counts[key] -= 1
                if self._counts[key] == 0:
                    del self._counts[key]
                    self._unwatch(key)

    def _watch(self, key: str) -> None:
        namespace, name = split_key(key)
        lister_watcher = ClientListerWatcher(
            self._client,
            self.resource,
            namespace if self.resource.namespaced else None,
            field_selector=f"metadata.name={name}",
        )
        sink = _KeySink(self, key)
        reflector = Reflector(
            lister_watcher,
            sink,
            name=f"{self.name}[{key}]",
            clock=self._clock,
            watch_timeout_range=self._watch_timeout_range,
        )
        watched = _Watched(reflector, sink)
        self._watched[key] = watched
        if self._started and not self._stop.is_set():
            self._run(key, watched)

    def _run(self, key: str, watched: _Watched) -> None:
        watched.thread = threading.Thread(
            target=watched.reflector.run, name=f"reflector-{self.name}[{key}]", daemon=True
        )
        watched.thread.start()

    def _unwatch(self, key: str) -> None:
        watched = self._watched.pop(key, None)
        if watched is None:
            return
        watched.reflector.stop()
        old = self.store.delete(key)
        if old is not None:
            self._notify(("delete", old, True))

    # --- per-key reflector sinks -----------------------------------------------------------------
    def _current(self, key: str, sink: _KeySink) -> _Watched | None:
        watched = self._watched.get(key)
        # A reflector that was stopped may still deliver what it had in flight: ignore it.
        return watched if watched is not None and watched.sink is sink else None

    def _replace_key(self, key: str, sink: _KeySink, items: list[Object]) -> None:
        found = [self._transformed(item) for item in items if object_key(item) == key]
        with self._lock:
            watched = self._current(key, sink)
            if watched is None:
                return
            initial = not watched.synced
            if found:
                old = self.store.upsert(found[0])
                if old is None:
                    self._notify(("add", found[0], initial and not self._synced.is_set()))
                else:
                    self._notify(("update", found[0], old))
            else:
                gone = self.store.delete(key)
                if gone is not None:
                    self._notify(("delete", gone, True))
            watched.synced = True
        self.has_synced()

    def _apply_key_event(self, key: str, sink: _KeySink, event_type: str, obj: Object) -> None:
        with self._lock:
            if self._current(key, sink) is None or object_key(obj) != key:
                return
            self.apply_event(event_type, obj)

    # --- lifecycle -------------------------------------------------------------------------------
    def has_synced(self) -> bool:
        """Synced once every source delivered its initial objects and every key they refer to was
        listed; stays synced afterwards (a key referred to later is read through until listed)."""
        if self._synced.is_set():
            return True
        with self._lock:
            if not self._started:
                return False
            if not all(registration.has_synced() for _source, registration in self._sources):
                return False
            if not all(watched.synced for watched in self._watched.values()):
                return False
            self._mark_synced()
        return True

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.has_synced():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            for key, watched in self._watched.items():
                self._run(key, watched)
        self._start_resync()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        with self._lock:
            watched = list(self._watched.values())
            sources = list(self._sources)
        for source, registration in sources:
            source.remove_event_handler(registration)
        for entry in watched:
            entry.reflector.stop()
        self._stop_handlers_and_join(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        for entry in watched:
            if entry.thread is not None:
                entry.thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


# --- factory ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InformerKey:
    resource: Resource
    namespace: str | None
    label_selector: str | None
    field_selector: str | None


class SharedInformerFactory:
    """One informer per (resource, namespace, label selector, field selector), shared by all users,
    and one `ByNameInformer` per resource.

    Every informer gets the transform for its resource: `transforms[resource]` if given (None there
    means none), else `default_transform` (controller-runtime's cache.Options DefaultTransform and
    ByObject), so all users of a shared informer see the same objects.
    """

    def __init__(
        self,
        client: Client,
        *,
        resync_period: float | None = DEFAULT_RESYNC_PERIOD,
        clock: Clock = REAL_CLOCK,
        page_size: int = 500,
        default_transform: Transform | None = DEFAULT_TRANSFORM,
        transforms: Mapping[Resource, Transform | None] | None = None,
    ) -> None:
        self._client = client
        self._resync_period = resync_period
        self._clock = clock
        self._page_size = page_size
        self._default_transform = default_transform
        self._transforms = dict(transforms or {})
        self._lock = threading.Lock()
        self._informers: dict[InformerKey, SharedInformer] = {}
        self._by_name: dict[Resource, ByNameInformer] = {}
        self._started = False

    def transform_for(self, resource: Resource) -> Transform | None:
        return self._transforms.get(resource, self._default_transform)

    def informer(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | Mapping[str, str] | None = None,
        indexers: Mapping[str, IndexFunc] | None = None,
    ) -> SharedInformer:
        key = InformerKey(
            resource,
            (namespace or None) if resource.namespaced else None,
            _selector_string(label_selector),
            _selector_string(field_selector),
        )
        with self._lock:
            informer = self._informers.get(key)
            if informer is None:
                scope = key.namespace or "*"
                selectors = ",".join(s for s in (key.label_selector, key.field_selector) if s)
                informer = SharedInformer(
                    ClientListerWatcher(
                        self._client, resource, key.namespace, key.label_selector, key.field_selector
                    ),
                    name=f"{resource}/{scope}" + (f"[{selectors}]" if selectors else ""),
                    resync_period=self._resync_period,
                    clock=self._clock,
                    page_size=self._page_size,
                    transform=self.transform_for(resource),
                )
                self._informers[key] = informer
                if self._started:
                    informer.start()
        if indexers:
            informer.add_indexers(indexers)
        return informer

    def by_name(
        self, resource: Resource, *, indexers: Mapping[str, IndexFunc] | None = None
    ) -> ByNameInformer:
        """The shared `ByNameInformer` of `resource` (add what it watches with `track_references`)."""
        with self._lock:
            informer = self._by_name.get(resource)
            if informer is None:
                informer = ByNameInformer(
                    self._client,
                    resource,
                    name=f"{resource}/by-name",
                    resync_period=self._resync_period,
                    clock=self._clock,
                    transform=self.transform_for(resource),
                )
                self._by_name[resource] = informer
                if self._started:
                    informer.start()
        if indexers:
            informer.add_indexers(indexers)
        return informer

    def informers(self) -> dict[InformerKey, SharedInformer]:
        with self._lock:
            return dict(self._informers)

    def by_name_informers(self) -> dict[Resource, ByNameInformer]:
        with self._lock:
            return dict(self._by_name)

    def _all(self) -> list[SharedInformer | ByNameInformer]:
        with self._lock:
            return [*self._informers.values(), *self._by_name.values()]

    def start(self) -> None:
        """Start every informer (and those created later)."""
        with self._lock:
            self._started = True
        for informer in self._all():
            informer.start()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        """Wait (real seconds) until every informer has synced."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for informer in self._all():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not informer.wait_for_sync(remaining):
                return False
        return True

    def has_synced(self) -> bool:
        return all(informer.has_synced() for informer in self._all())

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop every informer, waiting at most `timeout` (real seconds) in total."""
        informers = self._all()
        for informer in informers:
            informer.stop(timeout=0)
        deadline = None if timeout is None else time.monotonic() + timeout
        for informer in informers:
            informer.stop(None if deadline is None else max(0.0, deadline - time.monotonic()))
