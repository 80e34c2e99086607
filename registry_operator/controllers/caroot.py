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
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import structlog

from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.config import Settings
from registry_operator.controllers.common import Object, now_utc, secret_data
from registry_operator.controllers.resources import SECRETS
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


def root_ca_field_selector() -> str:
    return f"metadata.name={c.ROOT_CA_SECRET_NAME}"


def root_ca_labels() -> dict[str, str]:
    return {c.LABEL_NAME: c.OPERATOR_NAME_VALUE, c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE}


def is_managed(secret: Mapping[str, Any]) -> bool:
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(c.LABEL_MANAGED_BY) == c.MANAGED_BY_VALUE)


def desired_root_ca_secret(namespace: str, bundle: pki.TLSBundle) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": c.ROOT_CA_SECRET_NAME, "namespace": namespace, "labels": root_ca_labels()},
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


def _ca_problem(secret: Mapping[str, Any], now: datetime) -> tuple[str | None, datetime | None]:
    """(why the secret cannot serve as the root CA or None, its renewal time when parsable)."""
    parsed = pki.parse_tls_secret_data(secret.get("data"), require_ca=False)
    if isinstance(parsed, pki.PkiError):
        return str(parsed), None
    renewal_at = pki.renewal_time(parsed.cert)
    if not pki.is_ca(parsed.cert):
        return "tls.crt is not a CA certificate", renewal_at
    if pki.needs_renewal(parsed.cert, now):
        return f"renewal was due at {renewal_at.isoformat()}", renewal_at
    return None, renewal_at


def assess_root_ca(secret: Mapping[str, Any] | None, now: datetime) -> Assessment:
    """What to do with the root CA Secret as it is now."""
    if secret is None:
        return Assessment(Action.CREATE, "the secret does not exist")
    problem, renewal_at = _ca_problem(secret, now)
    if is_managed(secret):
        if secret.get("type") != c.SECRET_TYPE_TLS:
            return Assessment(Action.REPLACE, f"type is {secret.get('type')!r}, not {c.SECRET_TYPE_TLS}")
        if problem is not None:
            return Assessment(Action.REPLACE, problem)
        return Assessment(Action.KEEP, "valid", renewal_at)
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
    ) -> None:
        self._client = client
        self._store = store
        self._recorder = recorder
        self._namespace = namespace
        self._now = now
        self._key_size = key_size
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
        if assessment.action in (Action.KEEP, Action.ADOPT):
            assert secret is not None and assessment.renewal_at is not None
            if assessment.action is Action.ADOPT:
                self._report_once(secret, assessment, REASON_ADOPTED, "using the user-provided root CA")
            return self._requeue_at(assessment.renewal_at, now)
        if assessment.action is Action.REFUSE:
            assert secret is not None
            self._report_once(
                secret, assessment, REASON_REFUSED, f"refusing to overwrite: {assessment.reason}"
            )
            return Result(requeue_after=REFUSED_RECHECK.total_seconds())
        return self._generate(secret, assessment, now)

    def _generate(self, current: Object | None, assessment: Assessment, now: datetime) -> Result:
        bundle = pki.create_ca(c.ROOT_CA_COMMON_NAME, now, key_size=self._key_size)
        desired = desired_root_ca_secret(self._namespace, bundle)
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


def setup(manager: Manager, settings: Settings) -> None:
    informer = manager.informers.informer(
        SECRETS, namespace=settings.operator_namespace, field_selector=root_ca_field_selector()
    )
    reconciler = CARootReconciler(
        manager.client, informer.store, manager.event_recorder(EVENT_COMPONENT), settings.operator_namespace
    )
    controller = Controller(CONTROLLER_NAME, reconciler).watch_for(informer)
    # A missing secret produces no watch event: ask for one reconcile at start-up.
    controller.enqueue(reconciler.request)
    manager.add_controller(controller)
