"""Rolling a registry's pods without taking registries down together: a PodDisruptionBudget for
registries with more than one replica, and a bound on how many registries the operator rolls at
once for a change of its own (a new sidecar image after an operator upgrade, a renewed certificate
or key) — a change of a registry's own spec is never held back. A held rollout waits for others to
finish; the pods keep running the previous template meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Final

from registry_operator.api import names
from registry_operator.controllers.common import Object, contains
from registry_operator.controllers.imageregistry.base import RegistryPart
from registry_operator.controllers.imageregistry.context import RegistryContext, child_labels, child_metadata
from registry_operator.controllers.resources import POD_DISRUPTION_BUDGETS, STATEFULSETS
from registry_operator.kube import objects

# Look again this often while a rollout waits for others to finish.
DEFERRED_ROLLOUT_RECHECK_SECONDS: Final = 5.0
# Rollouts this process started: StatefulSet key → the generation it applied (see Rollouts.roll).
_STARTED: dict[str, int] = {}
_ROLLOUT_LOCK: Final = threading.Lock()


def desired_pdb(ctx: RegistryContext) -> Object:
    """At most one registry pod voluntarily disrupted (drained, evicted) at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(ctx, names.registry_statefulset_name(ctx.name)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": child_labels(ctx)["app"]}}},
    }


def is_rolling(statefulset: Mapping[str, Any]) -> bool:
    """Whether the StatefulSet is replacing pods: a template change not yet observed or not yet on
    every replica. (Pods that are merely not ready, at the current revision, do not count.)"""
    status = statefulset.get("status") or {}
    if int(status.get("observedGeneration") or 0) < objects.generation(statefulset):
        return True
    update, current = status.get("updateRevision"), status.get("currentRevision")
    if update and current and update != current:
        return True
    replicas = int((statefulset.get("spec") or {}).get("replicas") or 0)
    return int(status.get("updatedReplicas") or 0) < replicas


def is_settled(current: Mapping[str, Any] | None, desired: Mapping[str, Any], replicas: int) -> bool:
    """Whether every replica runs `desired`'s pod template, updated and ready (a complete rollout)."""
    if current is None or would_roll(current, desired) or is_rolling(current):
        return False
    status = current.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    return ready >= replicas and int(status.get("replicas") or 0) == replicas


def would_roll(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether applying `desired` replaces the pods (a changed pod template)."""
    if current is None:
        return False
    return not contains((current.get("spec") or {}).get("template"), desired["spec"]["template"])


class Rollouts(RegistryPart):
    def ensure_pdb(self, ctx: RegistryContext) -> None:
        name = names.registry_statefulset_name(ctx.name)
        current = self._stores.pdbs.get_by_name(ctx.namespace, name)
        if ctx.spec.replicas > 1:
            self._apply(POD_DISRUPTION_BUDGETS, desired_pdb(ctx), current)
        elif current is not None and objects.uid(current) and self._owned(current, ctx):
            # One replica: a budget of maxUnavailable 1 would only block node drains for nothing.
            self._client.delete(
                POD_DISRUPTION_BUDGETS, name, ctx.namespace, uid=objects.uid(current), missing_ok=True
            )

    @staticmethod
    def _owned(obj: Mapping[str, Any], ctx: RegistryContext) -> bool:
        return any(ref.get("uid") == ctx.uid for ref in objects.owner_references(obj))

    def roll(
        self,
        ctx: RegistryContext,
        current: Mapping[str, Any] | None,
        desired: Object,
        *,
        spec_changed: bool,
    ) -> tuple[Object | None, str | None]:
        """Apply the StatefulSet unless the roll must wait: (the StatefulSet as applied, None) or
        (None, why it waits). Serialised across workers, and a roll this process just started counts
        as rolling until the cache has seen its new generation, so parallel reconciles and a lagging
        cache cannot start more rollouts than the bound."""
        rolls = would_roll(current, desired)
        with _ROLLOUT_LOCK:
            if rolls and not spec_changed:
                waiting = self._rolling_elsewhere(ctx)
                limit = self._settings.max_concurrent_rollouts
                if waiting >= limit:
                    return None, (
                        f"pod update waits: {waiting} other registries are rolling out "
                        f"(at most {limit} at once, OPERATOR_MAX_CONCURRENT_ROLLOUTS)"
                    )
            # Conditional: the template carries hashes of cached config and certificates, so a
            # writer with an older cache (a deposed leader) would roll the pods back to them.
            applied = self._apply(
                STATEFULSETS, desired, dict(current) if current is not None else None, conditional=True
            )
            if rolls:
                _STARTED[objects.key(applied)] = objects.generation(applied)
        return applied, None

    def _rolling_elsewhere(self, ctx: RegistryContext) -> int:
        own = f"{ctx.namespace}/{names.registry_statefulset_name(ctx.name)}"
        count = 0
        for sts in self._stores.statefulsets.list(copy=False):
            key = objects.key(sts)
            if key == own:
                continue
            started = _STARTED.get(key)
            if started is not None and objects.generation(sts) >= started and not is_rolling(sts):
                del _STARTED[key]  # done: the cache shows it rolled out
                started = None
            if started is not None or is_rolling(sts):
                count += 1
        return count
