"""The root CA controller: keeps Secret `image-registry-root-ca` in the operator namespace a valid CA.

The CA signs the serving certificates of registries without `spec.tls` (REFERENCE-BEHAVIOUR §3.1):
type `kubernetes.io/tls`, keys `ca.crt` (== `tls.crt`), `tls.crt`, `tls.key`, labels
`name=image-registry-operator` and `app.kubernetes.io/managed-by=image-registry-operator`, no owner.

Decisions (`assess_root_ca`, pure):
* missing → generate;
* managed (has the managed-by label): unparsable, not a CA, or renewal due (75 % of its lifetime) →
  regenerate; else keep;
* unmanaged (a user put it there): a valid CA that is not due for renewal is adopted as-is; anything
  else is **refused** — the operator never overwrites a user's secret. A refusal is a Warning Event on
  the Secret and one error log line, then a long requeue: no exception, no retry storm. (The original
  returned an error, i.e. retried with backoff, and at start-up exited — a crash loop.)

The controller watches exactly that one Secret (a field selector on its name; the original watched every
Secret in scope) and requeues itself at the CA's renewal time. The imageregistry controller watches the
same Secret and re-issues the registries' certificates when the CA changes.

Rollover with overlap (managed CA): the steps are `caroot_rollover.plan_rollover` (pure).
An unparsable or expired managed CA is replaced at once (nothing can verify against it anyway).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import structlog

from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.config import Settings
from registry_operator.controllers import trust
from registry_operator.controllers.caroot_rollover import (
    ROLLOVER_RECHECK,
    RegistryView,
    plan_rollover,
    stable_annotations,
)
from registry_operator.controllers.common import (
    MANAGED_LABEL_SELECTOR,
    Object,
    now_utc,
    secret_data,
)
from registry_operator.controllers.resources import IMAGE_REGISTRIES, SECRETS
from registry_operator.kube import objects
from registry_operator.kube.cache import Store
from registry_operator.kube.client import Client
from registry_operator.kube.controller import Controller, ReconcileError, Request, Result
from registry_operator.kube.errors import AlreadyExists
from registry_operator.kube.events import EventRecorder
from registry_operator.kube.manager import Manager

log = structlog.get_logger(__name__)

CONTROLLER_NAME: Final = "caroot"
EVENT_COMPONENT: Final = "caroot-controller"
# Past the renewal instant, so a timer that fires a little early does not just requeue again.
RENEWAL_MARGIN: Final = timedelta(seconds=2)
# How often a refused (invalid, unmanaged) secret is looked at again without any change to it.
REFUSED_RECHECK: Final = timedelta(hours=1)

REASON_CREATED: Final = "CreatedRootCA"
REASON_RENEWED: Final = "RenewedRootCA"
REASON_ADOPTED: Final = "AdoptedRootCA"
REASON_REFUSED: Final = "InvalidRootCA"
REASON_ROLLOVER: Final = "RootCARollover"


def root_ca_field_selector() -> str:
    return f"metadata.name={c.ROOT_CA_SECRET_NAME}"


def root_ca_labels() -> dict[str, str]:
    return {c.LABEL_NAME: c.OPERATOR_NAME_VALUE, c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE}


def is_managed(secret: Mapping[str, Any]) -> bool:
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(c.LABEL_MANAGED_BY) == c.MANAGED_BY_VALUE)


def desired_root_ca_secret(
    namespace: str, bundle: pki.TLSBundle, annotations: Mapping[str, str] | None = None
) -> Object:
    metadata: dict[str, Any] = {
        "name": c.ROOT_CA_SECRET_NAME,
        "namespace": namespace,
        "labels": root_ca_labels(),
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": c.SECRET_TYPE_TLS,
        "data": secret_data(bundle.to_secret_data()),
    }


class Action(enum.Enum):
    CREATE = "create"
    REPLACE = "replace"
    KEEP = "keep"
    ADOPT = "adopt"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Assessment:
    action: Action
    reason: str
    renewal_at: datetime | None = None


def _ca_problem(
    secret: Mapping[str, Any], now: datetime, *, rolled_over: bool = False
) -> tuple[str | None, datetime | None]:
    """(why the secret cannot serve as the root CA or None, its renewal time when parsable).
    `rolled_over`: a CA due for renewal is still usable (the rollover replaces it), unless expired."""
    parsed = pki.parse_tls_secret_data(secret.get("data"), require_ca=False)
    if isinstance(parsed, pki.PkiError):
        return str(parsed), None
    renewal_at = pki.renewal_time(parsed.cert)
    if not pki.is_ca(parsed.cert):
        return "tls.crt is not a CA certificate", renewal_at
    if rolled_over and not pki.is_valid_at(parsed.cert, now):
        return (
            f"it is not valid at {now.isoformat()} (until {parsed.cert.not_valid_after_utc.isoformat()})",
            renewal_at,
        )
    if not rolled_over and pki.needs_renewal(parsed.cert, now):
        return f"renewal was due at {renewal_at.isoformat()}", renewal_at
    return None, renewal_at


def assess_root_ca(secret: Mapping[str, Any] | None, now: datetime) -> Assessment:
    """What to do with the root CA Secret as it is now."""
    if secret is None:
        return Assessment(Action.CREATE, "the secret does not exist")
    if is_managed(secret):
        if secret.get("type") != c.SECRET_TYPE_TLS:
            return Assessment(Action.REPLACE, f"type is {secret.get('type')!r}, not {c.SECRET_TYPE_TLS}")
        managed_problem, renewal_at = _ca_problem(secret, now, rolled_over=True)
        if managed_problem is not None:
            return Assessment(Action.REPLACE, managed_problem)
        return Assessment(Action.KEEP, "valid", renewal_at)
    problem, renewal_at = _ca_problem(secret, now)
    if problem is not None:
        return Assessment(
            Action.REFUSE,
            f"it is not managed by the operator (label {c.LABEL_MANAGED_BY}={c.MANAGED_BY_VALUE} missing) "
            f"and cannot serve as the root CA: {problem}. Replace it with a valid CA, or delete it to "
            "let the operator generate one",
        )
    return Assessment(Action.ADOPT, "a valid user-provided CA", renewal_at)


class CARootReconciler:
    def __init__(
        self,
        client: Client,
        store: Store,
        recorder: EventRecorder,
        namespace: str,
        *,
        now: Callable[[], datetime] = now_utc,
        key_size: int | None = None,  # None: ECDSA P-256 (pki.CA_CURVE); else RSA of that size
        permitted_dns: Sequence[str] = (),
        overlap: timedelta = timedelta(hours=1),
        registries: Store | None = None,
        secrets: Store | None = None,
    ) -> None:
        self._client = client
        self._store = store
        self._recorder = recorder
        self._namespace = namespace
        self._now = now
        self._key_size = key_size
        self._permitted_dns = tuple(permitted_dns)
        self._overlap = overlap
        self._registries = registries
        self._secrets = secrets
        # The last (action, resourceVersion) reported, so that a requeue of an unchanged secret
        # neither repeats the Event nor the log line at error level.
        self._last_reported: tuple[Action, str] | None = None

    @property
    def request(self) -> Request:
        return Request(self._namespace, c.ROOT_CA_SECRET_NAME)

    def reconcile(self, request: Request) -> Result | None:
        if request != self.request:
            return None  # the informer only holds this one secret; anything else is not ours
        now = self._now()
        secret = self._store.get_by_name(self._namespace, c.ROOT_CA_SECRET_NAME)
        assessment = assess_root_ca(secret, now)
        if assessment.action is Action.KEEP:
            assert secret is not None
            return self._roll_over(secret, now)
        if assessment.action is Action.ADOPT:
            assert secret is not None and assessment.renewal_at is not None
            self._report_once(secret, assessment, REASON_ADOPTED, "using the user-provided root CA")
            return self._requeue_at(assessment.renewal_at, now)
        if assessment.action is Action.REFUSE:
            assert secret is not None
            self._report_once(
                secret, assessment, REASON_REFUSED, f"refusing to overwrite: {assessment.reason}"
            )
            return Result(requeue_after=REFUSED_RECHECK.total_seconds())
        return self._generate(secret, assessment, now)

    def _new_ca(self, now: datetime) -> pki.TLSBundle:
        return pki.create_ca(
            c.ROOT_CA_COMMON_NAME, now, key_size=self._key_size, permitted_dns=self._permitted_dns
        )

    def _view(self, now: datetime) -> RegistryView:
        registries = [
            registry
            for registry in (self._registries.list(copy=False) if self._registries is not None else [])
            if not objects.is_deleting(registry) and uses_root_ca(registry)
        ]
        stalled = [registry for registry in registries if trust.is_stalled(registry, now, self._overlap)]
        # A stalled registry's clients keep what it last distributed: neither holds the rollover.
        stalled_hosts = {trust.registry_hostname(registry) for registry in stalled} - {None}
        secrets = [
            secret
            for secret in (self._secrets.list(copy=False) if self._secrets is not None else [])
            if trust.is_derived_secret(secret) and trust.secret_hostname(secret) not in stalled_hosts
        ]
        stalled_keys = [objects.key(registry) for registry in stalled]
        return RegistryView(
            registries=[registry for registry in registries if objects.key(registry) not in stalled_keys],
            derived_secrets=secrets,
            stalled=stalled_keys,
        )

    def _roll_over(self, secret: Object, now: datetime) -> Result:
        parsed = pki.parse_tls_secret_data(secret.get("data"), require_ca=False)
        assert not isinstance(parsed, pki.PkiError)  # assessed usable
        step = plan_rollover(
            secret,
            parsed,
            now,
            permitted=self._permitted_dns,
            overlap=self._overlap,
            view=self._view(now),
            new_ca=lambda: self._new_ca(now),
        )
        where = f"{self._namespace}/{c.ROOT_CA_SECRET_NAME}"
        annotations = (secret.get("metadata") or {}).get("annotations") or {}
        if step.data is None:
            if step.message and annotations.get(c.ANNOTATION_ROLLOVER_WAITING) != step.message:
                # Visible where the phase is (kubectl describe secret), written only when it changes.
                log.info(f"root CA rollover waits: {step.message}", secret=where)
                waiting = {
                    **secret["metadata"],
                    "annotations": {**annotations, c.ANNOTATION_ROLLOVER_WAITING: step.message},
                }
                self._client.update(SECRETS, {**secret, "metadata": waiting})
            # Also at the signing CA's expiry: an expired CA is replaced, whatever the rollover waits for.
            recheck_at = min(step.recheck_at or now + ROLLOVER_RECHECK, parsed.cert.not_valid_after_utc)
            return self._requeue_at(recheck_at, now)
        body = dict(secret)
        finished = {k: v for k, v in step.annotations.items() if k != c.ANNOTATION_ROLLOVER_WAITING}
        body["metadata"] = {**secret["metadata"], "annotations": finished}
        body["data"] = secret_data(step.data)
        written = self._client.update(SECRETS, body)
        if step.message:
            log.info(f"root CA: {step.message}", secret=where)
            self._recorder.normal(written, REASON_ROLLOVER, step.message)
        # Look again soon: the next step depends on the registries, whose status is watched.
        return Result(requeue_after=ROLLOVER_RECHECK.total_seconds())

    def _generate(self, current: Object | None, assessment: Assessment, now: datetime) -> Result:
        bundle = self._new_ca(now)
        desired = desired_root_ca_secret(
            self._namespace, bundle, stable_annotations(now, f"generated: {assessment.reason}")
        )
        if current is None:
            try:
                written = self._client.create(SECRETS, desired)
            except AlreadyExists as err:
                # Our cache is behind (another replica, or a user, was faster): decide again on fresh data.
                raise ReconcileError("root CA secret appeared concurrently; retrying") from err
            reason, verb = REASON_CREATED, "created"
        elif current.get("type") != c.SECRET_TYPE_TLS:
            # The type is immutable: replace the object, but only the one we looked at (uid).
            self._client.delete(
                SECRETS, c.ROOT_CA_SECRET_NAME, self._namespace, uid=current["metadata"]["uid"]
            )
            written = self._client.create(SECRETS, desired)
            reason, verb = REASON_RENEWED, "replaced"
        else:
            # PUT with the cached resourceVersion: a concurrent change makes this a Conflict (retried).
            body = dict(current)
            body["metadata"] = {
                **current["metadata"],
                "labels": {**(current["metadata"].get("labels") or {}), **root_ca_labels()},
            }
            body["type"] = c.SECRET_TYPE_TLS
            body["data"] = desired["data"]
            body["metadata"]["annotations"] = {
                **(current["metadata"].get("annotations") or {}),
                **desired["metadata"]["annotations"],
            }
            written = self._client.update(SECRETS, body)
            reason, verb = REASON_RENEWED, "renewed"
        parsed = pki.parse_bundle(bundle)
        assert not isinstance(parsed, pki.PkiError)
        renewal_at = pki.renewal_time(parsed.cert)
        message = f"root CA {verb} ({assessment.reason}); next renewal at {renewal_at.isoformat()}"
        log.info(message, secret=f"{self._namespace}/{c.ROOT_CA_SECRET_NAME}")
        self._recorder.normal(written, reason, message)
        self._last_reported = None
        return self._requeue_at(renewal_at, now)

    def _report_once(self, secret: Object, assessment: Assessment, reason: str, message: str) -> None:
        key = (assessment.action, str((secret.get("metadata") or {}).get("resourceVersion", "")))
        if self._last_reported == key:
            return
        self._last_reported = key
        where = f"{self._namespace}/{c.ROOT_CA_SECRET_NAME}"
        if assessment.action is Action.REFUSE:
            log.error(f"root CA secret {where}: {message}", secret=where)
            self._recorder.warning(secret, reason, message)
        else:
            log.info(f"root CA secret {where}: {message}", secret=where)
            self._recorder.normal(secret, reason, message)

    @staticmethod
    def _requeue_at(when: datetime, now: datetime) -> Result:
        return Result(requeue_after=max((when - now).total_seconds(), 0.0) + RENEWAL_MARGIN.total_seconds())


def uses_root_ca(registry: Mapping[str, Any]) -> bool:
    tls = (registry.get("spec") or {}).get("tls") or {}
    return not tls.get("issuerRef") and not tls.get("secretName")


def setup(manager: Manager, settings: Settings) -> None:
    informer = manager.informers.informer(
        SECRETS, namespace=settings.operator_namespace, field_selector=root_ca_field_selector()
    )
    watched = settings.watch_namespace or None
    # Shared with the imageregistry and imagesecret controllers (same keys: same informers).
    registries = manager.informers.informer(IMAGE_REGISTRIES, namespace=watched)
    # The generated push/pull and build secrets whose ca.crt a rollover waits for: the managed ones only.
    secrets = manager.informers.informer(SECRETS, namespace=watched, label_selector=MANAGED_LABEL_SELECTOR)
    reconciler = CARootReconciler(
        manager.client,
        informer.store,
        manager.event_recorder(EVENT_COMPONENT),
        settings.operator_namespace,
        permitted_dns=settings.ca_permitted_dns,
        overlap=settings.trust_overlap,
        registries=registries.store,
        secrets=secrets.store,
    )
    controller = Controller(CONTROLLER_NAME, reconciler).watch_for(informer)
    # A registry's status says how far the next CA is distributed and which CA its pods serve.
    controller.watch_mapped(registries, lambda _registry: [reconciler.request])
    # A missing secret produces no watch event: ask for one reconcile at start-up.
    controller.enqueue(reconciler.request)
    manager.add_controller(controller)
