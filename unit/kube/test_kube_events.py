"""Event recorder: content, aggregation, per-object rate limit, asynchronous delivery."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

from registry_operator.kube.clock import FakeClock
from registry_operator.kube.errors import NotFound
from registry_operator.kube.events import EventRecorder
from registry_operator.kube.resources import EVENTS, Resource

REGISTRY: dict[str, Any] = {
    "apiVersion": "registry.example.com/v1alpha1",
    "kind": "ImageThing",
    "metadata": {"name": "reg", "namespace": "team", "uid": "u-1", "resourceVersion": "42"},
}


class FakeWriter:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.patched: list[tuple[str, dict[str, Any], str | None]] = []
        self.lock = threading.Lock()
        self.patch_error: Exception | None = None

    def create(self, resource: Resource, obj: Mapping[str, Any], namespace: str | None = None) -> Any:
        assert resource is EVENTS
        with self.lock:
            self.created.append(dict(obj))
        return obj

    def patch(self, resource: Resource, name: str, patch: Any, namespace: str | None = None) -> Any:
        assert resource is EVENTS
        if self.patch_error is not None:
            raise self.patch_error
        with self.lock:
            self.patched.append((name, patch, namespace))
        return patch


def test_event_content() -> None:
    writer, clock = FakeWriter(), FakeClock()
    recorder = EventRecorder(writer, "registry-operator", host="node-1", clock=clock)
    recorder.record_now(REGISTRY, "Warning", "RotationFailed", "x" * 5000)
    (event,) = writer.created
    assert event["metadata"]["namespace"] == "team"
    assert event["metadata"]["name"].startswith("reg.")
    assert event["involvedObject"] == {
        "apiVersion": "registry.example.com/v1alpha1",
        "kind": "ImageThing",
        "name": "reg",
        "namespace": "team",
        "uid": "u-1",
        "resourceVersion": "42",
    }
    assert (event["type"], event["reason"], event["count"]) == ("Warning", "RotationFailed", 1)
    assert len(event["message"]) == 5000  # record_now writes as given; event() truncates
    assert event["source"] == {"component": "registry-operator", "host": "node-1"}
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2030-01-01T00:00:00Z"


def test_repeated_event_bumps_the_count_instead_of_creating_a_new_one() -> None:
    writer, clock = FakeWriter(), FakeClock()
    recorder = EventRecorder(writer, "op", clock=clock)
    recorder.record_now(REGISTRY, "Normal", "Rotated", "rotated credentials")
    clock.step(30)
    recorder.record_now(REGISTRY, "Normal", "Rotated", "rotated credentials")
    recorder.record_now(REGISTRY, "Normal", "Rotated", "rotated credentials")
    assert len(writer.created) == 1
    name = writer.created[0]["metadata"]["name"]
    assert [(n, p["count"], ns) for n, p, ns in writer.patched] == [(name, 2, "team"), (name, 3, "team")]
    assert writer.patched[0][1]["lastTimestamp"] == "2030-01-01T00:00:30Z"
    recorder.record_now(REGISTRY, "Normal", "Rotated", "a different message")
    assert len(writer.created) == 2


def test_aggregation_window_expires() -> None:
    writer, clock = FakeWriter(), FakeClock()
    recorder = EventRecorder(writer, "op", clock=clock, aggregation_window=600)
    recorder.record_now(REGISTRY, "Normal", "Synced", "ok")
    clock.step(601)
    recorder.record_now(REGISTRY, "Normal", "Synced", "ok")
    assert len(writer.created) == 2
    assert writer.patched == []


def test_aggregated_event_that_vanished_is_created_again() -> None:
    writer, clock = FakeWriter(), FakeClock()
    recorder = EventRecorder(writer, "op", clock=clock)
    recorder.record_now(REGISTRY, "Normal", "Synced", "ok")
    writer.patch_error = NotFound(404, "NotFound", "event expired")
    recorder.record_now(REGISTRY, "Normal", "Synced", "ok")
    assert len(writer.created) == 2


def test_per_object_rate_limit_burst_25_then_one_per_five_minutes() -> None:
    writer, clock = FakeWriter(), FakeClock()
    recorder = EventRecorder(writer, "op", clock=clock)
    for i in range(30):
        recorder.record_now(REGISTRY, "Normal", "Step", f"step {i}")
    assert len(writer.created) == 25
    assert recorder.dropped == 5
    other = {**REGISTRY, "metadata": {**REGISTRY["metadata"], "name": "other", "uid": "u-2"}}
    recorder.record_now(other, "Normal", "Step", "independent bucket")
    assert len(writer.created) == 26
    clock.step(300)
    recorder.record_now(REGISTRY, "Normal", "Step", "after refill")
    recorder.record_now(REGISTRY, "Normal", "Step", "no token left")
    assert len(writer.created) == 27


def test_cluster_scoped_objects_get_events_in_default() -> None:
    writer = FakeWriter()
    recorder = EventRecorder(writer, "op", clock=FakeClock())
    recorder.record_now(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}, "Normal", "X", "y"
    )
    assert writer.created[0]["metadata"]["namespace"] == "default"
    assert "namespace" not in writer.created[0]["involvedObject"]


def test_event_is_asynchronous_and_flush_waits_for_it() -> None:
    writer = FakeWriter()
    recorder = EventRecorder(writer, "op", clock=FakeClock())
    recorder.normal(REGISTRY, "Created", "created the registry StatefulSet")
    recorder.warning(REGISTRY, "Failed", "y" * 5000)
    assert recorder.flush(5)
    assert [e["type"] for e in writer.created] == ["Normal", "Warning"]
    assert len(writer.created[1]["message"]) == 1024
    recorder.close()


def test_invalid_type_is_rejected() -> None:
    with pytest.raises(ValueError):
        EventRecorder(FakeWriter(), "op").event(REGISTRY, "Error", "X", "y")
