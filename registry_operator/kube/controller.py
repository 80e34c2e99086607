"""Controllers: watches → requests → rate-limited queue → N workers → reconcile(Request) → Result.

Result handling follows controller-runtime (FRAMEWORK-SEMANTICS §1.7):

| reconcile ...                         | queue                         | reconcile_total{result=} |
|---------------------------------------|-------------------------------|--------------------------|
| returns Result() / None               | forget                        | success                  |
| returns Result(requeue_after=s > 0)   | forget, add_after(s)          | requeue_after            |
| returns Result(requeue=True)          | add_rate_limited              | requeue                  |
| raises ReconcileError or ApiError     | add_rate_limited              | error (+errors_total)    |
| raises TerminalError                  | forget, no retry              | error (+terminal errors) |
| raises anything else (a bug: "panic") | add_rate_limited              | error (+panics_total)    |

Reconciles are not cancelled on a deadline (Python threads cannot be interrupted), so
`controller_runtime_reconcile_timeouts_total` exists for dashboards but stays 0.

Event handlers run predicates before enqueueing. Handlers are registered when the controller starts
(i.e. once this replica leads), so a new leader first sees an add for every cached object.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from registry_operator.kube import metrics
from registry_operator.kube.cache import Object, Store, split_key
from registry_operator.kube.clock import REAL_CLOCK, Clock
from registry_operator.kube.errors import ApiError, Conflict
from registry_operator.kube.informer import EventHandlerFuncs
from registry_operator.kube.resources import Resource
from registry_operator.kube.workqueue import RateLimiter, WorkQueue

log = structlog.get_logger(__name__)

DEFAULT_CACHE_SYNC_TIMEOUT = 120.0


# --- requests and results ----------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Request:
    """What to reconcile: an object's namespace ("" if cluster-scoped) and name."""

    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def __str__(self) -> str:
        return self.key

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Request:
        metadata = obj.get("metadata") or {}
        return cls(metadata.get("namespace") or "", metadata["name"])

    @classmethod
    def from_key(cls, key: str) -> Request:
        namespace, name = split_key(key)
        return cls(namespace, name)


@dataclass(frozen=True)
class Result:
    requeue_after: float | None = None
    requeue: bool = False


class ReconcileError(Exception):
    """An expected, retriable failure: the request is requeued with backoff."""


class TerminalError(Exception):
    """A failure retrying cannot fix (until the object changes): no requeue."""


class Reconciler(Protocol):
    def reconcile(self, request: Request) -> Result | None: ...


ReconcileFunc = Callable[[Request], Result | None]


# --- predicates --------------------------------------------------------------------------------------
class Predicate(Protocol):
    def create(self, obj: Object) -> bool: ...

    def update(self, old: Object, new: Object) -> bool: ...

    def delete(self, obj: Object) -> bool: ...


@dataclass(frozen=True)
class FuncPredicate:
    """Per-event-type functions; a missing one lets the event through."""

    on_create: Callable[[Object], bool] | None = None
    on_update: Callable[[Object, Object], bool] | None = None
    on_delete: Callable[[Object], bool] | None = None

    def create(self, obj: Object) -> bool:
        return self.on_create is None or self.on_create(obj)

    def update(self, old: Object, new: Object) -> bool:
        return self.on_update is None or self.on_update(old, new)

    def delete(self, obj: Object) -> bool:
        return self.on_delete is None or self.on_delete(obj)


def object_predicate(test: Callable[[Object], bool]) -> Predicate:
    """The same test for every event type (the new object on updates)."""
    return FuncPredicate(test, lambda _old, new: test(new), test)


def _metadata(obj: Object) -> dict[str, Any]:
    metadata: dict[str, Any] = obj.get("metadata") or {}
    return metadata


class GenerationChangedPredicate:
    """Pass updates only when metadata.generation changed (skips status-only writes and resyncs)."""

    def create(self, obj: Object) -> bool:
        return True

    def update(self, old: Object, new: Object) -> bool:
        return _metadata(old).get("generation") != _metadata(new).get("generation")

    def delete(self, obj: Object) -> bool:
        return True


class ResourceVersionChangedPredicate:
    """Pass updates only when the object really changed (drops resync and relist replays)."""

    def create(self, obj: Object) -> bool:
        return True

    def update(self, old: Object, new: Object) -> bool:
        return _metadata(old).get("resourceVersion") != _metadata(new).get("resourceVersion")

    def delete(self, obj: Object) -> bool:
        return True


class LabelChangedPredicate:
    def create(self, obj: Object) -> bool:
        return True

    def update(self, old: Object, new: Object) -> bool:
        return _metadata(old).get("labels") != _metadata(new).get("labels")

    def delete(self, obj: Object) -> bool:
        return True


class AnnotationChangedPredicate:
    def create(self, obj: Object) -> bool:
        return True

    def update(self, old: Object, new: Object) -> bool:
        return _metadata(old).get("annotations") != _metadata(new).get("annotations")

    def delete(self, obj: Object) -> bool:
        return True


def label_selector_predicate(match_labels: Mapping[str, str]) -> Predicate:
    """Only objects carrying all of `match_labels`."""
    wanted = dict(match_labels)

    def matches(obj: Object) -> bool:
        labels = _metadata(obj).get("labels") or {}
        return all(labels.get(k) == v for k, v in wanted.items())

    return object_predicate(matches)


def all_of(*predicates: Predicate) -> Predicate:
    return FuncPredicate(
        lambda obj: all(p.create(obj) for p in predicates),
        lambda old, new: all(p.update(old, new) for p in predicates),
        lambda obj: all(p.delete(obj) for p in predicates),
    )


def any_of(*predicates: Predicate) -> Predicate:
    return FuncPredicate(
        lambda obj: any(p.create(obj) for p in predicates),
        lambda old, new: any(p.update(old, new) for p in predicates),
        lambda obj: any(p.delete(obj) for p in predicates),
    )


def negate(predicate: Predicate) -> Predicate:
    return FuncPredicate(
        lambda obj: not predicate.create(obj),
        lambda old, new: not predicate.update(old, new),
        lambda obj: not predicate.delete(obj),
    )


# --- event sources and mappers ------------------------------------------------------------------------
class EventSource(Protocol):
    """What a controller watches: a SharedInformer, or anything with the same three methods."""

    def add_event_handler(self, handler: EventHandlerFuncs) -> Any: ...

    def remove_event_handler(self, registration: Any) -> None: ...

    def has_synced(self) -> bool: ...


RequestMapper = Callable[[Object], Iterable[Request]]


def owner_mapper(owner: Resource, *, only_controller: bool = True) -> RequestMapper:
    """Map a child to its owner(s) of `owner`'s group and kind (any version).

    The owner's namespace is the child's for namespaced owners and "" for cluster-scoped ones.
    """

    def owners(obj: Object) -> list[Request]:
        metadata = _metadata(obj)
        requests = []
        for ref in metadata.get("ownerReferences") or []:
            if only_controller and not ref.get("controller"):
                continue
            api_version = str(ref.get("apiVersion") or "")
            group = api_version.rpartition("/")[0]
            if group == owner.group and ref.get("kind") == owner.kind and ref.get("name"):
                namespace = (metadata.get("namespace") or "") if owner.namespaced else ""
                requests.append(Request(namespace, ref["name"]))
                if only_controller:
                    break
        return requests

    return owners


def index_mapper(store: Store, index_name: str, value_of: Callable[[Object], str | None]) -> RequestMapper:
    """Map an object to the objects of `store` whose `index_name` index holds `value_of(obj)`.

    E.g. a Secret → every custom resource whose "secret" index holds "ns/secret-name".
    """

    def mapped(obj: Object) -> list[Request]:
        value = value_of(obj)
        if value is None:
            return []
        return [Request.from_object(o) for o in store.by_index(index_name, value, copy=False)]

    return mapped


def _own_request(obj: Object) -> list[Request]:
    return [Request.from_object(obj)]


@dataclass
class _Watch:
    source: EventSource
    mapper: RequestMapper
    predicates: tuple[Predicate, ...]
    map_old_on_update: bool


# --- controller --------------------------------------------------------------------------------------
class CacheSyncTimeoutError(TimeoutError):
    pass


class Controller:
    """Reconciles `Request`s produced by its watches with `max_concurrent_reconciles` workers.

    The queue guarantees one object is never reconciled by two workers at once.
    """

    def __init__(
        self,
        name: str,
        reconciler: Reconciler | ReconcileFunc,
        *,
        max_concurrent_reconciles: int = 1,
        rate_limiter: RateLimiter | None = None,
        clock: Clock = REAL_CLOCK,
        cache_sync_timeout: float = DEFAULT_CACHE_SYNC_TIMEOUT,
        needs_leader_election: bool = True,
    ) -> None:
        if max_concurrent_reconciles < 1:
            raise ValueError("max_concurrent_reconciles must be at least 1")
        self.name = name
        self._reconcile: ReconcileFunc = (
            reconciler.reconcile if hasattr(reconciler, "reconcile") else reconciler
        )
        self.max_concurrent_reconciles = max_concurrent_reconciles
        self.cache_sync_timeout = cache_sync_timeout
        self.needs_leader_election = needs_leader_election
        self.queue: WorkQueue[Request] = WorkQueue(name, clock=clock, rate_limiter=rate_limiter)
        self._watches: list[_Watch] = []
        self._registrations: list[tuple[EventSource, Any]] = []
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._started = False
        self._log = log.bind(controller=name)
        self._init_metrics()

    def _init_metrics(self) -> None:
        # Pre-create every series at 0 so dashboards and rate() see them from the start.
        for result in metrics.RECONCILE_RESULT_LABELS:
            metrics.RECONCILE_RESULTS.labels(controller=self.name, result=result)
        for counter in (
            metrics.RECONCILE_ERRORS,
            metrics.TERMINAL_RECONCILE_ERRORS,
            metrics.RECONCILE_PANICS,
            metrics.RECONCILE_TIMEOUTS,
        ):
            counter.labels(controller=self.name)
        metrics.RECONCILE_TIME.labels(controller=self.name)
        metrics.MAX_CONCURRENT_RECONCILES.labels(controller=self.name).set(self.max_concurrent_reconciles)
        metrics.ACTIVE_WORKERS.labels(controller=self.name).set(0)

    # --- watches ---------------------------------------------------------------------------------
    def _add_watch(
        self, source: EventSource, mapper: RequestMapper, predicates: tuple[Predicate, ...], map_old: bool
    ) -> Controller:
        with self._lock:
            if self._started:
                raise RuntimeError(f"controller {self.name}: add watches before start()")
            self._watches.append(_Watch(source, mapper, predicates, map_old))
        return self

    def watch_for(self, source: EventSource, *predicates: Predicate) -> Controller:
        """The primary resource: every event enqueues the object itself."""
        return self._add_watch(source, _own_request, predicates, map_old=False)

    def watch_owned(
        self, source: EventSource, owner: Resource, *predicates: Predicate, only_controller: bool = True
    ) -> Controller:
        """Children: an event enqueues the owner named in their (controller) ownerReference."""
        return self._add_watch(source, owner_mapper(owner, only_controller=only_controller), predicates, True)

    def watch_mapped(self, source: EventSource, mapper: RequestMapper, *predicates: Predicate) -> Controller:
        """Related objects: an event enqueues whatever `mapper` returns (old and new on updates)."""
        return self._add_watch(source, mapper, predicates, map_old=True)

    def _handler_for(self, watch: _Watch) -> EventHandlerFuncs:
        predicates = watch.predicates
        queue = self.queue

        def enqueue(obj: Object) -> None:
            try:
                for request in watch.mapper(obj):
                    queue.add(request)
            except Exception:
                self._log.exception("mapping an event to requests failed")

        def on_add(obj: Object, _initial: bool) -> None:
            if all(p.create(obj) for p in predicates):
                enqueue(obj)

        def on_update(old: Object, new: Object) -> None:
            if all(p.update(old, new) for p in predicates):
                enqueue(new)
                if watch.map_old_on_update and old is not new:
                    enqueue(old)  # e.g. a re-parented child still wakes its former owner

        def on_delete(obj: Object, _final_state_unknown: bool) -> None:
            if all(p.delete(obj) for p in predicates):
                enqueue(obj)

        return EventHandlerFuncs(on_add, on_update, on_delete)

    def enqueue(self, request: Request, after: float | None = None) -> None:
        """Trigger a reconcile from outside the watches (e.g. a timer or an external system)."""
        if after:
            self.queue.add_after(request, after)
        else:
            self.queue.add(request)

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, *, workers: int | None = None) -> None:
        """Register the event handlers, wait for the sources to sync, start the workers.

        `workers` defaults to max_concurrent_reconciles; 0 starts none, for callers (tests) that
        drive the queue themselves with `process_next_item`.
        """
        with self._lock:
            if self._started:
                return
            self._started = True
            watches = list(self._watches)
        for watch in watches:
            registration = watch.source.add_event_handler(self._handler_for(watch))
            self._registrations.append((watch.source, registration))
        deadline = time.monotonic() + self.cache_sync_timeout
        while not all(watch.source.has_synced() for watch in watches):
            if time.monotonic() >= deadline or self.queue.shutting_down:
                raise CacheSyncTimeoutError(f"controller {self.name}: caches did not sync")
            time.sleep(0.1)  # client-go's WaitForCacheSync poll interval
        count = self.max_concurrent_reconciles if workers is None else workers
        for index in range(count):
            worker = threading.Thread(target=self._worker, name=f"{self.name}-worker-{index}", daemon=True)
            self._workers.append(worker)
            worker.start()
        self._log.info("controller started", workers=count)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop taking work; wait up to `timeout` (real seconds) for in-flight reconciles.

        Returns False if reconciles were still running at the deadline (workers are daemon threads,
        so they do not keep the process alive).
        """
        for source, registration in self._registrations:
            source.remove_event_handler(registration)
        self._registrations.clear()
        if timeout is not None and timeout <= 0:
            self.queue.shutdown()
            return not self.queue.processing()
        drained = self.queue.shutdown_with_drain(timeout)
        for worker in self._workers:
            worker.join(0.5 if not drained else timeout)
        return drained

    @property
    def started(self) -> bool:
        return self._started

    # --- workers ---------------------------------------------------------------------------------
    def _worker(self) -> None:
        while self.process_next_item():
            pass

    def process_next_item(self, timeout: float | None = None) -> bool:
        """Take one request from the queue and reconcile it; False on shutdown or timeout."""
        request = self.queue.get(timeout)
        if request is None:
            return False
        try:
            self._reconcile_request(request)
        finally:
            self.queue.done(request)
        return True

    def _reconcile_request(self, request: Request) -> None:
        name = self.name
        active_workers = metrics.ACTIVE_WORKERS.labels(controller=name)
        active_workers.inc()
        started = time.perf_counter()
        outcome = "error"
        with structlog.contextvars.bound_contextvars(
            controller=name,
            namespace=request.namespace,
            name=request.name,
            reconcile_id=str(uuid.uuid4()),
        ):
            try:
                result = self._reconcile(request) or Result()
            except TerminalError as error:
                self.queue.forget(request)
                metrics.RECONCILE_ERRORS.labels(controller=name).inc()
                metrics.TERMINAL_RECONCILE_ERRORS.labels(controller=name).inc()
                log.error("reconcile failed permanently", error=str(error))
            except Conflict as error:
                # Routine with optimistic locking: retry with a fresh read, no stack trace.
                self.queue.add_rate_limited(request)
                metrics.RECONCILE_ERRORS.labels(controller=name).inc()
                log.info("reconcile hit a conflict, requeued", error=str(error))
            except (ReconcileError, ApiError) as error:
                self.queue.add_rate_limited(request)
                metrics.RECONCILE_ERRORS.labels(controller=name).inc()
                log.warning("reconcile failed, requeued", error=str(error))
            except Exception:
                self.queue.add_rate_limited(request)
                metrics.RECONCILE_ERRORS.labels(controller=name).inc()
                metrics.RECONCILE_PANICS.labels(controller=name).inc()
                log.exception("reconcile raised an unexpected exception, requeued")
            else:
                if result.requeue_after is not None and result.requeue_after > 0:
                    self.queue.forget(request)
                    self.queue.add_after(request, result.requeue_after)
                    outcome = "requeue_after"
                elif result.requeue:
                    self.queue.add_rate_limited(request)
                    outcome = "requeue"
                else:
                    self.queue.forget(request)
                    outcome = "success"
            finally:
                metrics.RECONCILE_RESULTS.labels(controller=name, result=outcome).inc()
                metrics.RECONCILE_TIME.labels(controller=name).observe(time.perf_counter() - started)
                active_workers.dec()
