"""Informers against a real kube-apiserver + etcd: exact final state, API server restart, compaction,
objects watched by name."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import urlparse

import pytest

from e2e.kube.support import TcpProxy, api_state, cache_state, parallel, wait_for
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.byname import ByNameInformer, ReadThroughStore
from registry_operator.kube.client import Client
from registry_operator.kube.clock import FakeClock
from registry_operator.kube.events import EventRecorder
from registry_operator.kube.informer import EventHandlerFuncs, SharedInformer
from registry_operator.kube.reflector import ClientListerWatcher, ExponentialBackoff
from registry_operator.kube.resources import CONFIGMAPS, EVENTS, SECRETS
from registry_operator.kube.transforms import DEFAULT_TRANSFORM

LABEL = "e2e.registry-operator/informer"


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[Client]:
    admin = Client.from_kubeconfig(cluster.kubeconfig)
    yield admin
    admin.close()


class HandlerView:
    """The state a handler can rebuild from add/update/delete alone."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, str] = {}
        self.inferred_deletes = 0

    def handler(self) -> EventHandlerFuncs:
        def put(obj: dict[str, Any], *_: Any) -> None:
            with self.lock:
                self.objects[obj["metadata"]["name"]] = obj["metadata"]["resourceVersion"]

        def update(old: dict[str, Any], new: dict[str, Any]) -> None:
            put(new)

        def delete(obj: dict[str, Any], final_state_unknown: bool) -> None:
            with self.lock:
                self.objects.pop(obj["metadata"]["name"], None)
                self.inferred_deletes += final_state_unknown

        return EventHandlerFuncs(put, update, delete)

    def snapshot(self) -> dict[str, str]:
        with self.lock:
            return dict(self.objects)


def configmap_informer(client: Client, namespace: str, **kwargs: Any) -> SharedInformer:
    lister_watcher = ClientListerWatcher(client, CONFIGMAPS, namespace, label_selector=f"{LABEL}=yes")
    return SharedInformer(lister_watcher, name=f"configmaps/{namespace}", **kwargs)


def configmap(name: str, value: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {LABEL: "yes"}}, "data": {"value": value}}


def converged(client: Client, informer: SharedInformer, view: HandlerView, namespace: str) -> bool:
    truth = api_state(client, CONFIGMAPS, namespace, f"{LABEL}=yes")
    return cache_state(informer) == truth and view.snapshot() == truth


def test_final_state_is_exact_after_500_creates_updates_and_deletes(client: Client, namespace: str) -> None:
    informer = configmap_informer(client, namespace)
    view = HandlerView()
    informer.add_event_handler(view.handler())
    # An unlabelled object is outside the informer's scope and must never show up.
    client.create(CONFIGMAPS, {"metadata": {"name": "not-selected"}, "data": {}}, namespace)
    informer.start()
    try:
        assert informer.wait_for_sync(30)
        names = [f"cm-{i:03d}" for i in range(500)]
        parallel(lambda n: client.create(CONFIGMAPS, configmap(n, "v1"), namespace), names)
        parallel(lambda n: client.patch(CONFIGMAPS, n, {"data": {"value": "v2"}}, namespace), names[::2])
        parallel(lambda n: client.delete(CONFIGMAPS, n, namespace), names[::3])
        took = wait_for(lambda: converged(client, informer, view, namespace), 60, "informer convergence")
        state = cache_state(informer)
        expected = set(names) - set(names[::3])
        assert set(state) == expected
        assert "not-selected" not in state
        for name in names[::2]:
            cached = informer.store.get_by_name(namespace, name)
            if name in expected:
                assert cached is not None and cached["data"] == {"value": "v2"}
        print(
            f"\n500 configmaps: informer converged {took:.2f}s after the last write; "
            f"stats {informer.reflector.stats}"
        )
    finally:
        informer.stop()


def test_informer_recovers_from_an_apiserver_restart_mid_watch(
    cluster: LocalCluster, client: Client, namespace: str
) -> None:
    informer = configmap_informer(client, namespace)
    view = HandlerView()
    informer.add_event_handler(view.handler())
    informer.start()
    try:
        assert informer.wait_for_sync(30)
        names = [f"before-{i:02d}" for i in range(40)]
        parallel(lambda n: client.create(CONFIGMAPS, configmap(n, "v1"), namespace), names)
        watches_before = informer.reflector.stats.watches
        # Restart right after the writes: some events may still be in flight when the watch dies.
        cluster.restart_apiserver()
        parallel(
            lambda n: client.create(CONFIGMAPS, configmap(n, "v1"), namespace),
            [f"after-{i:02d}" for i in range(40)],
        )
        parallel(lambda n: client.patch(CONFIGMAPS, n, {"data": {"value": "v2"}}, namespace), names[:20])
        parallel(lambda n: client.delete(CONFIGMAPS, n, namespace), names[20:30])
        took = wait_for(lambda: converged(client, informer, view, namespace), 90, "convergence after restart")
        stats = informer.reflector.stats
        print(f"\napiserver restart: converged {took:.2f}s after the last write; stats {stats}")
        assert stats.watches > watches_before, "the watch must have been re-established"
        assert len(cache_state(informer)) == 70
    finally:
        informer.stop()


def test_compaction_while_disconnected_forces_a_relist(
    cluster: LocalCluster, client: Client, namespace: str
) -> None:
    # core/v1 Events bypass the API server's watch cache by default, so a watch resumes straight
    # from etcd — where compaction makes the old resourceVersion unavailable ("too old").
    server = urlparse(cluster.server)
    assert server.hostname is not None and server.port is not None
    proxy = TcpProxy(server.hostname, server.port)
    proxied = Client.from_kubeconfig(cluster.kubeconfig, server=f"https://127.0.0.1:{proxy.port}")
    recorder = EventRecorder(client, "e2e-compaction", clock=FakeClock())
    subject = client.create(CONFIGMAPS, configmap("subject", "x"), namespace)

    def emit(reason: str) -> None:
        recorder.record_now(subject, "Normal", reason, f"event {reason}")

    for i in range(5):
        emit(f"Before{i}")
    informer = SharedInformer(
        ClientListerWatcher(proxied, EVENTS, namespace),
        name="events",
        backoff=ExponentialBackoff(initial=0.2, cap=1.0),
    )
    view = HandlerView()
    informer.add_event_handler(view.handler())
    informer.start()
    try:
        assert informer.wait_for_sync(30)
        wait_for(lambda: informer.reflector.stats.watches >= 1, 10, "the first watch")
        assert len(informer.store) == 5
        proxy.cut()
        first_event = sorted(cache_state(informer))[0]
        for i in range(5):
            emit(f"While{i}")
        client.delete(EVENTS, first_event, namespace)
        revision = cluster.compact_etcd()
        lists_before = informer.reflector.stats.lists
        proxy.restore()

        def events_converged() -> bool:
            truth = {
                e["metadata"]["name"]: e["metadata"]["resourceVersion"]
                for e in client.list(EVENTS, namespace)["items"]
            }
            return cache_state(informer) == truth and view.snapshot() == truth

        took = wait_for(events_converged, 60, "convergence after compaction")
        stats = informer.reflector.stats
        print(f"\ncompaction at revision {revision}: converged {took:.2f}s after reconnecting; stats {stats}")
        assert stats.expired >= 1, "the resumed watch must have been refused as too old"
        assert stats.lists > lists_before, "a relist must have happened"
        assert view.inferred_deletes == 1, "the deletion missed while disconnected comes from the relist"
        assert first_event not in cache_state(informer)
        assert len(informer.store) == 9
    finally:
        informer.stop()
        proxy.close()
        proxied.close()


def test_by_name_informer_watches_exactly_the_referenced_secrets(client: Client, namespace: str) -> None:
    """ConfigMaps name Secrets in `data.secret`; only those Secrets are cached, each by its own
    watch, and they leave the cache once nothing names them."""
    referrers = configmap_informer(client, namespace)
    secrets = ByNameInformer(client, SECRETS, name="secrets", transform=DEFAULT_TRANSFORM)

    def named(cm: dict[str, Any]) -> list[str]:
        secret = (cm.get("data") or {}).get("secret")
        return [f"{namespace}/{secret}"] if secret else []

    secrets.track_references(referrers, named)
    view = HandlerView()
    secrets.add_event_handler(view.handler())
    for index in range(20):  # unrelated Secrets in the same namespace
        client.create(SECRETS, {"metadata": {"name": f"other-{index}"}, "stringData": {"v": "x"}}, namespace)
    client.create(SECRETS, {"metadata": {"name": "a"}, "stringData": {"v": "1"}}, namespace)
    client.create(CONFIGMAPS, {**configmap("uses-a", ""), "data": {"secret": "a"}}, namespace)
    client.create(CONFIGMAPS, {**configmap("uses-b", ""), "data": {"secret": "b"}}, namespace)
    referrers.start()
    secrets.start()
    try:
        assert secrets.wait_for_sync(30)
        assert secrets.watched_keys() == [f"{namespace}/a", f"{namespace}/b"]
        assert cache_state_of(secrets) == {"a"}, "a missing Secret is watched, not cached"
        cached = secrets.store.get_by_name(namespace, "a")
        assert cached is not None and "managedFields" not in cached["metadata"]
        # Creating the missing one and changing the present one reach the handlers.
        client.create(SECRETS, {"metadata": {"name": "b"}, "stringData": {"v": "1"}}, namespace)
        client.patch(SECRETS, "a", {"stringData": {"v": "2"}}, namespace)
        wait_for(lambda: set(view.snapshot()) == {"a", "b"}, 30, "both referenced Secrets")
        wait_for(
            lambda: (
                view.snapshot()["a"] == client.get(SECRETS, "a", namespace)["metadata"]["resourceVersion"]
            ),
            30,
            "the change of a",
        )
        # A new reference is read through until its watch has listed it; a dropped one leaves.
        reads_before = cast(ReadThroughStore, secrets.store).read_through
        client.patch(CONFIGMAPS, "uses-b", {"data": {"secret": "other-3"}}, namespace)
        wait_for(lambda: f"{namespace}/other-3" in secrets.watched_keys(), 30, "the new reference")
        assert secrets.store.get_by_name(namespace, "other-3") is not None
        wait_for(lambda: "b" not in cache_state_of(secrets), 30, "b to leave the cache")
        wait_for(lambda: secrets.is_watched(f"{namespace}/other-3"), 30, "other-3 to be listed")
        assert cache_state_of(secrets) == {"a", "other-3"}
        assert cast(ReadThroughStore, secrets.store).read_through <= reads_before + 1
    finally:
        secrets.stop()
        referrers.stop()


def cache_state_of(informer: ByNameInformer) -> set[str]:
    return {o["metadata"]["name"] for o in informer.store.list(copy=False)}
