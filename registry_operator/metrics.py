"""The operator's own Prometheus metrics (the framework's live in `kube/metrics.py`).

They are registered in the same registry the manager serves on `/metrics`, so one scrape shows
both. Label values never carry credentials: only namespaces, CR names and kinds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import Counter, Gauge
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from registry_operator.api.constants import KIND_IMAGE_PULL_SECRET, KIND_IMAGE_PUSH_SECRET
from registry_operator.kube.metrics import REGISTRY

SECRET_KINDS: Final = (KIND_IMAGE_PUSH_SECRET, KIND_IMAGE_PULL_SECRET)

CREDENTIAL_EXPIRY = Gauge(
    "registry_operator_credential_expiry_timestamp_seconds",
    "Unix time at which the current credentials of an ImagePushSecret or ImagePullSecret expire "
    "(they are rotated halfway through their lifetime; alert when this comes close to now)",
    ["namespace", "name", "kind"],
    registry=REGISTRY,
)
ROTATIONS = Counter(
    "registry_operator_rotations_total",
    "Credentials issued (a new account and Secret content) per kind",
    ["kind"],
    registry=REGISTRY,
)
ROTATION_ERRORS = Counter(
    "registry_operator_rotation_errors_total",
    "Rotations that failed after they had started (creating the account or writing the Secret)",
    ["kind"],
    registry=REGISTRY,
)
NAMESPACE_REFUSALS = Counter(
    "registry_operator_namespace_refusals_total",
    "Push/pull secret CRs refused credentials because the registry's spec.auth.namespaces does not "
    "admit their namespace (counted when a CR becomes refused)",
    ["registry"],
    registry=REGISTRY,
)

# Every kind's counters exist from the start, so rate() and absent() alerts work before the first event.
for _kind in SECRET_KINDS:
    ROTATIONS.labels(kind=_kind)
    ROTATION_ERRORS.labels(kind=_kind)


def set_credential_expiry(namespace: str, name: str, kind: str, expiry_timestamp: float) -> None:
    CREDENTIAL_EXPIRY.labels(namespace=namespace, name=name, kind=kind).set(expiry_timestamp)


def forget_credential_expiry(namespace: str, name: str, kind: str) -> None:
    """Drop the series of a CR that is gone (a stale series would alert forever)."""
    with contextlib.suppress(KeyError):
        CREDENTIAL_EXPIRY.remove(namespace, name, kind)


READY_METRIC: Final = "registry_operator_ready"

# kind -> a function listing that kind's objects (the informer caches of the running controllers)
ObjectLister = Callable[[], Iterable[Mapping[str, Any]]]


def _ready_condition_true(obj: Mapping[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class ReadinessCollector(Collector):
    """`registry_operator_ready{kind,namespace,name}`: 1 while the object's Ready condition is True,
    else 0. Computed at scrape time from the informer caches, so it always matches the objects'
    status and a deleted object's series disappears with it."""

    def __init__(self) -> None:
        self._listers: dict[str, ObjectLister] = {}

    def watch(self, kind: str, lister: ObjectLister) -> None:
        self._listers[kind] = lister

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            READY_METRIC,
            "1 while the object's Ready condition is True, else 0 (per kind, namespace and name)",
            labels=["kind", "namespace", "name"],
        )
        for kind, lister in sorted(self._listers.items()):
            for obj in lister():
                metadata = obj.get("metadata") or {}
                labels = [kind, str(metadata.get("namespace", "")), str(metadata.get("name", ""))]
                family.add_metric(labels, 1.0 if _ready_condition_true(obj) else 0.0)
        yield family


READINESS = ReadinessCollector()
REGISTRY.register(READINESS)
