"""Small building blocks every reconciler uses: owner references, writing children without
steady-state writes, base64 secret data. (Status and conditions: status.py.)
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from registry_operator.api import constants as c
from registry_operator.kube import objects
from registry_operator.kube.client import Client
from registry_operator.kube.resources import Resource

Object = dict[str, Any]

# One field manager for everything the operator applies; server-side apply then removes fields that
# an older operator version set but the current one no longer renders.
FIELD_MANAGER = "registry-operator"

# Every object the operator creates carries this label, and its informers select on it: the caches
# then hold the operator's own objects, not every Secret or ConfigMap of the cluster.
MANAGED_LABELS: Final = {c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE}
MANAGED_LABEL_SELECTOR: Final = f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY_VALUE}"


class EventSink(Protocol):
    """What reconcilers need of an Event recorder (kube.events.EventRecorder; a list in unit tests).
    Never pass a secret in a reason or message."""

    def normal(self, obj: Mapping[str, Any], reason: str, message: str) -> None: ...

    def warning(self, obj: Mapping[str, Any], reason: str, message: str) -> None: ...


def now_utc() -> datetime:
    return datetime.now(UTC)


def controller_ref(owner: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference that makes `owner` the controller (garbage collection, owned watches)."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": objects.metadata(owner)["name"],
        "uid": objects.metadata(owner)["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_controlled_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    return controlled_by_uid(obj, objects.uid(owner))


def controlled_by_uid(obj: Mapping[str, Any], owner_uid: str | None) -> bool:
    """Whether the object's controller ownerReference points at `owner_uid`."""
    return owner_uid is not None and any(
        ref.get("controller") and ref.get("uid") == owner_uid
        for ref in objects.metadata(obj).get("ownerReferences") or []
    )


def contains(actual: Any, desired: Any) -> bool:
    """Whether every field set in `desired` has the same value in `actual` (lists compared whole).

    This is how a reconciler decides that an object already is as desired without writing: the API
    server adds defaults and other managers' fields, which must not count as a difference.
    """
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and contains(actual[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(desired)
            and all(contains(a, d) for a, d in zip(actual, desired, strict=True))
        )
    return bool(actual == desired)


def ensure(client: Client, resource: Resource, desired: Object, current: Mapping[str, Any] | None) -> Object:
    """Server-side apply `desired` unless `current` (usually from the cache) already contains it.

    Only the fields in `desired` are owned by the operator: labels, annotations and fields other
    managers or users add are kept.
    """
    if current is not None and contains(current, desired):
        return dict(current)
    return client.apply(resource, desired, field_manager=FIELD_MANAGER, force=True)


def ensure_conditionally(
    client: Client, resource: Resource, desired: Object, current: Mapping[str, Any] | None
) -> Object:
    """`ensure()` for objects whose desired state comes from cached inputs that move on (a config
    hash, another object's content), so a writer with an older cache, such as a deposed leader, must
    not roll them back: the apply carries the resourceVersion the decision was made on, and a newer
    writer makes it fail with Conflict (the next pass decides again on fresher data).

    An object not in the cache yet is applied as `ensure()` does: a create-if-absent would leave its
    fields owned by an Update entry that no later apply prunes. What a stale writer can do there is
    create what it would have created anyway, or overwrite an object created a moment ago, which the
    leader's next pass (it sees the write through its watch) applies again under a precondition.
    """
    if current is None or contains(current, desired):
        return ensure(client, resource, desired, current)
    metadata = {**desired["metadata"], "resourceVersion": objects.resource_version(current)}
    return client.apply(resource, {**desired, "metadata": metadata}, field_manager=FIELD_MANAGER, force=True)


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def secret_data(values: Mapping[str, str | bytes]) -> dict[str, str]:
    """Secret `data` (base64) from plain values; never use stringData, which the API doesn't return."""
    return {key: b64(value) for key, value in values.items()}


def decode_secret_data(secret: Mapping[str, Any] | None) -> dict[str, bytes]:
    data: Mapping[str, str] = (secret or {}).get("data") or {}
    return {key: base64.b64decode(value) for key, value in data.items()}


def parse_time(text: Any) -> datetime | None:
    """An RFC 3339 time as the API writes it; None for anything else."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def key_of(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"
