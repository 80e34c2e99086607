"""Typed read accessors for Kubernetes objects kept as plain JSON dicts.

Objects stay dicts on hot paths (informer events, cache, reconcile), but code reads them through
these few functions instead of `obj["metadata"]["name"]` chains, so a missing field has one
well-defined answer (empty string, empty mapping, None) everywhere.
"""

from collections.abc import Mapping
from typing import Any

Object = dict[str, Any]


def metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = obj.get("metadata") or {}
    return meta


def name(obj: Mapping[str, Any]) -> str:
    return str(metadata(obj).get("name") or "")


def namespace(obj: Mapping[str, Any]) -> str:
    return str(metadata(obj).get("namespace") or "")


def uid(obj: Mapping[str, Any]) -> str:
    return str(metadata(obj).get("uid") or "")


def resource_version(obj: Mapping[str, Any]) -> str:
    return str(metadata(obj).get("resourceVersion") or "")


def generation(obj: Mapping[str, Any]) -> int:
    return int(metadata(obj).get("generation") or 0)


def labels(obj: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = metadata(obj).get("labels") or {}
    return found


def annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = metadata(obj).get("annotations") or {}
    return found


def finalizers(obj: Mapping[str, Any]) -> list[str]:
    found: list[str] = metadata(obj).get("finalizers") or []
    return found


def owner_references(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = metadata(obj).get("ownerReferences") or []
    return found


def creation_timestamp(obj: Mapping[str, Any]) -> str:
    return str(metadata(obj).get("creationTimestamp") or "")


def is_deleting(obj: Mapping[str, Any]) -> bool:
    return bool(metadata(obj).get("deletionTimestamp"))


def key(obj: Mapping[str, Any]) -> str:
    """The cache key `namespace/name` (just `name` for cluster-scoped objects)."""
    ns = namespace(obj)
    return f"{ns}/{name(obj)}" if ns else name(obj)


def conditions(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (obj.get("status") or {}).get("conditions") or []
    return found


def condition(obj: Mapping[str, Any], condition_type: str) -> dict[str, Any] | None:
    return next((c for c in conditions(obj) if c.get("type") == condition_type), None)
