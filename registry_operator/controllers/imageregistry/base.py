"""What every part of the ImageRegistry reconciler shares: the caches it reads (`RegistryStores`),
writes of children that turn errors retrying cannot fix into a `Problem`, and Events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from registry_operator.api import constants as c
from registry_operator.config import Settings
from registry_operator.controllers.common import Object, ensure, ensure_conditionally
from registry_operator.controllers.status import Problem
from registry_operator.kube import objects
from registry_operator.kube.cache import Store
from registry_operator.kube.client import Client
from registry_operator.kube.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Forbidden,
    Invalid,
    MethodNotAllowed,
    NotFound,
)
from registry_operator.kube.events import EventRecorder
from registry_operator.kube.resources import Resource

# After an error retrying cannot fix (invalid object, missing permission or CRD), look again this
# often even without an event: an administrator may have fixed the cluster in the meantime.
PERSISTENT_ERROR_RECHECK: Final = timedelta(minutes=5)
# 4xx answers that the same request will get again until someone changes the object or the cluster.
PERSISTENT_API_ERRORS: Final = (BadRequest, Forbidden, Invalid, MethodNotAllowed, NotFound, AlreadyExists)


@dataclass(frozen=True)
class RegistryStores:
    """The caches the reconciler reads."""

    registries: Store
    statefulsets: Store
    services: Store
    managed_secrets: Store  # secrets the operator generates (label-scoped)
    referenced_secrets: Store  # users' and cert-manager's TLS Secrets, S3 credentials (by name)
    root_ca: Store  # the root CA secret in the operator namespace
    config_maps: Store
    service_accounts: Store
    roles: Store
    role_bindings: Store
    pvcs: Store
    pdbs: Store = field(default_factory=Store)
    jobs: Store = field(default_factory=Store)  # garbage collection Jobs (owned)
    gc_pods: Store = field(default_factory=Store)  # their pods (label-scoped), for the report


def is_managed(obj: Mapping[str, Any]) -> bool:
    return objects.labels(obj).get(c.LABEL_MANAGED_BY) == c.MANAGED_BY_VALUE


def api_problem(action: str, error: ApiError, hint: str = "") -> Problem:
    return Problem(
        c.REASON_FAILED_SYNC,
        f"{action}: {error.reason}: {error.message}{hint}",
        requeue_after=PERSISTENT_ERROR_RECHECK,
    )


class RegistryPart:
    """Base of the reconciler's parts: the API client, caches, settings and Event recorder."""

    def __init__(
        self, client: Client, stores: RegistryStores, settings: Settings, recorder: EventRecorder | None
    ) -> None:
        self._client = client
        self._stores = stores
        self._settings = settings
        self._recorder = recorder

    def _ensure_cached(
        self, resource: Resource, desired: Object, store: Store, *, conditional: bool = False
    ) -> Object:
        metadata = desired["metadata"]
        current = store.get_by_name(metadata["namespace"], metadata["name"])
        return self._apply(resource, desired, current, conditional=conditional)

    def _apply(
        self,
        resource: Resource,
        desired: Object,
        current: Object | None,
        *,
        hint: str = "",
        conditional: bool = False,
    ) -> Object:
        """`ensure()` (`ensure_conditionally()` if `conditional`), with errors that retrying cannot
        fix turned into a Problem."""
        write = ensure_conditionally if conditional else ensure
        try:
            return write(self._client, resource, desired, current)
        except PERSISTENT_API_ERRORS as error:
            raise api_problem(f"apply {resource.kind} {desired['metadata']['name']}", error, hint) from error

    def _event(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        if self._recorder is not None:
            self._recorder.event(obj, event_type, reason, message)
