"""Controller result handling, predicates, owner/mapped watches, workers and metrics — no API."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from registry_operator.kube import metrics
from registry_operator.kube.cache import Store, label_index
from registry_operator.kube.clock import FakeClock
from registry_operator.kube.controller import (
    CacheSyncTimeoutError,
    Controller,
    GenerationChangedPredicate,
    ReconcileError,
    Request,
    ResourceVersionChangedPredicate,
    Result,
    TerminalError,
    all_of,
    index_mapper,
    label_selector_predicate,
    negate,
    owner_mapper,
)
from registry_operator.kube.errors import Conflict, NotFound
from registry_operator.kube.informer import EventHandlerFuncs
from registry_operator.kube.resources import NAMESPACES, Resource

_names = itertools.count()
WIDGETS = Resource("example.com", "v1", "widgets", "Widget")


class InMemorySource:
    """An event source without an API: the test pushes add/update/delete events."""

    def __init__(self, synced: bool = True) -> None:
        self.handlers: list[EventHandlerFuncs] = []
        self.synced = synced

    def add_event_handler(self, handler: EventHandlerFuncs) -> EventHandlerFuncs:
        self.handlers.append(handler)
        return handler

    def remove_event_handler(self, registration: Any) -> None:
        self.handlers.remove(registration)

    def has_synced(self) -> bool:
        return self.synced

    def add(self, obj: dict[str, Any]) -> None:
        for handler in self.handlers:
            handler.on_add(obj, False)

    def update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        for handler in self.handlers:
            handler.on_update(old, new)

    def delete(self, obj: dict[str, Any]) -> None:
        for handler in self.handlers:
            handler.on_delete(obj, False)


def obj(
    name: str,
    namespace: str = "ns",
    *,
    generation: int = 1,
    rv: str = "1",
    labels: dict[str, str] | None = None,
    owners: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "generation": generation,
        "resourceVersion": rv,
        "labels": labels or {},
    }
    if owners:
        metadata["ownerReferences"] = owners
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": metadata}


def controller_with(
    reconcile: Callable[[Request], Result | None], clock: FakeClock | None = None, **kwargs: Any
) -> tuple[Controller, InMemorySource, FakeClock]:
    clock = clock or FakeClock()
    controller = Controller(f"test-controller-{next(_names)}", reconcile, clock=clock, **kwargs)
    source = InMemorySource()
    controller.watch_for(source)
    return controller, source, clock


def counter(controller: Controller, name: str, **labels: str) -> float:
    return metrics.sample_value(name, {"controller": controller.name, **labels})


def queued(controller: Controller) -> list[Request]:
    items = []
    while (item := controller.queue.get(0)) is not None:
        items.append(item)
        controller.queue.done(item)
    return items


# --- results ----------------------------------------------------------------------------------------
def test_metrics_are_preinitialised_to_zero() -> None:
    controller, _, _ = controller_with(lambda r: None, max_concurrent_reconciles=3)
    for result in ("success", "error", "requeue", "requeue_after"):
        value = metrics.REGISTRY.get_sample_value(
            "controller_runtime_reconcile_total", {"controller": controller.name, "result": result}
        )
        assert value == 0.0
    for name in (
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_terminal_reconcile_errors_total",
        "controller_runtime_reconcile_panics_total",
        "controller_runtime_reconcile_timeouts_total",
        "controller_runtime_active_workers",
        "controller_runtime_reconcile_time_seconds_count",
    ):
        assert metrics.REGISTRY.get_sample_value(name, {"controller": controller.name}) == 0.0, name
    assert counter(controller, "controller_runtime_max_concurrent_reconciles") == 3
    labels = {"name": controller.name, "controller": controller.name}
    assert metrics.REGISTRY.get_sample_value("workqueue_depth", {**labels, "priority": ""}) == 0.0


def test_success_forgets_the_item() -> None:
    controller, source, _ = controller_with(lambda r: Result())
    controller.start(workers=0)
    controller.queue.add_rate_limited(Request("ns", "a"))  # pretend it failed before
    source.add(obj("a"))
    assert controller.process_next_item(0)
    assert controller.queue.num_requeues(Request("ns", "a")) == 0
    assert counter(controller, "controller_runtime_reconcile_total", result="success") == 1
    assert counter(controller, "controller_runtime_reconcile_time_seconds_count") == 1


def test_error_requeues_with_growing_backoff() -> None:
    def fail(request: Request) -> Result:
        raise ReconcileError("registry not reachable")

    controller, source, clock = controller_with(fail)
    controller.start(workers=0)
    source.add(obj("a"))
    request = Request("ns", "a")
    assert controller.process_next_item(0)
    assert controller.queue.num_requeues(request) == 1
    assert controller.queue.next_ready_in() == pytest.approx(0.005)
    assert controller.process_next_item(0) is False, "not before the backoff expired"
    clock.step(0.005)
    assert controller.process_next_item(0)
    assert controller.queue.next_ready_in() == pytest.approx(0.01)
    assert counter(controller, "controller_runtime_reconcile_total", result="error") == 2
    assert counter(controller, "controller_runtime_reconcile_errors_total") == 2
    assert counter(controller, "controller_runtime_reconcile_panics_total") == 0


def test_api_errors_and_conflicts_are_errors_not_panics() -> None:
    errors = iter([Conflict(409, "Conflict", "modified"), NotFound(404, "NotFound", "gone")])

    def fail(request: Request) -> Result:
        raise next(errors)

    controller, source, clock = controller_with(fail)
    controller.start(workers=0)
    source.add(obj("a"))
    controller.process_next_item(0)
    clock.step(1)
    controller.process_next_item(0)
    assert counter(controller, "controller_runtime_reconcile_errors_total") == 2
    assert counter(controller, "controller_runtime_reconcile_panics_total") == 0
    assert controller.queue.num_requeues(Request("ns", "a")) == 2


def test_unexpected_exception_is_recovered_counted_as_panic_and_requeued() -> None:
    def buggy(request: Request) -> Result:
        raise KeyError("spec")

    controller, source, _ = controller_with(buggy)
    controller.start(workers=0)
    source.add(obj("a"))
    assert controller.process_next_item(0)
    assert counter(controller, "controller_runtime_reconcile_panics_total") == 1
    assert counter(controller, "controller_runtime_reconcile_errors_total") == 1
    assert counter(controller, "controller_runtime_reconcile_total", result="error") == 1
    assert controller.queue.num_requeues(Request("ns", "a")) == 1
    assert counter(controller, "controller_runtime_active_workers") == 0


def test_terminal_error_is_not_retried() -> None:
    def hopeless(request: Request) -> Result:
        raise TerminalError("spec.hostname is taken by another registry")

    controller, source, clock = controller_with(hopeless)
    controller.start(workers=0)
    source.add(obj("a"))
    controller.process_next_item(0)
    clock.step(10_000)
    assert controller.process_next_item(0) is False
    assert counter(controller, "controller_runtime_terminal_reconcile_errors_total") == 1
    assert counter(controller, "controller_runtime_reconcile_errors_total") == 1


def test_requeue_after_schedules_exactly_that_delay_and_resets_backoff() -> None:
    controller, source, clock = controller_with(lambda r: Result(requeue_after=42.0))
    controller.start(workers=0)
    request = Request("ns", "a")
    controller.queue.add_rate_limited(request)
    controller.queue.add_rate_limited(request)
    source.add(obj("a"))
    assert controller.process_next_item(0)
    assert controller.queue.num_requeues(request) == 0
    assert controller.queue.next_ready_in() == pytest.approx(0.005), "the earlier backoff add stays"
    clock.step(0.005)
    assert controller.process_next_item(0)
    assert controller.queue.next_ready_in() == pytest.approx(42.0)
    clock.step(41.9)
    assert controller.process_next_item(0) is False
    clock.step(0.2)
    assert controller.process_next_item(0)
    assert counter(controller, "controller_runtime_reconcile_total", result="requeue_after") == 3


def test_requeue_true_is_rate_limited() -> None:
    controller, source, _ = controller_with(lambda r: Result(requeue=True))
    controller.start(workers=0)
    source.add(obj("a"))
    controller.process_next_item(0)
    assert controller.queue.num_requeues(Request("ns", "a")) == 1
    assert counter(controller, "controller_runtime_reconcile_total", result="requeue") == 1


def test_reconcile_runs_with_structured_log_context() -> None:
    seen: list[dict[str, Any]] = []

    def capture(request: Request) -> None:
        seen.append(structlog.contextvars.get_contextvars())

    controller, source, _ = controller_with(capture)
    controller.start(workers=0)
    source.add(obj("a", "team"))
    source.add(obj("b", "team"))
    controller.process_next_item(0)
    controller.process_next_item(0)
    assert [(c["controller"], c["namespace"], c["name"]) for c in seen] == [
        (controller.name, "team", "a"),
        (controller.name, "team", "b"),
    ]
    assert seen[0]["reconcile_id"] != seen[1]["reconcile_id"]
    assert structlog.contextvars.get_contextvars() == {}, "context must not leak out of a reconcile"


def test_reconciler_object_with_reconcile_method() -> None:
    class Reconciler:
        def __init__(self) -> None:
            self.requests: list[Request] = []

        def reconcile(self, request: Request) -> Result:
            self.requests.append(request)
            return Result()

    reconciler = Reconciler()
    controller = Controller(f"test-controller-{next(_names)}", reconciler, clock=FakeClock())
    controller.enqueue(Request("", "cluster-scoped"))
    controller.process_next_item(0)
    assert reconciler.requests == [Request("", "cluster-scoped")]


# --- watches and predicates -------------------------------------------------------------------------
def test_handlers_are_registered_only_on_start_and_removed_on_stop() -> None:
    controller, source, _ = controller_with(lambda r: None)
    source.add(obj("before-start"))
    assert len(controller.queue) == 0
    controller.start(workers=0)
    source.add(obj("after-start"))
    assert queued(controller) == [Request("ns", "after-start")]
    controller.stop(timeout=1)
    assert source.handlers == []


def test_generation_changed_predicate_filters_status_and_resync_updates() -> None:
    controller = Controller(f"test-controller-{next(_names)}", lambda r: None, clock=FakeClock())
    source = InMemorySource()
    controller.watch_for(source, GenerationChangedPredicate())
    controller.start(workers=0)
    old = obj("a", generation=1, rv="1")
    source.update(old, obj("a", generation=1, rv="2"))  # status write
    source.update(old, old)  # resync
    assert queued(controller) == []
    source.update(old, obj("a", generation=2, rv="3"))
    source.delete(old)
    assert queued(controller) == [Request("ns", "a")]


def test_label_and_composed_predicates() -> None:
    controller = Controller(f"test-controller-{next(_names)}", lambda r: None, clock=FakeClock())
    source = InMemorySource()
    managed = label_selector_predicate({"app": "registry"})
    controller.watch_for(source, all_of(managed, negate(label_selector_predicate({"skip": "true"}))))
    controller.start(workers=0)
    source.add(obj("plain"))
    source.add(obj("managed", labels={"app": "registry"}))
    source.add(obj("skipped", labels={"app": "registry", "skip": "true"}))
    assert queued(controller) == [Request("ns", "managed")]


def test_resource_version_changed_predicate() -> None:
    predicate = ResourceVersionChangedPredicate()
    assert predicate.update(obj("a", rv="1"), obj("a", rv="2"))
    assert not predicate.update(obj("a", rv="1"), obj("a", rv="1"))


def test_owned_watch_enqueues_the_controller_owner_of_the_right_kind() -> None:
    controller = Controller(f"test-controller-{next(_names)}", lambda r: None, clock=FakeClock())
    children = InMemorySource()
    controller.watch_owned(children, WIDGETS)
    controller.start(workers=0)

    def child(name: str, api_version: str, owner: str, controller: bool = True) -> dict[str, Any]:
        ref = {"apiVersion": api_version, "kind": "Widget", "name": owner, "uid": owner}
        return obj(name, owners=[{**ref, "controller": controller}])

    children.add(child("c1", "example.com/v1", "w1"))
    children.add(child("c2", "example.com/v1", "w2", controller=False))
    children.add(child("c3", "other.com/v1", "w3"))  # another group
    children.add(child("c4", "example.com/v2", "w4"))  # another version of the owner kind: matches
    assert queued(controller) == [Request("ns", "w1"), Request("ns", "w4")]


def test_owned_watch_enqueues_old_and_new_owner_on_reparenting() -> None:
    mapper = owner_mapper(WIDGETS)
    controller = Controller(f"test-controller-{next(_names)}", lambda r: None, clock=FakeClock())
    children = InMemorySource()
    controller.watch_owned(children, WIDGETS)
    controller.start(workers=0)
    ref = {"apiVersion": "example.com/v1", "kind": "Widget", "uid": "1", "controller": True}
    old = obj("child", owners=[{**ref, "name": "old-owner"}])
    new = obj("child", owners=[{**ref, "name": "new-owner"}])
    assert list(mapper(old)) == [Request("ns", "old-owner")]
    children.update(old, new)
    assert sorted(queued(controller)) == [Request("ns", "new-owner"), Request("ns", "old-owner")]


def test_owner_mapper_for_cluster_scoped_owner_and_any_owner() -> None:
    refs = [{"apiVersion": "v1", "kind": "Namespace", "name": "team", "uid": "1"}]
    assert list(owner_mapper(NAMESPACES)(obj("x", owners=refs))) == []
    assert list(owner_mapper(NAMESPACES, only_controller=False)(obj("x", owners=refs))) == [
        Request("", "team")
    ]


def test_mapped_watch_via_a_cache_index() -> None:
    widgets = Store({"by-secret": label_index("secret")})
    widgets.upsert(obj("w1", labels={"secret": "creds"}))
    widgets.upsert(obj("w2", labels={"secret": "creds"}))
    widgets.upsert(obj("w3", labels={"secret": "other"}))
    controller = Controller(f"test-controller-{next(_names)}", lambda r: None, clock=FakeClock())
    secrets = InMemorySource()
    controller.watch_mapped(secrets, index_mapper(widgets, "by-secret", lambda s: s["metadata"]["name"]))
    controller.start(workers=0)
    secrets.add(obj("creds"))
    assert sorted(queued(controller)) == [Request("ns", "w1"), Request("ns", "w2")]


def test_a_failing_mapper_does_not_break_the_event_handler() -> None:
    def broken(_: dict[str, Any]) -> list[Request]:
        raise ValueError("bad object")

    controller = Controller(f"test-controller-{next(_names)}", lambda r: None, clock=FakeClock())
    source = InMemorySource()
    controller.watch_mapped(source, broken)
    controller.watch_for(source)
    controller.start(workers=0)
    source.add(obj("a"))
    assert queued(controller) == [Request("ns", "a")]


def test_start_fails_when_caches_do_not_sync() -> None:
    controller = Controller(
        f"test-controller-{next(_names)}", lambda r: None, clock=FakeClock(), cache_sync_timeout=0
    )
    controller.watch_for(InMemorySource(synced=False))
    with pytest.raises(CacheSyncTimeoutError):
        controller.start(workers=0)


def test_watches_cannot_be_added_after_start() -> None:
    controller, _, _ = controller_with(lambda r: None)
    controller.start(workers=0)
    with pytest.raises(RuntimeError):
        controller.watch_for(InMemorySource())


# --- workers ----------------------------------------------------------------------------------------
def test_workers_reconcile_everything_never_one_object_twice_at_once_and_drain_on_stop() -> None:
    lock = threading.Lock()
    active: dict[Request, int] = {}
    overlaps: list[Request] = []
    done: dict[Request, int] = {}
    all_done = threading.Event()
    total = 40

    def reconcile(request: Request) -> None:
        with lock:
            active[request] = active.get(request, 0) + 1
            if active[request] > 1:
                overlaps.append(request)
        threading.Event().wait(0.001)
        with lock:
            active[request] -= 1
            done[request] = done.get(request, 0) + 1
            if len(done) == total:
                all_done.set()

    controller = Controller(f"test-controller-{next(_names)}", reconcile, max_concurrent_reconciles=4)
    source = InMemorySource()
    controller.watch_for(source)
    controller.start()
    for round_ in range(3):
        for i in range(total):
            source.update(obj(f"o{i}", rv=str(round_)), obj(f"o{i}", rv=str(round_ + 1)))
    assert all_done.wait(10)
    assert controller.stop(timeout=10)
    assert overlaps == []
    assert set(done) == {Request("ns", f"o{i}") for i in range(total)}
    assert counter(controller, "controller_runtime_active_workers") == 0
