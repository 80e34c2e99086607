"""core/v1 Event recorder.

`recorder.normal(obj, reason, message)` / `recorder.warning(...)` never block the caller: events go
to a bounded queue and a background thread writes them. Like client-go's recorder it
- aggregates: the same type+reason+message on the same object within `aggregation_window` bumps
  the existing Event's count and lastTimestamp instead of creating a new Event;
- rate-limits per object (a token bucket of 25, refilled one per 5 minutes), dropping the excess.

Secrets: the recorder writes `message` verbatim into an object many users can read. Callers must
never put passwords, tokens, keys or secret data in a reason or message.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Protocol

from registry_operator.kube.clock import REAL_CLOCK, Clock
from registry_operator.kube.errors import ApiError, NotFound
from registry_operator.kube.resources import EVENTS, Resource

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
MAX_MESSAGE_LENGTH = 1024


class EventWriter(Protocol):
    """The subset of `Client` the recorder uses."""

    def create(self, resource: Resource, obj: Mapping[str, Any], namespace: str | None = None) -> Any: ...

    def patch(self, resource: Resource, name: str, patch: Any, namespace: str | None = None) -> Any: ...


@dataclass
class _Aggregate:
    name: str
    namespace: str
    count: int
    first_timestamp: str
    last_seen: float


@dataclass
class _Bucket:
    tokens: float
    updated: float


class EventRecorder:
    """Records Events for objects on behalf of `component` (thread-safe)."""

    def __init__(
        self,
        client: EventWriter,
        component: str,
        *,
        host: str = "",
        clock: Clock = REAL_CLOCK,
        aggregation_window: float = 600.0,
        burst: int = 25,
        refill_interval: float = 300.0,
        queue_size: int = 1000,
    ) -> None:
        self._client = client
        self.component = component
        self._host = host
        self._clock = clock
        self._window = aggregation_window
        self._burst = burst
        self._refill_interval = refill_interval
        self._lock = threading.Lock()
        self._aggregates: OrderedDict[tuple[str, ...], _Aggregate] = OrderedDict()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._queue: queue.Queue[tuple[Mapping[str, Any], str, str, str] | None] = queue.Queue(queue_size)
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    # --- public ----------------------------------------------------------------------------------
    def normal(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.event(obj, NORMAL, reason, message)

    def warning(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.event(obj, WARNING, reason, message)

    def event(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        """Queue an Event about `obj` (a dict with apiVersion, kind and metadata)."""
        if event_type not in (NORMAL, WARNING):
            raise ValueError(f"event type must be {NORMAL} or {WARNING}, not {event_type!r}")
        self._ensure_thread()
        try:
            self._queue.put_nowait((obj, event_type, reason, message[:MAX_MESSAGE_LENGTH]))
        except queue.Full:
            self.dropped += 1
            log.warning("event queue full; dropping %s event %s", event_type, reason)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event was written (or dropped)."""
        done = threading.Event()

        def wait_for_queue() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait_for_queue, daemon=True).start()
        return done.wait(timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        self.flush(timeout)
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    # --- internals -------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"events-{self.component}", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self.record_now(*item)
            except Exception:
                log.exception("writing an event failed")
            finally:
                self._queue.task_done()

    def _take_token(self, object_key: str) -> bool:
        now = self._clock.now()
        bucket = self._buckets.get(object_key)
        if bucket is None:
            bucket = self._buckets[object_key] = _Bucket(float(self._burst), now)
            if len(self._buckets) > 4096:
                self._buckets.popitem(last=False)
        else:
            refill = (now - bucket.updated) / self._refill_interval
            bucket.tokens = min(float(self._burst), bucket.tokens + refill)
            bucket.updated = now
            self._buckets.move_to_end(object_key)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def record_now(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        """Write (or aggregate) one event synchronously; used by the background thread and tests."""
        metadata = obj.get("metadata") or {}
        namespace = metadata.get("namespace") or "default"
        involved = {
            "apiVersion": obj.get("apiVersion", ""),
            "kind": obj.get("kind", ""),
            "name": metadata.get("name", ""),
            "namespace": metadata.get("namespace") or "",
            "uid": metadata.get("uid", ""),
            "resourceVersion": metadata.get("resourceVersion", ""),
        }
        object_key = "/".join((involved["kind"], involved["namespace"], involved["name"], involved["uid"]))
        key = (object_key, event_type, reason, message)
        now = self._clock.now()
        # core/v1 Event timestamps are metav1.Time: RFC 3339 with whole seconds.
        stamp = self._clock.wall().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._lock:
            if not self._take_token(object_key):
                self.dropped += 1
                return
            aggregate = self._aggregates.get(key)
            if aggregate is not None and now - aggregate.last_seen <= self._window:
                aggregate.count += 1
                aggregate.last_seen = now
                self._aggregates.move_to_end(key)
                patch = {"count": aggregate.count, "lastTimestamp": stamp}
                name, event_namespace = aggregate.name, aggregate.namespace
            else:
                aggregate = None
        if aggregate is not None:
            try:
                self._client.patch(EVENTS, name, patch, event_namespace)
                return
            except NotFound:
                pass  # the Event expired meanwhile: create a new one
            except ApiError as error:
                log.warning("updating event %s failed: %s", name, error)
                return
        wall_ns = int(self._clock.wall().timestamp() * 1e9) + next(self._sequence)
        event_name = f"{involved['name']}.{wall_ns:x}"
        event = {
            "metadata": {"name": event_name, "namespace": namespace},
            "involvedObject": {k: v for k, v in involved.items() if v},
            "reason": reason,
            "message": message,
            "type": event_type,
            "source": {"component": self.component, **({"host": self._host} if self._host else {})},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self._host or self.component,
        }
        try:
            self._client.create(EVENTS, event, namespace)
        except ApiError as error:
            log.warning("creating event %s failed: %s", event_name, error)
            return
        with self._lock:
            self._aggregates[key] = _Aggregate(event_name, namespace, 1, stamp, now)
            self._aggregates.move_to_end(key)
            if len(self._aggregates) > 4096:
                self._aggregates.popitem(last=False)
