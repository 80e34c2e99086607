"""Readiness of a registry: the StatefulSet rollout as the Ready condition sees it, and the status
(`hostname`, `tlsSecretName`, `Ready`, `Synced`) with its Events: a Warning when a problem appears,
a Normal one when the registry becomes Ready.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from registry_operator.api import constants as c
from registry_operator.api.imageregistry import (
    GarbageCollectionStatus,
    ImageRegistryStatus,
    TokenKeyStatus,
    TrustStatus,
)
from registry_operator.controllers import tenancy
from registry_operator.controllers.common import Object
from registry_operator.controllers.imageregistry.base import RegistryPart
from registry_operator.controllers.imageregistry.keys import TokenKey
from registry_operator.controllers.resources import IMAGE_REGISTRIES
from registry_operator.controllers.status import (
    ConditionValue,
    Problem,
    condition_changed,
    read_status,
    update_status,
)
from registry_operator.kube import objects
from registry_operator.passwords import HashScheme

log = structlog.get_logger(__name__)

# What this operator's authn sidecar verifies (passwords.verify_password).
SIDECAR_PASSWORD_SCHEMES = (HashScheme.BCRYPT, HashScheme.SALTED_SHA256_V1)
TOKEN_KEY_PHASES = frozenset(
    {c.ROLLOVER_STABLE, c.ROLLOVER_DISTRIBUTING, c.ROLLOVER_SWITCHING, c.ROLLOVER_RETIRING}
)


@dataclass(frozen=True)
class Rollout:
    """The Ready condition's view of the StatefulSet."""

    ready: bool
    message: str


def rollout_state(statefulset: Mapping[str, Any] | None, desired_replicas: int) -> Rollout:
    """Ready once the StatefulSet controller has seen the current spec and every desired pod is
    updated and ready (and no surplus pod is left)."""
    if statefulset is None:
        return Rollout(False, f"0/{desired_replicas} pods updated: the StatefulSet does not exist yet")
    generation = (statefulset.get("metadata") or {}).get("generation") or 0
    status = statefulset.get("status") or {}
    if (status.get("observedGeneration") or 0) < generation:
        return Rollout(
            False, f"0/{desired_replicas} pods updated: the StatefulSet change is not observed yet"
        )
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    current = int(status.get("replicas") or 0)
    if updated >= desired_replicas and ready >= desired_replicas and current == desired_replicas:
        return Rollout(True, f"{ready}/{desired_replicas} pods ready")
    return Rollout(
        False,
        f"{min(updated, desired_replicas)}/{desired_replicas} pods updated, "
        f"{min(ready, desired_replicas)}/{desired_replicas} ready"
        + (f", {current - desired_replicas} surplus pods terminating" if current > desired_replicas else ""),
    )


class Readiness(RegistryPart):
    """Writes a registry's status from what one reconcile found."""

    def report(
        self,
        obj: Object,
        *,
        hostname: str,
        tls_secret_name: str | None,
        problems: Sequence[Problem],
        statefulset: Mapping[str, Any] | None,
        replicas: int,
        deferred: str | None = None,
        now: datetime,
        garbage_collection: GarbageCollectionStatus | None = None,
        trust: TrustStatus | None = None,
        ca_bundle: bytes | None = None,
        token: TokenKey | None = None,
    ) -> None:
        if problems:
            message = "; ".join(problem.message for problem in problems)
            ready = ConditionValue.false(problems[0].reason, message)
            synced = ConditionValue.false(problems[0].reason, message, c.CONDITION_SYNCED)
        else:
            synced = (
                ConditionValue.false(c.REASON_PENDING, deferred, c.CONDITION_SYNCED)
                if deferred is not None
                else ConditionValue.true(
                    c.REASON_SYNCED, "all objects of the registry are up to date", c.CONDITION_SYNCED
                )
            )
            rollout = rollout_state(statefulset, replicas)
            ready = (
                ConditionValue.true(c.REASON_AVAILABLE, rollout.message)
                if rollout.ready
                else ConditionValue.false(c.REASON_UPDATING, rollout.message)
            )
        previous = objects.condition(obj, c.CONDITION_READY)
        changed = condition_changed(obj, ready)
        status = read_status(ImageRegistryStatus, obj)
        status.hostname = hostname
        status.tls_secret_name = tls_secret_name
        status.allowed_namespaces = tenancy.describe(obj)
        if not problems and deferred is None and ready.status == "True":
            # Every pod runs the current template, hence this operator's sidecar. Never narrowed
            # later: a sidecar only ever rolls forward to a version that verifies the same schemes.
            status.password_schemes = [scheme.value for scheme in SIDECAR_PASSWORD_SCHEMES]
        if garbage_collection is not None:
            status.garbage_collection = garbage_collection
        if trust is not None:
            # Only a reconcile that got this far knows them; a failing one keeps what was published.
            status.trust = trust
            status.ca_bundle = ca_bundle.decode("ascii") if ca_bundle else None
        if token is not None:
            status.token_key = TokenKeyStatus(
                phase=token.phase if token.phase in TOKEN_KEY_PHASES else "Stable",  # type: ignore[arg-type]
                since=token.since,
                message=token.reason if token.phase != c.ROLLOVER_STABLE else None,
            )
        update_status(self._client, IMAGE_REGISTRIES, obj, status, now, ready, synced)
        if not changed:
            return
        if problems and problems[0].event_type is not None:
            log.warning("registry not ready", reason=ready.reason, message=ready.message)
            self._event(obj, problems[0].event_type, ready.reason, ready.message)
        elif ready.status == "True" and (previous is None or previous.get("status") != "True"):
            log.info("registry ready", message=ready.message)
            self._event(obj, "Normal", ready.reason, ready.message)
