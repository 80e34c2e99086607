"""Manager without an API server: probes, metrics endpoint, controller lifecycle, graceful stop."""

from __future__ import annotations

import itertools
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import Configuration

from registry_operator.kube.client import Client
from registry_operator.kube.controller import Controller, Request
from registry_operator.kube.informer import EventHandlerFuncs
from registry_operator.kube.manager import ExitCode, Manager, ManagerOptions, parse_bind_address

REPO = Path(__file__).resolve().parents[2]
_names = itertools.count()


class Source:
    def __init__(self) -> None:
        self.handlers: list[EventHandlerFuncs] = []

    def add_event_handler(self, handler: EventHandlerFuncs) -> EventHandlerFuncs:
        self.handlers.append(handler)
        return handler

    def remove_event_handler(self, registration: Any) -> None:
        self.handlers.remove(registration)

    def has_synced(self) -> bool:
        return True

    def add(self, name: str) -> None:
        for handler in self.handlers:
            handler.on_add({"metadata": {"name": name, "namespace": "ns"}}, False)


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class Running:
    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.exit_code: list[ExitCode] = []
        self.thread = threading.Thread(
            target=lambda: self.exit_code.append(manager.run(install_signal_handlers=False))
        )

    def __enter__(self) -> Running:
        self.thread.start()
        deadline = time.monotonic() + 10
        while self.manager.bound_port is None or not self.manager.is_leader():
            assert time.monotonic() < deadline, "manager did not start"
            threading.Event().wait(0.005)
        return self

    def stop(self, timeout: float = 10) -> ExitCode:
        self.manager.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "manager did not stop"
        return self.exit_code[0]

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.stop()


@pytest.fixture
def client() -> Iterator[Client]:
    # No informers are registered, so the client is never used for requests.
    yield Client(Configuration(host="http://127.0.0.1:1"))


def manager_with_controller(
    client: Client, reconcile: Any, **options: Any
) -> tuple[Manager, Controller, Source]:
    manager = Manager(client, ManagerOptions(bind_address="127.0.0.1:0", **options))
    controller = Controller(f"manager-test-{next(_names)}", reconcile)
    source = Source()
    controller.watch_for(source)
    manager.add_controller(controller)
    return manager, controller, source


def test_bind_address_parsing() -> None:
    assert parse_bind_address(":8080") == ("0.0.0.0", 8080)
    assert parse_bind_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_bind_address("9090") == ("0.0.0.0", 9090)


def test_probes_metrics_and_controller_lifecycle(client: Client) -> None:
    reconciled = threading.Event()
    manager, controller, source = manager_with_controller(client, lambda r: reconciled.set())
    with Running(manager) as running:
        port = manager.bound_port
        assert port is not None and port > 0
        assert http_get(port, "/healthz") == (200, "ok\n")
        assert http_get(port, "/readyz") == (200, "ok\n")
        assert http_get(port, "/nope")[0] == 404
        source.add("a")
        assert reconciled.wait(5)
        status, body = http_get(port, "/metrics")
        assert status == 200
        for name in (
            "controller_runtime_reconcile_total",
            "controller_runtime_reconcile_errors_total",
            "controller_runtime_reconcile_time_seconds_bucket",
            "controller_runtime_active_workers",
            "controller_runtime_max_concurrent_reconciles",
            "workqueue_depth",
            "workqueue_adds_total",
            "workqueue_retries_total",
            "workqueue_queue_duration_seconds_bucket",
            "workqueue_unfinished_work_seconds",
            "process_resident_memory_bytes",
        ):
            assert f"\n{name}{{" in body or f"\n{name} " in body, name
        assert (
            f'controller_runtime_reconcile_total{{controller="{controller.name}",result="success"}} 1.0'
            in body
        )
        assert running.stop() is ExitCode.OK
    assert controller.queue.shutting_down
    with pytest.raises(OSError):
        http_get(port, "/healthz")


def test_separate_health_listener(client: Client) -> None:
    manager = Manager(client, ManagerOptions(bind_address="127.0.0.1:0", health_bind_address="127.0.0.1:0"))
    with Running(manager):
        assert manager.health_port is not None and manager.health_port != manager.bound_port
        assert http_get(manager.health_port, "/readyz") == (200, "ok\n")
        assert http_get(manager.health_port, "/healthz") == (200, "ok\n")


def test_readyz_reports_failing_checks(client: Client) -> None:
    manager, _, _ = manager_with_controller(client, lambda r: None)
    manager.add_readyz_check("warm-up", lambda: False)
    with Running(manager):
        port = manager.bound_port
        assert port is not None
        assert http_get(port, "/readyz") == (500, "not ok: warm-up\n")
        assert http_get(port, "/healthz")[0] == 200


def test_graceful_stop_lets_the_running_reconcile_finish(client: Client) -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow(request: Request) -> None:
        started.set()
        release.wait(10)
        finished.set()

    manager, _, source = manager_with_controller(client, slow)
    with Running(manager) as running:
        source.add("a")
        assert started.wait(5)
        manager.request_stop()
        running.thread.join(0.1)
        assert running.thread.is_alive(), "must wait for the in-flight reconcile"
        release.set()
        assert running.stop() is ExitCode.OK
        assert finished.is_set()


def test_graceful_stop_gives_up_after_the_timeout(client: Client) -> None:
    started = threading.Event()

    def stuck(request: Request) -> None:
        started.set()
        threading.Event().wait(30)

    manager, _, source = manager_with_controller(client, stuck, graceful_shutdown_timeout=0.3)
    with Running(manager) as running:
        source.add("stuck")
        assert started.wait(5)
        began = time.monotonic()
        assert running.stop(timeout=5) is ExitCode.OK
        assert time.monotonic() - began < 3


def test_runnables_and_duplicate_controller_names(client: Client) -> None:
    manager, controller, _ = manager_with_controller(client, lambda r: None)
    with pytest.raises(ValueError):
        manager.add_controller(Controller(controller.name, lambda r: None))
    ran = threading.Event()
    stopped = threading.Event()

    def runnable(stop: threading.Event) -> None:
        ran.set()
        stop.wait()
        stopped.set()

    manager.add_runnable(runnable, needs_leader_election=False)
    with Running(manager) as running:
        assert ran.wait(5)
        running.stop()
    assert stopped.wait(5)


def test_invalid_leader_election_settings_fail_at_construction(client: Client) -> None:
    with pytest.raises(ValueError):
        Manager(
            client,
            ManagerOptions(
                leader_election=True,
                leader_election_id="x",
                leader_election_namespace="ns",
                renew_deadline=20,
            ),
        )


def test_with_leader_election_controllers_get_a_client_bounded_by_the_leadership(client: Client) -> None:
    manager = Manager(
        client,
        ManagerOptions(
            bind_address=None, leader_election=True, leader_election_id="x", leader_election_namespace="ns"
        ),
    )
    assert manager.base_client is client
    assert client.deadline_for() is None, "informers and the lease stay unbounded"
    assert manager.client.deadline_for() == float("-inf"), "not leading: nothing may be sent"
    unelected = Manager(client, ManagerOptions(bind_address=None))
    assert unelected.client is client


def test_the_deployment_waits_longer_than_the_graceful_shutdown() -> None:
    deployment = yaml.safe_load((REPO / "manifests" / "operator" / "deployment.yaml").read_text())
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    options = ManagerOptions()
    # Draining, then releasing the Lease (one request of at most renew deadline / 2).
    assert grace > options.graceful_shutdown_timeout + options.renew_deadline / 2
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
