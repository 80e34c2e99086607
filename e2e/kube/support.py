"""Helpers for the framework's e2e tests: bulk writes, convergence checks and a breakable TCP proxy."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from registry_operator.kube import metrics
from registry_operator.kube.client import Client
from registry_operator.kube.informer import SharedInformer
from registry_operator.kube.resources import Resource

T = TypeVar("T")


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> float:
    """Poll `condition` until true; return the seconds it took. Raises AssertionError on timeout."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def parallel(fn: Callable[[T], Any], items: Iterable[T], workers: int = 8) -> None:
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(fn, items):
            pass


def api_state(client: Client, resource: Resource, namespace: str, label_selector: str) -> dict[str, str]:
    """{name: resourceVersion} as the API server has it right now (a quorum read)."""
    listed = client.list(resource, namespace, label_selector=label_selector, resource_version=None)
    return {item["metadata"]["name"]: item["metadata"]["resourceVersion"] for item in listed["items"]}


def cache_state(informer: SharedInformer) -> dict[str, str]:
    return {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in informer.store.list(copy=False)}


def write_requests(host: str) -> float:
    """Writes this process sent to `host` so far (rest_client_requests_total)."""
    return sum(
        metrics.sum_samples("rest_client_requests_total", method=method, host=host)
        for method in ("POST", "PUT", "PATCH", "DELETE")
    )


def host_label(client: Client) -> str:
    return client.host.split("://", 1)[1]


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `cut()` drops every connection and refuses new ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self.connections = 0
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refuse = self._cut
            if refuse:
                _close(downstream)
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                _close(downstream)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((downstream, upstream))
                self.connections += 1
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
