"""The reflector: lists one collection, then watches it from the LIST's resourceVersion, and hands
every object to a sink (an informer's store). What is listed and watched comes from a
`ListerWatcher` (`ClientListerWatcher`: one resource through a `Client`, scoped by namespace and
selectors).

Semantics follow client-go `tools/cache/reflector.go`:
- The first LIST asks for resourceVersion "0" (served from the API server's watch cache); later
  relists ask for the last synced RV ("not older than"). If a LIST answers 410 Expired / "too large
  resource version", it is retried at once with RV "" (a quorum read).
- The resume point is the LIST's own metadata.resourceVersion, never an item's.
- The watch runs from there with bookmarks, a random server timeout in [5, 10) minutes and a client
  read timeout a little longer. A clean close reconnects from the last RV without relisting;
  connection failures back off and reconnect; 410 Gone ("too old resource version") relists.
- Backoff: 0.8 s, factor 2, jitter 1.0, capped at 30 s, reset after 2 minutes without trouble.
- LISTs are paginated like client-go's pager (`page_size` per request; an expired continue token
  falls back to one full LIST).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from registry_operator.kube import objects
from registry_operator.kube.cache import Object
from registry_operator.kube.client import Client
from registry_operator.kube.clock import REAL_CLOCK, Clock
from registry_operator.kube.errors import (
    ApiError,
    ConnectionFailed,
    Gone,
    ServerError,
    TooManyRequests,
    is_too_large_resource_version,
)
from registry_operator.kube.resources import Resource
from registry_operator.kube.watch import WatchEvent

log = logging.getLogger(__name__)


# --- list/watch source ------------------------------------------------------------------------------
class WatchStreamLike(Protocol):
    def __iter__(self) -> Iterator[WatchEvent]: ...

    def close(self) -> None: ...


class ListerWatcher(Protocol):
    def list(self, resource_version: str, page_size: int | None) -> Object:
        """{"metadata": {"resourceVersion": ...}, "items": [...]} for the whole collection."""
        ...

    def watch(self, resource_version: str, timeout_seconds: int, read_timeout: float) -> WatchStreamLike: ...


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
