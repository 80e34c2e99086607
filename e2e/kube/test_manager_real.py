"""A manager in this process against the real API: steady state makes no writes; /metrics names."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.kube.support import host_label, parallel, wait_for, write_requests
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube import metrics
from registry_operator.kube.client import Client
from registry_operator.kube.controller import Controller, Request, Result
from registry_operator.kube.informer import SharedInformer
from registry_operator.kube.manager import ExitCode, Manager, ManagerOptions
from registry_operator.kube.resources import CONFIGMAPS

LABEL = "e2e.registry-operator/resync"
STAMP = "e2e.registry-operator/stamped"


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[Client]:
    admin = Client.from_kubeconfig(cluster.kubeconfig)
    yield admin
    admin.close()


class Stamper:
    """Level-based reconciler: reads the cache and writes only when the stamp is missing."""

    def __init__(self, client: Client, informer: SharedInformer) -> None:
        self.client = client
        self.informer = informer
        self.lock = threading.Lock()
        self.reconciles = 0

    def reconcile(self, request: Request) -> Result | None:
        with self.lock:
            self.reconciles += 1
        cm = self.informer.store.get_by_name(request.namespace, request.name)
        if cm is None:
            return None
        if (cm["metadata"].get("annotations") or {}).get(STAMP) != "yes":
            patch = {"metadata": {"annotations": {STAMP: "yes"}}}
            self.client.patch(CONFIGMAPS, request.name, patch, request.namespace)
        return None

    def count(self) -> int:
        with self.lock:
            return self.reconciles


class RunningManager:
    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.result: list[ExitCode] = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(manager.run(install_signal_handlers=False))
        )

    def __enter__(self) -> RunningManager:
        self.thread.start()
        wait_for(lambda: self.manager.bound_port is not None and self.manager.ready(), 60, "manager ready")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.manager.request_stop()
        self.thread.join(40)
        assert not self.thread.is_alive()
        assert self.result == [ExitCode.OK]


def stamped(client: Client, namespace: str) -> int:
    items = client.list(CONFIGMAPS, namespace, label_selector=f"{LABEL}=yes")["items"]
    return sum(1 for i in items if (i["metadata"].get("annotations") or {}).get(STAMP) == "yes")


def test_resync_over_1000_cached_objects_makes_no_api_writes(client: Client, namespace: str) -> None:
    names = [f"cm-{i:04d}" for i in range(1000)]
    parallel(
        lambda n: client.create(CONFIGMAPS, {"metadata": {"name": n, "labels": {LABEL: "yes"}}}, namespace),
        names,
    )
    manager = Manager(client, ManagerOptions(bind_address="127.0.0.1:0", resync_period=None))
    informer = manager.informers.informer(CONFIGMAPS, namespace=namespace, label_selector={LABEL: "yes"})
    stamper = Stamper(client, informer)
    controller = Controller("resync-e2e", stamper, max_concurrent_reconciles=4)
    controller.watch_for(informer)
    manager.add_controller(controller)
    host = host_label(client)
    with RunningManager(manager):
        wait_for(lambda: stamped(client, namespace) == 1000, 120, "every configmap stamped")

        def settled() -> bool:
            # The stamps' own watch events come back as updates; wait until those passes are done.
            return (
                len(controller.queue) == 0
                and not controller.queue.processing()
                and all(
                    (o["metadata"].get("annotations") or {}).get(STAMP) == "yes"
                    for o in informer.store.list(copy=False)
                )
            )

        wait_for(settled, 60, "steady state")

        def stays_quiet() -> bool:
            count = stamper.count()
            threading.Event().wait(1.0)
            return stamper.count() == count

        wait_for(stays_quiet, 30, "no more reconciles")
        writes_before = write_requests(host)
        gets_before = metrics.sum_samples("rest_client_requests_total", method="GET", host=host)
        reconciles_before = stamper.count()

        assert informer.resync() == 1000
        wait_for(lambda: stamper.count() >= reconciles_before + 1000, 60, "resync reconciles")
        wait_for(
            lambda: len(controller.queue) == 0 and not controller.queue.processing(), 30, "queue drained"
        )

        writes = write_requests(host) - writes_before
        gets = metrics.sum_samples("rest_client_requests_total", method="GET", host=host) - gets_before
        print(
            f"\nresync of 1000 objects: {stamper.count() - reconciles_before} reconciles, "
            f"{writes:.0f} writes, {gets:.0f} GETs (watch reconnects included)"
        )
        assert writes == 0
        assert gets <= 2, "a resync must be served from the cache"


def test_metrics_endpoint_serves_controller_runtime_names(client: Client, namespace: str) -> None:
    manager = Manager(client, ManagerOptions(bind_address="127.0.0.1:0"))
    informer = manager.informers.informer(CONFIGMAPS, namespace=namespace)
    done = threading.Event()
    controller = Controller("metrics-e2e", lambda r: done.set())
    controller.watch_for(informer)
    manager.add_controller(controller)
    with RunningManager(manager):
        client.create(CONFIGMAPS, {"metadata": {"name": "trigger"}}, namespace)
        assert done.wait(30)
        port = manager.bound_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            assert response.status == 200
    samples = [sample for family in text_string_to_metric_families(body) for sample in family.samples]
    names = {sample.name for sample in samples}
    expected = {
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_terminal_reconcile_errors_total",
        "controller_runtime_reconcile_panics_total",
        "controller_runtime_reconcile_timeouts_total",
        "controller_runtime_reconcile_time_seconds_bucket",
        "controller_runtime_max_concurrent_reconciles",
        "controller_runtime_active_workers",
        "workqueue_depth",
        "workqueue_adds_total",
        "workqueue_queue_duration_seconds_bucket",
        "workqueue_work_duration_seconds_bucket",
        "workqueue_unfinished_work_seconds",
        "workqueue_longest_running_processor_seconds",
        "workqueue_retries_total",
        "rest_client_requests_total",
        "process_resident_memory_bytes",
    }
    assert expected <= names, expected - names

    def value(metric: str, /, **labels: str) -> float | None:
        return next((x.value for x in samples if x.name == metric and x.labels == labels), None)

    # The namespace also holds kube-root-ca.crt, so at least one reconcile happened.
    assert (value("controller_runtime_reconcile_total", controller="metrics-e2e", result="success") or 0) >= 1
    assert value("controller_runtime_reconcile_total", controller="metrics-e2e", result="error") == 0
    assert (value("workqueue_adds_total", name="metrics-e2e", controller="metrics-e2e") or 0) >= 1
    bucket = value(
        "workqueue_work_duration_seconds_bucket", name="metrics-e2e", controller="metrics-e2e", le="1e-08"
    )
    assert bucket is not None
