"""Transforms: what an informer keeps of each object (client-go's SetTransform, controller-runtime's
cache transforms).

A transform runs on every object before it is stored. The default drops `metadata.managedFields`
and kubectl's last-applied-configuration annotation, which often outweigh the rest of an object and
are never read from a cache.
"""

from __future__ import annotations

from collections.abc import Callable

from registry_operator.kube.cache import Object

LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"

# Runs on every object an informer receives (listed or watched, deletions included) before it is
# stored or handed to a handler. It may change the object in place and must return it; it must be
# cheap, pure and keep metadata.name/namespace/resourceVersion.
Transform = Callable[[Object], Object]


def strip_managed_fields(obj: Object) -> Object:
    """Drop `metadata.managedFields` (server-side apply bookkeeping; a PUT without it keeps it)."""
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    return obj


def strip_managed_fields_and_last_applied(obj: Object) -> Object:
    """The default transform: `strip_managed_fields`, and kubectl's last-applied-configuration
    annotation (a full copy of the object as last applied).

    Not for objects written back with a PUT of the cached copy: the PUT would drop the annotation
    from the object and break the user's next `kubectl apply` (use `strip_managed_fields` there).
    """
    strip_managed_fields(obj)
    annotations = (obj.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict) and LAST_APPLIED_ANNOTATION in annotations:
        del annotations[LAST_APPLIED_ANNOTATION]
        if not annotations:
            del obj["metadata"]["annotations"]
    return obj


DEFAULT_TRANSFORM: Transform = strip_managed_fields_and_last_applied
