"""The ImageRegistry reconciler: reads the registry, asks each part for its objects, rolls the
StatefulSet only when every part succeeded, writes the status and schedules the next renewal.
Its caches and watches are wired in watches.py (see the package docstring).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, TypeVar

import structlog
from pydantic import ValidationError

from registry_operator import dockerauth, pki
from registry_operator.api import constants as c
from registry_operator.api import names
from registry_operator.api.imageregistry import ImageRegistry, ImageRegistryStatus, TrustStatus
from registry_operator.config import Settings
from registry_operator.controllers.common import Object, now_utc
from registry_operator.controllers.imageregistry.base import (
    PERSISTENT_ERROR_RECHECK,
    RegistryPart,
    RegistryStores,
)
from registry_operator.controllers.imageregistry.config import RegistryConfig
from registry_operator.controllers.imageregistry.context import RegistryContext
from registry_operator.controllers.imageregistry.garbagecollection import GarbageCollector
from registry_operator.controllers.imageregistry.garbagecollection import Plan as GarbageCollectionPlan
from registry_operator.controllers.imageregistry.keys import GeneratedSecrets, TlsMaterial, TokenKey
from registry_operator.controllers.imageregistry.readiness import Readiness
from registry_operator.controllers.imageregistry.rollout import (
    DEFERRED_ROLLOUT_RECHECK_SECONDS,
    Rollouts,
    is_settled,
)
from registry_operator.controllers.imageregistry.storage import credentials_fingerprint
from registry_operator.controllers.imageregistry.tls import ServingTls
from registry_operator.controllers.imageregistry.workload import (
    Workload,
    desired_role,
    desired_role_binding,
    desired_service,
    desired_service_account,
    desired_statefulset,
)
from registry_operator.controllers.resources import ROLE_BINDINGS, ROLES, SERVICE_ACCOUNTS, SERVICES
from registry_operator.controllers.status import Problem, read_status, requeue_seconds
from registry_operator.controllers.trust import CurrentTls, TrustPlan, plan_trust
from registry_operator.kube import objects
from registry_operator.kube.client import Client
from registry_operator.kube.controller import Request, Result
from registry_operator.kube.errors import ApiError, Conflict
from registry_operator.kube.events import EventRecorder

log = structlog.get_logger(__name__)

# Past a renewal instant, so a timer that fires a little early does not just requeue again.
RENEWAL_MARGIN: Final = timedelta(seconds=2)
# While the pods wait for a new CA to be out, look again this often (derived Secrets are not watched).
TRUST_RECHECK: Final = timedelta(seconds=5)

T = TypeVar("T")
__all__ = ["PERSISTENT_ERROR_RECHECK", "ImageRegistryReconciler", "RegistryStores"]


@dataclass
class Outcome:
    """What one reconcile found, for the status and the requeue."""

    problems: list[Problem] = field(default_factory=list)
    statefulset: Object | None = None
    renewals: list[datetime] = field(default_factory=list)
    deferred: str | None = None  # why the pods wait for other registries' rollouts
    garbage_collection: GarbageCollectionPlan | None = None
    trust: TrustStatus | None = None
    ca_bundle: bytes | None = None
    token: TokenKey | None = None
    held: bool = False  # the pods stay on the served certificate until the new CA is out
    trust_was_changing: bool = False  # a held TLS switch may just have been let through

    def attempt(self, step: Callable[[], T]) -> T | None:
        """Run `step`; a Problem is recorded (and None returned), anything else propagates."""
        try:
            return step()
        except Problem as problem:
            self.problems.append(problem)
            return None


class ImageRegistryReconciler(RegistryPart):
    def __init__(
        self,
        client: Client,
        stores: RegistryStores,
        settings: Settings,
        *,
        recorder: EventRecorder | None = None,
        now: Callable[[], datetime] = now_utc,
        server_key_size: int = pki.SERVER_KEY_SIZE,
        token_key_size: int = pki.TOKEN_KEY_SIZE,
    ) -> None:
        super().__init__(client, stores, settings, recorder)
        self._now = now
        parts = (client, stores, settings, recorder)
        self._generated = GeneratedSecrets(*parts, token_key_size=token_key_size)
        self._tls = ServingTls(*parts, generated=self._generated, server_key_size=server_key_size)
        self._config = RegistryConfig(*parts)
        self._workload = Workload(*parts)
        self._readiness = Readiness(*parts)
        self._rollouts = Rollouts(*parts)
        self._gc = GarbageCollector(*parts)

    def reconcile(self, request: Request) -> Result | None:
        obj = self._stores.registries.get_by_name(request.namespace, request.name)
        if obj is None or objects.is_deleting(obj):
            return None
        hostname = names.registry_hostname(request.name, request.namespace, self._settings.dns_zone)
        try:
            registry = ImageRegistry.from_dict(obj)
        except ValidationError as error:
            problem = Problem(c.REASON_INVALID_SPEC, f"invalid spec: {_validation_summary(error)}")
            replicas = (obj.get("spec") or {}).get("replicas")
            self._report(
                obj, hostname, None, Outcome(problems=[problem]), replicas if isinstance(replicas, int) else 1
            )
            return None
        now = self._now()
        gc_plan = self._gc.plan(obj, registry.spec, now)
        ctx = RegistryContext(
            name=request.name,
            namespace=request.namespace,
            uid=objects.uid(obj),
            generation=objects.generation(obj),
            hostname=hostname,
            spec=registry.spec,
            storage_read_only=gc_plan.read_only,
        )
        spec_changed = (obj.get("status") or {}).get("observedGeneration") != ctx.generation
        try:
            outcome = self._sync(ctx, now, spec_changed=spec_changed, gc_plan=gc_plan, obj=obj)
        except Conflict:
            raise  # a stale cache: retry with fresh data; nothing to tell the user
        except ApiError as error:
            # Transient (5xx, timeouts, throttling): say so in the status, then retry with backoff.
            failed = Outcome(problems=[Problem(c.REASON_FAILED_SYNC, f"API request failed: {error}")])
            try:
                self._report(obj, hostname, ctx.tls_secret_name, failed, ctx.spec.replicas)
            except ApiError as status_error:
                log.warning("writing the failure status failed", error=str(status_error))
            raise
        settling = spec_changed or outcome.trust_was_changing
        if settling and not outcome.problems and outcome.statefulset is not None and not outcome.held:
            # Only once the pods are told to use the new TLS source, and once per spec change.
            outcome.attempt(lambda: self._tls.remove_unused(ctx))
        self._report(obj, hostname, ctx.tls_secret_name, outcome, ctx.spec.replicas)
        return self._requeue(outcome, now)

    def _sync(
        self,
        ctx: RegistryContext,
        now: datetime,
        *,
        spec_changed: bool,
        gc_plan: GarbageCollectionPlan,
        obj: Object,
    ) -> Outcome:
        outcome = Outcome(garbage_collection=gc_plan)
        if gc_plan.problem is not None:
            outcome.problems.append(gc_plan.problem)
        tls = outcome.attempt(lambda: self._tls.material(ctx, now))
        token = outcome.attempt(lambda: self._generated.token_key(ctx, now))
        http_secret = outcome.attempt(lambda: self._generated.http_secret(ctx))
        configs = outcome.attempt(lambda: self._config.ensure(ctx))
        storage_credentials = outcome.attempt(
            lambda: credentials_fingerprint(ctx, self._stores.referenced_secrets)
        )
        for resource, desired, store in (
            (SERVICE_ACCOUNTS, desired_service_account(ctx), self._stores.service_accounts),
            (ROLES, desired_role(ctx), self._stores.roles),
            (ROLE_BINDINGS, desired_role_binding(ctx), self._stores.role_bindings),
            (SERVICES, desired_service(ctx), self._stores.services),
        ):
            outcome.attempt(functools.partial(self._ensure_cached, resource, desired, store))
        outcome.attempt(lambda: self._workload.ensure_pvc(ctx))
        outcome.attempt(lambda: self._rollouts.ensure_pdb(ctx))
        if tls is not None and tls.renewal_at is not None:
            outcome.renewals.append(tls.renewal_at)
        if token is not None:
            outcome.renewals.append(token.material.renewal_at or now)
            if token.phase == c.ROLLOVER_RETIRING and token.since is not None:
                outcome.renewals.append(token.since + self._settings.token_key_retirement)

        current_sts = self._stores.statefulsets.get_by_name(
            ctx.namespace, names.registry_statefulset_name(ctx.name)
        )
        if outcome.problems or tls is None or token is None or http_secret is None or configs is None:
            # Keep the pods on their last good configuration until the problem is fixed.
            outcome.statefulset = current_sts
            # A garbage collection run waiting for read-only pods times out rather than waits forever.
            self._gc.advance(ctx, gc_plan, statefulset=current_sts, desired_statefulset=None, now=now)
            return outcome
        current_tls = self._current_tls(ctx, tls)
        previous = read_status(ImageRegistryStatus, obj)
        outcome.trust_was_changing = previous.trust is not None and previous.trust.phase != "Stable"

        def desired_for(trust_plan: TrustPlan, token_key: TokenKey) -> Object:
            served = trust_plan.hold
            secret_name = served.secret_name if served is not None else tls.secret_name
            tls_fingerprint = served.fingerprint if served is not None else current_tls.fingerprint
            config_hash = dockerauth.config_hash(
                *configs,
                secret_name,
                tls_fingerprint,
                pki.certs_fingerprint(token_key.material.parsed.chain),
                pki.certs_fingerprint(token_key.bundle),
                http_secret,
                storage_credentials,
            )
            return desired_statefulset(
                ctx,
                image_registry=self._settings.image_registry,
                image_auth=self._settings.image_auth,
                image_operator=self._settings.image_authn,
                tls_secret_name=secret_name,
                config_hash=config_hash,
            )

        def plan(settled: bool) -> TrustPlan:
            return plan_trust(
                previous.trust,
                (previous.ca_bundle or "").encode(),
                current_tls,
                now,
                overlap=self._settings.trust_overlap,
                settled=settled,
                served_secret_exists=self._secret_exists(ctx, previous.trust),
                derived_secrets=self._stores.managed_secrets.list(copy=False),
                hostname=ctx.hostname,
            )

        # Whether every replica runs what this reconcile would apply: only then may a rollover advance.
        trust_plan = plan(False)
        desired = desired_for(trust_plan, token)
        settled = is_settled(current_sts, desired, ctx.spec.replicas)
        if settled:
            trust_plan = plan(True)
            advanced = outcome.attempt(lambda: self._generated.token_key(ctx, now, settled=True))
            if advanced is not None:
                token = advanced
            desired = desired_for(trust_plan, token)
        outcome.trust, outcome.ca_bundle, outcome.token = trust_plan.status, trust_plan.bundle, token
        if trust_plan.recheck_at is not None:
            outcome.renewals.append(trust_plan.recheck_at)
        rolled = outcome.attempt(
            lambda: self._rollouts.roll(ctx, current_sts, desired, spec_changed=spec_changed)
        )
        if rolled is not None:
            outcome.statefulset, outcome.deferred = rolled
        if outcome.statefulset is None:
            outcome.statefulset = current_sts
        self._gc.advance(ctx, gc_plan, statefulset=outcome.statefulset, desired_statefulset=desired, now=now)
        if trust_plan.hold is not None:
            outcome.held = True
            outcome.renewals.append(now + TRUST_RECHECK)
        return outcome

    def _current_tls(self, ctx: RegistryContext, tls: TlsMaterial) -> CurrentTls:
        authorities = list(tls.parsed.ca_certs)
        if not authorities and len(tls.parsed.chain) > 1:
            authorities = [tls.parsed.chain[-1]]
        return CurrentTls(
            secret_name=tls.secret_name,
            # The chain only: the pods do not mount ca.crt, so a new trust bundle alone rolls nothing.
            fingerprint=pki.certs_fingerprint(tls.parsed.chain),
            leaf=tls.parsed.cert,
            authorities=tuple(pki.unique_certs(authorities)),
        )

    def _secret_exists(self, ctx: RegistryContext, trust: TrustStatus | None) -> bool:
        if trust is None or trust.served is None:
            return False
        name = trust.served.secret_name
        return (
            self._stores.referenced_secrets.get_by_name(ctx.namespace, name, copy=False) is not None
            or self._stores.managed_secrets.get_by_name(ctx.namespace, name, copy=False) is not None
        )

    def _requeue(self, outcome: Outcome, now: datetime) -> Result | None:
        delays = [
            max((when - now).total_seconds(), 0.0) + RENEWAL_MARGIN.total_seconds()
            for when in outcome.renewals
        ]
        delays += requeue_seconds(outcome.problems)
        if outcome.deferred is not None:
            delays.append(DEFERRED_ROLLOUT_RECHECK_SECONDS)
        gc = outcome.garbage_collection
        if gc is not None and gc.requeue_after is not None:
            delays.append(gc.requeue_after)
        return Result(requeue_after=min(delays)) if delays else None

    def _report(
        self, obj: Object, hostname: str, tls_secret_name: str | None, outcome: Outcome, replicas: int
    ) -> None:
        self._readiness.report(
            obj,
            hostname=hostname,
            tls_secret_name=tls_secret_name,
            problems=outcome.problems,
            statefulset=outcome.statefulset,
            deferred=outcome.deferred,
            replicas=replicas,
            now=self._now(),
            garbage_collection=outcome.garbage_collection.status if outcome.garbage_collection else None,
            trust=outcome.trust,
            ca_bundle=outcome.ca_bundle,
            token=outcome.token,
        )


def _validation_summary(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        location = ".".join(str(part) for part in item.get("loc", ()))
        parts.append(f"{location}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)
