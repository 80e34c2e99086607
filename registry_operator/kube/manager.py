"""The manager: shared informers, controllers, leader election, probes and metrics, shutdown.

Lifecycle of `Manager.run()`:
1. serve /metrics, /healthz and /readyz (readyz answers 200 once every informer has synced);
2. start every informer — on every replica, so standbys keep warm caches — and wait for the
   initial sync (`cache_sync_timeout`, 2 minutes by default);
3. start the controllers: at once without leader election, else only once this replica leads;
4. on SIGTERM/SIGINT (or `request_stop()`): stop the controllers letting in-flight reconciles finish,
   release the lease, stop the informers — all within `graceful_shutdown_timeout` (30 s) — and
   return `ExitCode.OK`;
5. if leadership is lost: stop handing out work at once (the workqueues shut down, reconciles in
   flight get no further request through) and return `ExitCode.LEADERSHIP_LOST` without draining
   (another replica may already be leading). The CLI must exit the process with that code, so that
   the Deployment restarts it as a follower.

With leader election, `manager.client` (what controllers get) is a view of the client whose every
request carries the elector's work deadline: it ends before the lease could pass to another
replica, and once leadership is lost nothing is sent at all. `manager.base_client` is unbounded:
informers, the lease itself and runnables that do not need leadership use it.
"""

from __future__ import annotations

import enum
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from registry_operator.kube import metrics
from registry_operator.kube.client import Client
from registry_operator.kube.clock import REAL_CLOCK, Clock
from registry_operator.kube.controller import Controller
from registry_operator.kube.events import EventRecorder
from registry_operator.kube.factory import DEFAULT_RESYNC_PERIOD, SharedInformerFactory
from registry_operator.kube.leaderelection import (
    ElectionOutcome,
    LeaderElectionConfig,
    LeaderElector,
    LeaseLock,
    default_identity,
)
from registry_operator.kube.resources import Resource
from registry_operator.kube.retry import NO_TRANSPORT_RETRY
from registry_operator.kube.transforms import Transform

log = logging.getLogger(__name__)


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1  # e.g. caches did not sync, a controller failed to start
    LEADERSHIP_LOST = 2


@dataclass
class ManagerOptions:
    # "host:port"; ":port" binds every interface; port 0 picks a free port; None disables.
    bind_address: str | None = ":8080"
    # A second listener for the kubelet's probes (it serves the same endpoints); None: probes are
    # answered on `bind_address` only.
    health_bind_address: str | None = None
    leader_election: bool = False
    leader_election_id: str = ""
    leader_election_namespace: str = ""
    leader_election_identity: str | None = None
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    cache_sync_timeout: float = 120.0
    graceful_shutdown_timeout: float = 30.0
    resync_period: float | None = DEFAULT_RESYNC_PERIOD
    # The informers' transform per resource (None: keep objects whole); every other resource gets
    # transforms.DEFAULT_TRANSFORM (no managedFields, no last-applied annotation).
    cache_transforms: Mapping[Resource, Transform | None] = field(default_factory=dict)


Runnable = Callable[[threading.Event], None]
HealthCheck = Callable[[], bool]


def parse_bind_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = "", address
    return host or "0.0.0.0", int(port)


class Manager:
    def __init__(
        self, client: Client, options: ManagerOptions | None = None, *, clock: Clock = REAL_CLOCK
    ) -> None:
        self.options = options or ManagerOptions()
        self.base_client = client
        # Requests of the leader's work end by the elector's work deadline (see the module doc).
        self.client = client.with_deadline(self._work_deadline) if self.options.leader_election else client
        self._clock = clock
        self.informers = SharedInformerFactory(
            client,
            resync_period=self.options.resync_period,
            clock=clock,
            transforms=self.options.cache_transforms,
        )
        self._controllers: dict[str, Controller] = {}
        self._runnables: list[tuple[Runnable, bool]] = []
        self._healthz_checks: dict[str, HealthCheck] = {}
        self._readyz_checks: dict[str, HealthCheck] = {"informers": self.informers.has_synced}
        self._recorders: dict[str, EventRecorder] = {}
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._failed = threading.Event()
        self._leading = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._servers: list[ThreadingHTTPServer] = []
        self._health_server: ThreadingHTTPServer | None = None
        self._elector: LeaderElector | None = None
        self._threads: list[threading.Thread] = []
        self._started_controllers: list[Controller] = []
        self._lock = threading.Lock()
        self.identity = self.options.leader_election_identity or default_identity()
        if self.options.leader_election:
            # Validate early: a bad configuration should fail at start-up, not after cache sync.
            self._election_config()

    # --- registration ----------------------------------------------------------------------------
    def add_controller(self, controller: Controller) -> None:
        if controller.name in self._controllers:
            raise ValueError(f"a controller named {controller.name!r} is already registered")
        self._controllers[controller.name] = controller

    def add_runnable(self, runnable: Runnable, *, needs_leader_election: bool = True) -> None:
        """A function run in its own thread until the stop event it gets is set."""
        self._runnables.append((runnable, needs_leader_election))

    def add_healthz_check(self, name: str, check: HealthCheck) -> None:
        self._healthz_checks[name] = check

    def add_readyz_check(self, name: str, check: HealthCheck) -> None:
        self._readyz_checks[name] = check

    def event_recorder(self, component: str) -> EventRecorder:
        with self._lock:
            recorder = self._recorders.get(component)
            if recorder is None:
                recorder = self._recorders[component] = EventRecorder(
                    self.client, component, host=self.identity.split("_")[0], clock=self._clock
                )
            return recorder

    # --- state -----------------------------------------------------------------------------------
    @property
    def bound_port(self) -> int | None:
        """The port of the `bind_address` listener (None if disabled or not started yet)."""
        return self._server.server_address[1] if self._server is not None else None

    @property
    def health_port(self) -> int | None:
        """The port answering probes: the `health_bind_address` listener if any, else `bound_port`."""
        if self._health_server is not None:
            return self._health_server.server_address[1]
        return self.bound_port

    def is_leader(self) -> bool:
        return self._leading.is_set()

    def _work_deadline(self) -> float | None:
        """Until when the leader's work may send requests (on the client's clock); passed if not leading."""
        elector = self._elector
        if elector is None or self._lost.is_set():
            return float("-inf")
        return elector.work_deadline()

    def ready(self) -> bool:
        return all(check() for check in self._readyz_checks.values())

    def request_stop(self) -> None:
        """Begin a graceful stop (what SIGTERM does)."""
        self._stop.set()

    # --- run -------------------------------------------------------------------------------------
    def run(self, *, install_signal_handlers: bool = True) -> ExitCode:
        """Run until stopped; returns the process exit code."""
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            self._install_signal_handlers()
        try:
            return self._run()
        finally:
            self._stop.set()

    def _run(self) -> ExitCode:
        if self.options.bind_address is not None:
            self._serve_http(self.options.bind_address)
        health = self.options.health_bind_address
        if health is not None and (health != self.options.bind_address or parse_bind_address(health)[1] == 0):
            self._health_server = self._serve_http(health)
        self.informers.start()
        if not self._wait_for_caches():
            stopped = self._stop.is_set()
            self._shutdown(graceful=False)
            return ExitCode.OK if stopped else ExitCode.FAILED
        log.info("caches synced")
        self._start_everywhere()

        if self.options.leader_election:
            self._start_leader_election()
        else:
            self._start_leading_work()

        self._stop.wait()
        if self._lost.is_set():
            log.error("leadership lost: stopping without drain")
            self._shutdown(graceful=False)
            return ExitCode.LEADERSHIP_LOST
        self._shutdown(graceful=True)
        return ExitCode.FAILED if self._failed.is_set() else ExitCode.OK

    def _wait_for_caches(self) -> bool:
        deadline = time.monotonic() + self.options.cache_sync_timeout
        while not self.informers.has_synced():
            if self._stop.is_set():
                return False
            if time.monotonic() >= deadline:
                log.error("caches did not sync within %ss", self.options.cache_sync_timeout)
                return False
            self._stop.wait(0.1)
        return True

    def _election_config(self) -> LeaderElectionConfig:
        options = self.options
        namespace = options.leader_election_namespace or _in_cluster_namespace()
        return LeaderElectionConfig(
            lease_name=options.leader_election_id,
            namespace=namespace,
            identity=self.identity,
            lease_duration=options.lease_duration,
            renew_deadline=options.renew_deadline,
            retry_period=options.retry_period,
        )

    def _start_leader_election(self) -> None:
        config = self._election_config()
        # Lease calls never retry at the transport level: each must end by its renew round's deadline.
        lease_client = self.base_client.with_timeout(config.request_timeout).with_transport_retry(
            NO_TRANSPORT_RETRY
        )
        lock = LeaseLock(
            lease_client,
            config.namespace,
            config.lease_name,
            request_timeout=config.request_timeout,
            clock=self._clock,
        )

        def on_started_leading() -> None:
            # Off the election thread, so starting controllers never delays a renewal.
            self._spawn("start-controllers", self._start_leading_work)

        def on_stopped_leading() -> None:
            self._leading.clear()
            self._lost.set()
            # Stop handing out work now, not when the main thread gets to it.
            with self._lock:
                controllers = list(self._started_controllers)
            for controller in controllers:
                controller.queue.shutdown()
            self._stop.set()

        self._elector = LeaderElector(
            config,
            lock,
            clock=self._clock,
            on_started_leading=on_started_leading,
            on_stopped_leading=on_stopped_leading,
        )
        elector = self._elector

        def run_election() -> None:
            outcome = elector.run()
            if outcome is ElectionOutcome.LOST:
                on_stopped_leading()

        self._spawn("leader-election", run_election)

    def _start_leading_work(self) -> None:
        self._leading.set()
        for runnable, needs_leader in self._runnables:
            if needs_leader:
                self._spawn("runnable", functools.partial(runnable, self._stop))
        for controller in self._controllers.values():
            if self._stop.is_set():
                return
            try:
                controller.start()
            except Exception:
                log.exception("controller %s failed to start", controller.name)
                self._failed.set()
                self._stop.set()
                return
            with self._lock:
                self._started_controllers.append(controller)

    def _start_everywhere(self) -> None:
        for runnable, needs_leader in self._runnables:
            if not needs_leader:
                self._spawn("runnable", functools.partial(runnable, self._stop))

    def _spawn(self, name: str, target: Callable[[], Any]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _shutdown(self, *, graceful: bool) -> bool:
        """Stop everything; returns False if in-flight work did not finish in time."""
        deadline = time.monotonic() + (self.options.graceful_shutdown_timeout if graceful else 0.0)
        drained = True
        with self._lock:
            controllers = list(self._started_controllers)
        for controller in controllers:
            remaining = max(0.0, deadline - time.monotonic())
            drained = controller.stop(remaining if graceful else 0) and drained
        if self._elector is not None:
            # Release only after all guarded work has stopped.
            self._elector.stop()
        self._leading.clear()
        for thread in self._threads:
            if thread.name == "leader-election":
                thread.join(max(0.1, deadline - time.monotonic()) if graceful else 0.1)
        for recorder in self._recorders.values():
            recorder.close(max(0.0, deadline - time.monotonic()) if graceful else 0.0)
        self.informers.stop(max(0.0, deadline - time.monotonic()) if graceful else 0.0)
        for server in self._servers:
            server.shutdown()
            server.server_close()
        if not drained:
            log.warning("graceful shutdown timed out with reconciles still running")
        return drained

    # --- signals ---------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            if self._stop.is_set():
                os._exit(1)  # second signal: stop waiting for a graceful shutdown
            log.info("received %s, shutting down", signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # --- HTTP ------------------------------------------------------------------------------------
    def _serve_http(self, address: str) -> ThreadingHTTPServer:
        manager = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/livez"):
                    self._probe(manager._healthz_checks)
                elif path == "/readyz":
                    self._probe(manager._readyz_checks)
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _probe(self, checks: dict[str, HealthCheck]) -> None:
                failed = []
                for name, check in checks.items():
                    try:
                        ok = check()
                    except Exception:
                        ok = False
                    if not ok:
                        failed.append(name)
                if failed:
                    self._send(500, f"not ok: {', '.join(failed)}\n".encode(), "text/plain")
                else:
                    self._send(200, b"ok\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would flood the log

        server = ThreadingHTTPServer(parse_bind_address(address), Handler)
        server.daemon_threads = True
        if self._server is None:
            self._server = server  # `bound_port` reports the main (metrics) listener
        self._servers.append(server)
        # A short poll interval keeps shutdown() quick.
        self._spawn("http", functools.partial(server.serve_forever, poll_interval=0.1))
        log.info("serving /metrics, /healthz, /readyz on port %s", server.server_address[1])
        return server


def _in_cluster_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError as error:
        raise ValueError("leader election needs a namespace (not running in a cluster)") from error
