"""Reflector and informer semantics against an in-memory API (resourceVersions, 410, relist, resync)."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client import Configuration

from registry_operator.kube.client import Client
from registry_operator.kube.clock import FakeClock
from registry_operator.kube.errors import ConnectionFailed, Gone, ServerError
from registry_operator.kube.factory import SharedInformerFactory
from registry_operator.kube.informer import EventHandlerFuncs, SharedInformer
from registry_operator.kube.reflector import ClientListerWatcher, ExponentialBackoff
from registry_operator.kube.resources import CONFIGMAPS, NAMESPACES
from registry_operator.kube.transforms import (
    DEFAULT_TRANSFORM,
    LAST_APPLIED_ANNOTATION,
    strip_managed_fields,
    strip_managed_fields_and_last_applied,
)
from registry_operator.kube.watch import WatchEvent


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        threading.Event().wait(0.002)


class FakeApi:
    """One collection with a global resourceVersion and an event log, like an API server."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.rv = 100
        self.objects: dict[str, dict[str, Any]] = {}
        self.log: list[tuple[int, str, dict[str, Any]]] = []
        self.compacted_below = 0
        self.list_calls: list[tuple[str, int | None]] = []
        self.watch_calls: list[str] = []
        self.fail_lists_at: set[str] = set()
        self.unreachable = False
        self.generation = 0  # bumped to end (cleanly) or break every open stream
        self.break_with: Exception | None = None

    def _write(self, event_type: str, obj: dict[str, Any]) -> None:
        with self.cond:
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            name = obj["metadata"]["name"]
            if event_type == "DELETED":
                self.objects.pop(name, None)
            else:
                self.objects[name] = obj
            self.log.append((self.rv, event_type, copy.deepcopy(obj)))
            self.cond.notify_all()

    def put(self, name: str, value: str = "") -> None:
        obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "ns"},
            "data": {"v": value},
        }
        self._write("MODIFIED" if name in self.objects else "ADDED", obj)

    def remove(self, name: str) -> None:
        self._write("DELETED", copy.deepcopy(self.objects[name]))

    def bookmark(self) -> None:
        with self.cond:
            self.rv += 1
            self.log.append((self.rv, "BOOKMARK", {"metadata": {"resourceVersion": str(self.rv)}}))
            self.cond.notify_all()

    def compact(self) -> None:
        with self.cond:
            self.compacted_below = self.rv  # watching from the current RV still works

    def end_streams(self, error: Exception | None = None) -> None:
        with self.cond:
            self.break_with = error
            self.generation += 1
            self.cond.notify_all()

    # --- ListerWatcher ---------------------------------------------------------------------------
    def list(self, resource_version: str, page_size: int | None) -> dict[str, Any]:
        with self.cond:
            self.list_calls.append((resource_version, page_size))
            if resource_version in self.fail_lists_at:
                raise Gone(410, "Expired", "too old resource version")
            if self.unreachable:
                raise ConnectionFailed("refused")
            return {
                "metadata": {"resourceVersion": str(self.rv)},
                "items": [copy.deepcopy(o) for o in self.objects.values()],
            }

    def watch(self, resource_version: str, timeout_seconds: int, read_timeout: float) -> FakeStream:
        with self.cond:
            self.watch_calls.append(resource_version)
            if self.unreachable:
                raise ConnectionFailed("refused")
            if int(resource_version) < self.compacted_below:
                raise Gone(410, "Expired", f"too old resource version: {resource_version}")
            return FakeStream(self, int(resource_version), self.generation)


class FakeStream:
    def __init__(self, api: FakeApi, after: int, generation: int) -> None:
        self.api = api
        self.after = after
        self.generation = generation
        self.closed = False

    def close(self) -> None:
        with self.api.cond:
            self.closed = True
            self.api.cond.notify_all()

    def __iter__(self) -> Iterator[WatchEvent]:
        api = self.api
        while True:
            with api.cond:
                while True:
                    if self.closed:
                        return
                    if api.generation != self.generation:
                        if api.break_with is not None:
                            raise api.break_with
                        return
                    pending = [entry for entry in api.log if entry[0] > self.after]
                    if pending:
                        break
                    api.cond.wait()
                rv, event_type, obj = pending[0]
                self.after = rv
            yield WatchEvent(event_type, copy.deepcopy(obj))


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[Any, ...]] = []

    def handler(self) -> EventHandlerFuncs:
        def add(obj: dict[str, Any], initial: bool) -> None:
            with self.lock:
                self.events.append(("add", obj["metadata"]["name"], initial))

        def update(old: dict[str, Any], new: dict[str, Any]) -> None:
            with self.lock:
                self.events.append(("update", new["metadata"]["name"], old is new))

        def delete(obj: dict[str, Any], unknown: bool) -> None:
            with self.lock:
                self.events.append(("delete", obj["metadata"]["name"], unknown))

        return EventHandlerFuncs(add, update, delete)

    def snapshot(self) -> list[tuple[Any, ...]]:
        with self.lock:
            return list(self.events)


def fast_backoff() -> ExponentialBackoff:
    return ExponentialBackoff(initial=0.001, cap=0.004, jitter=0.0)


@pytest.fixture
def api() -> FakeApi:
    fake = FakeApi()
    for name in ("a", "b", "c"):
        fake.put(name)
    fake.put("scratch")
    fake.remove("scratch")  # the collection's RV is now newer than every item's RV
    return fake


@pytest.fixture
def informer(api: FakeApi) -> Iterator[SharedInformer]:
    shared = SharedInformer(api, name="test", backoff=fast_backoff())
    yield shared
    shared.stop()


def test_initial_list_uses_rv_0_then_watches_from_the_lists_resource_version(
    api: FakeApi, informer: SharedInformer
) -> None:
    recorder = Recorder()
    informer.add_event_handler(recorder.handler())
    informer.start()
    assert informer.wait_for_sync(5)
    eventually(lambda: len(api.watch_calls) == 1)
    assert api.list_calls == [("0", 500)], "the initial list is paged (client-go's pager default)"
    list_rv = str(api.rv)
    assert api.watch_calls == [list_rv]
    item_rvs = {o["metadata"]["resourceVersion"] for o in informer.store.list()}
    assert list_rv not in item_rvs
    assert sorted(informer.store.keys()) == ["ns/a", "ns/b", "ns/c"]
    eventually(lambda: len(recorder.snapshot()) == 3)
    assert sorted(recorder.snapshot()) == [("add", n, True) for n in "abc"]


def test_watch_events_update_store_and_handlers_in_order(api: FakeApi, informer: SharedInformer) -> None:
    recorder = Recorder()
    informer.add_event_handler(recorder.handler())
    informer.start()
    informer.wait_for_sync(5)
    eventually(lambda: len(api.watch_calls) == 1)
    api.put("d", "1")
    api.put("a", "2")
    api.remove("b")
    eventually(lambda: len(recorder.snapshot()) == 6)
    assert recorder.snapshot()[3:] == [("add", "d", False), ("update", "a", False), ("delete", "b", False)]
    assert sorted(informer.store.keys()) == ["ns/a", "ns/c", "ns/d"]
    a = informer.store.get("ns/a")
    assert a is not None and a["data"] == {"v": "2"}
    assert informer.reflector.last_sync_resource_version == str(api.rv)


def test_clean_close_rewatches_from_last_rv_without_relisting(api: FakeApi, informer: SharedInformer) -> None:
    informer.start()
    informer.wait_for_sync(5)
    eventually(lambda: len(api.watch_calls) == 1)
    api.put("a", "x")
    eventually(lambda: informer.reflector.last_sync_resource_version == str(api.rv))
    api.end_streams()
    eventually(lambda: len(api.watch_calls) == 2)
    assert api.watch_calls[1] == str(api.rv)
    assert len(api.list_calls) == 1
    assert informer.reflector.stats.lists == 1


def test_bookmark_advances_the_resume_point_without_events(api: FakeApi, informer: SharedInformer) -> None:
    recorder = Recorder()
    informer.add_event_handler(recorder.handler())
    informer.start()
    informer.wait_for_sync(5)
    eventually(lambda: len(api.watch_calls) == 1)
    api.bookmark()
    eventually(lambda: informer.reflector.last_sync_resource_version == str(api.rv))
    api.end_streams()
    eventually(lambda: len(api.watch_calls) == 2)
    assert api.watch_calls[1] == str(api.rv)
    assert informer.reflector.stats.bookmarks == 1
    assert len(recorder.snapshot()) == 3  # only the initial adds


def test_too_old_resource_version_relists_and_infers_deletions(
    api: FakeApi, informer: SharedInformer
) -> None:
    recorder = Recorder()
    informer.add_event_handler(recorder.handler())
    informer.start()
    informer.wait_for_sync(5)
    eventually(lambda: len(api.watch_calls) == 1)
    synced_rv = informer.reflector.last_sync_resource_version
    # Disconnect, change things the informer cannot see, compact the history, reconnect.
    api.unreachable = True
    api.end_streams(ConnectionFailed("connection reset"))
    eventually(lambda: len(api.watch_calls) >= 2)
    api.put("a", "changed")
    api.remove("b")
    api.put("d")
    api.compact()
    api.unreachable = False
    eventually(lambda: informer.reflector.stats.lists == 2)
    eventually(lambda: len(recorder.snapshot()) == 7)
    assert informer.reflector.stats.expired == 1
    assert api.list_calls[1] == (synced_rv, None), "a relist asks for 'not older than' the last RV, unpaged"
    assert sorted(recorder.snapshot()[3:]) == [
        ("add", "d", False),
        ("delete", "b", True),  # final state unknown: the deletion was only inferred from the relist
        ("update", "a", False),
        ("update", "c", False),  # a relist replays unchanged objects as updates, like client-go
    ]
    a = informer.store.get("ns/a")
    assert a is not None and a["data"] == {"v": "changed"}
    assert sorted(informer.store.keys()) == ["ns/a", "ns/c", "ns/d"]
    eventually(lambda: len(api.watch_calls) >= 3 and api.watch_calls[-1] == str(api.rv))


def test_expired_list_falls_back_to_a_consistent_read(api: FakeApi) -> None:
    api.fail_lists_at = {"0"}
    informer = SharedInformer(api, name="fallback", backoff=fast_backoff(), page_size=250)
    try:
        informer.start()
        assert informer.wait_for_sync(5)
        assert api.list_calls == [("0", 250), ("", 250)]
        assert informer.reflector.stats.list_fallbacks == 1
    finally:
        informer.stop()


def test_error_event_in_the_stream_relists_after_backoff(api: FakeApi, informer: SharedInformer) -> None:
    informer.start()
    informer.wait_for_sync(5)
    eventually(lambda: len(api.watch_calls) == 1)
    api.end_streams(ServerError(500, "InternalError", "etcd hiccup"))
    eventually(lambda: informer.reflector.stats.lists == 2)
    assert informer.reflector.stats.errors >= 1


def test_unreachable_api_keeps_the_cache_and_retries_the_watch(
    api: FakeApi, informer: SharedInformer
) -> None:
    informer.start()
    informer.wait_for_sync(5)
    eventually(lambda: len(api.watch_calls) == 1)
    api.unreachable = True
    api.end_streams(ConnectionFailed("reset"))
    eventually(lambda: len(api.watch_calls) >= 4)
    assert len(api.list_calls) == 1, "connection failures must not force a relist"
    assert len(informer.store) == 3
    api.unreachable = False
    api.put("e")
    eventually(lambda: "ns/e" in informer.store)


def test_resync_replays_the_cache_without_api_calls(api: FakeApi, informer: SharedInformer) -> None:
    recorder = Recorder()
    informer.add_event_handler(recorder.handler())
    informer.start()
    informer.wait_for_sync(5)
    eventually(lambda: len(api.watch_calls) == 1)
    calls = (len(api.list_calls), len(api.watch_calls))
    assert informer.resync() == 3
    eventually(lambda: len(recorder.snapshot()) == 6)
    assert sorted(recorder.snapshot()[3:]) == [("update", n, True) for n in "abc"]
    assert (len(api.list_calls), len(api.watch_calls)) == calls


def test_periodic_resync_follows_the_clock(api: FakeApi) -> None:
    clock = FakeClock()
    informer = SharedInformer(api, name="periodic", resync_period=60, clock=clock, backoff=fast_backoff())
    recorder = Recorder()
    informer.add_event_handler(recorder.handler())
    try:
        informer.start()
        informer.wait_for_sync(5)
        eventually(lambda: len(recorder.snapshot()) == 3)
        clock.step(66.1)  # period plus the maximum 10% jitter
        eventually(lambda: len(recorder.snapshot()) == 6)
        assert {e[0] for e in recorder.snapshot()[3:]} == {"update"}
    finally:
        informer.stop()


def test_late_handler_gets_the_cache_as_initial_adds(api: FakeApi, informer: SharedInformer) -> None:
    informer.start()
    informer.wait_for_sync(5)
    recorder = Recorder()
    registration = informer.add_event_handler(recorder.handler())
    eventually(registration.has_synced)
    assert sorted(recorder.snapshot()) == [("add", n, True) for n in "abc"]


def test_a_failing_handler_neither_stops_delivery_nor_other_handlers(
    api: FakeApi, informer: SharedInformer
) -> None:
    def explode(obj: dict[str, Any], initial: bool) -> None:
        raise RuntimeError("handler bug")

    informer.add_event_handler(EventHandlerFuncs(add=explode))
    recorder = Recorder()
    informer.add_event_handler(recorder.handler())
    informer.start()
    informer.wait_for_sync(5)
    eventually(lambda: len(api.watch_calls) == 1)
    api.put("z")
    eventually(lambda: ("add", "z", False) in recorder.snapshot())


def test_removed_handler_gets_nothing_more(api: FakeApi, informer: SharedInformer) -> None:
    recorder = Recorder()
    registration = informer.add_event_handler(recorder.handler())
    informer.start()
    informer.wait_for_sync(5)
    eventually(lambda: len(recorder.snapshot()) == 3)
    informer.remove_event_handler(registration)
    api.put("late")
    eventually(lambda: "ns/late" in informer.store)
    assert len(recorder.snapshot()) == 3


# --- backoff ----------------------------------------------------------------------------------------
def test_backoff_doubles_from_800ms_caps_at_30s_and_resets_after_two_quiet_minutes() -> None:
    clock = FakeClock()
    no_jitter = ExponentialBackoff(clock=clock, rand=lambda: 0.0)
    delays = [no_jitter.next_delay() for _ in range(8)]
    assert delays == pytest.approx([0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0])
    clock.step(120.1)
    assert no_jitter.next_delay() == pytest.approx(0.8)
    full_jitter = ExponentialBackoff(clock=clock, rand=lambda: 1.0)
    assert full_jitter.next_delay() == pytest.approx(1.6)  # jitter 1.0 doubles at most
    for _ in range(10):
        assert full_jitter.next_delay() <= 30.0


# --- scoping and sharing ----------------------------------------------------------------------------
def test_factory_shares_one_informer_per_resource_namespace_and_selectors() -> None:
    factory = SharedInformerFactory(Client(Configuration(host="http://127.0.0.1:1")))
    first = factory.informer(CONFIGMAPS, namespace="ns", label_selector={"b": "2", "a": "1"})
    assert factory.informer(CONFIGMAPS, namespace="ns", label_selector="a=1,b=2") is first
    assert factory.informer(CONFIGMAPS, namespace="other", label_selector="a=1,b=2") is not first
    assert factory.informer(CONFIGMAPS, namespace="ns") is not first
    assert factory.informer(CONFIGMAPS, namespace="ns", field_selector="metadata.name=x") is not first
    assert factory.informer(NAMESPACES, namespace="ignored") is factory.informer(NAMESPACES)
    assert len(factory.informers()) == 5


def test_client_lister_watcher_passes_scope_to_list_and_watch() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    class StubClient:
        def list(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            calls.append(("list", {"args": args, **kwargs}))
            return {"metadata": {"resourceVersion": "1"}, "items": []}

        def watch(self, *args: Any, **kwargs: Any) -> Any:
            calls.append(("watch", {"args": args, **kwargs}))
            return iter(())

    lw = ClientListerWatcher(StubClient(), CONFIGMAPS, "ns", "app=web", "metadata.name=x")  # type: ignore[arg-type]
    lw.list("0", None)
    lw.watch("5", 321, 351.0)
    (_, list_call), (_, watch_call) = calls
    assert list_call["args"] == (CONFIGMAPS, "ns")
    assert list_call["label_selector"] == "app=web" and list_call["field_selector"] == "metadata.name=x"
    assert list_call["resource_version"] == "0"
    assert watch_call["resource_version"] == "5"
    assert watch_call["timeout_seconds"] == 321 and watch_call["read_timeout"] == 351.0
    assert watch_call["allow_bookmarks"] is True
    assert watch_call["label_selector"] == "app=web"


def test_equal_label_selectors_share_one_informer_whatever_the_term_order() -> None:
    factory = SharedInformerFactory(Client(Configuration(host="http://127.0.0.1:1")))
    first = factory.informer(CONFIGMAPS, label_selector="b=2, a=1")
    assert factory.informer(CONFIGMAPS, label_selector="a=1,b=2") is first
    # Set-based terms carry commas of their own: such a selector is kept as written.
    assert factory.informer(CONFIGMAPS, label_selector="a in (1,2)") is not first


# --- transforms -------------------------------------------------------------------------------------
def bulky(name: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:data": {}}}],
            "annotations": {LAST_APPLIED_ANNOTATION: '{"data": {}}', "team": "a"},
        },
        "data": {"v": "1"},
    }


def test_default_transform_drops_managed_fields_and_the_last_applied_annotation() -> None:
    stripped = strip_managed_fields_and_last_applied(bulky("a"))
    assert stripped["metadata"] == {"name": "a", "namespace": "ns", "annotations": {"team": "a"}}
    only_last_applied = bulky("b")
    del only_last_applied["metadata"]["annotations"]["team"]
    assert "annotations" not in strip_managed_fields_and_last_applied(only_last_applied)["metadata"]
    kept = strip_managed_fields(bulky("c"))
    assert "managedFields" not in kept["metadata"]
    assert LAST_APPLIED_ANNOTATION in kept["metadata"]["annotations"]


def test_transform_applies_to_listed_watched_and_deleted_objects() -> None:
    informer = SharedInformer(FakeApi(), name="t", transform=strip_managed_fields_and_last_applied)
    seen: list[dict[str, Any]] = []
    informer.add_event_handler(
        EventHandlerFuncs(
            lambda o, _i: seen.append(o), lambda _o, n: seen.append(n), lambda o, _u: seen.append(o)
        )
    )
    informer.replace([bulky("a")], "1")
    informer.apply_event("ADDED", bulky("b"))
    informer.apply_event("MODIFIED", bulky("b"))
    informer.apply_event("DELETED", bulky("a"))
    eventually(lambda: len(seen) == 4)
    assert all("managedFields" not in o["metadata"] for o in seen)
    assert all(o["metadata"]["annotations"] == {"team": "a"} for o in seen)
    assert [o["metadata"]["name"] for o in informer.store.list()] == ["b"]
    cached = informer.store.get("ns/b")
    assert cached is not None and "managedFields" not in cached["metadata"]
    informer.stop()


def test_transform_is_set_before_start_and_per_resource_in_the_factory() -> None:
    informer = SharedInformer(FakeApi(), name="t", backoff=fast_backoff())
    informer.set_transform(strip_managed_fields)
    informer.start()
    try:
        with pytest.raises(RuntimeError):
            informer.set_transform(None)
    finally:
        informer.stop()
    factory = SharedInformerFactory(
        Client(Configuration(host="http://127.0.0.1:1")), transforms={NAMESPACES: strip_managed_fields}
    )
    assert factory.informer(CONFIGMAPS).transform is DEFAULT_TRANSFORM
    assert factory.informer(NAMESPACES).transform is strip_managed_fields
    assert factory.by_name(CONFIGMAPS).transform is DEFAULT_TRANSFORM
