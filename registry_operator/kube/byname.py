"""`ByNameInformer`: objects of one resource that are known by name — Secrets a user names in a
spec — cached without caching the rest of their kind: one list+watch per referenced key
(`fieldSelector=metadata.name=<name>`), all feeding one store and one set of handlers, started and
stopped as references come and go. Reads of a key not watched yet go to the API
(`ReadThroughStore`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from registry_operator.kube.cache import IndexFunc, Object, Store, object_key, split_key
from registry_operator.kube.client import Client
from registry_operator.kube.clock import REAL_CLOCK, Clock
from registry_operator.kube.errors import NotFound
from registry_operator.kube.informer import EventHandlerFuncs, HandlerRegistration, InformerBase
from registry_operator.kube.reflector import ClientListerWatcher, Reflector
from registry_operator.kube.resources import Resource
from registry_operator.kube.transforms import Transform

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
