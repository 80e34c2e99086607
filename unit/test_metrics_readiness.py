"""registry_operator_ready: computed at scrape time from the listed objects' Ready conditions."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from registry_operator.metrics import READY_METRIC, ReadinessCollector


def _obj(namespace: str, name: str, ready: str | None) -> dict[str, Any]:
    conditions = [] if ready is None else [{"type": "Ready", "status": ready, "reason": "X"}]
    return {"metadata": {"namespace": namespace, "name": name}, "status": {"conditions": conditions}}


def test_ready_is_one_only_for_ready_true_and_follows_the_objects() -> None:
    objects = [_obj("a", "ok", "True"), _obj("a", "bad", "False"), _obj("b", "new", None)]
    collector = ReadinessCollector()
    collector.watch("ImageRegistry", lambda: list(objects))
    registry = CollectorRegistry()
    registry.register(collector)

    def value(name: str) -> float | None:
        labels = {"kind": "ImageRegistry", "namespace": "a" if name != "new" else "b", "name": name}
        return registry.get_sample_value(READY_METRIC, labels)

    assert (value("ok"), value("bad"), value("new")) == (1.0, 0.0, 0.0)
    objects[1] = _obj("a", "bad", "True")
    del objects[0]  # a deleted object's series disappears
    assert (value("ok"), value("bad")) == (None, 1.0)
    assert b"# TYPE registry_operator_ready gauge" in generate_latest(registry)
