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

Rollover with overlap (managed CA, `plan_rollover`, pure). `tls.crt`/`tls.key` is the CA that signs,
`ca.crt` the bundle clients trust; annotations `rollover-phase`/`-since`/`-reason` say where it stands
(and `rollover-waiting` what it waits for):
* `Stable` → `Distributing` when renewal is due, the NameConstraints differ from the wanted ones
  (the DNS zone, the cluster's service names, `OPERATOR_CA_PERMITTED_DNS`; a CA without them is
  rolled over too) or a new value of the `registry.mgoltzsche.github.com/rotate` annotation appears:
  a next CA is generated (`next.crt`/`next.key`) and `ca.crt` = current + next. Registries put it in
  their `status.caBundle`, hence in every push/pull Secret and on the nodes; certificates are still
  signed by the current CA.
* `Distributing` → `Retiring` once the bundle is out: `OPERATOR_TRUST_OVERLAP` has passed, every
  registry using the root CA lists the next CA in its status for that long, and no Secret derived
  for clients (push/pull/ImageBuildEnv) trusts the current CA without the next one. A registry not
  Ready for longer than the overlap holds neither phase (`trust.is_stalled`). The next CA
  signs from now on (`tls.crt`/`tls.key`), the previous one stays in `ca.crt` and `previous.crt`;
  registries re-issue their certificates from it.
* `Retiring` → `Stable` once no registry's pods serve a certificate the previous CA signed (their
  `status.trust.served`) and each has served its new one for the retire grace (`trust.retire_grace`:
  pods still draining, endpoints catching up), or at the latest when every such certificate has
  expired (the server certificate lifetime after `Retiring` began): `ca.crt` = the new CA alone.
An unparsable or expired managed CA is replaced at once (nothing can verify against it anyway).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import structlog
from cryptography import x509

from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.api.base import format_time
from registry_operator.config import Settings
from registry_operator.controllers import trust
from registry_operator.controllers.common import (
    MANAGED_LABEL_SELECTOR,
    Object,
    decode_secret_data,
    now_utc,
    parse_time,
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
# How often a rollover in progress looks again without a change of a registry (whose status it watches).
ROLLOVER_RECHECK: Final = timedelta(seconds=5)


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


def _stable_annotations(now: datetime, reason: str) -> dict[str, str]:
    return {
        c.ANNOTATION_ROLLOVER_PHASE: c.ROLLOVER_STABLE,
        c.ANNOTATION_ROLLOVER_SINCE: format_time(now),
        c.ANNOTATION_ROLLOVER_REASON: reason,
    }


@dataclass(frozen=True)
class RegistryView:
    """What the rollover needs to know of the registries that use the root CA, and the Secrets."""

    registries: Sequence[Mapping[str, Any]] = ()
    derived_secrets: Sequence[Mapping[str, Any]] = ()
    # Not Ready for longer than the overlap (`trust.is_stalled`): left out of the two above.
    stalled: Sequence[str] = ()


@dataclass(frozen=True)
class RolloverStep:
    """A write the rollover needs (data + annotations), or why it waits (`data` None)."""

    data: dict[str, bytes] | None
    annotations: dict[str, str] = field(default_factory=dict)
    message: str = ""
    recheck_at: datetime | None = None


def rollover_trigger(
    secret: Mapping[str, Any], parsed: pki.ParsedBundle, now: datetime, permitted: Sequence[str]
) -> str | None:
    """Why a usable managed CA must be rolled over (None: it stays)."""
    if pki.needs_renewal(parsed.cert, now):
        return f"renewal was due at {pki.renewal_time(parsed.cert).isoformat()}"
    current = pki.permitted_dns_of(parsed.cert)
    wanted = tuple(sorted(set(permitted))) or None
    if current != wanted:
        shown = "none" if current is None else ", ".join(current)
        return f"NameConstraints ({shown}) differ from the wanted {', '.join(wanted or ('none',))}"
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    requested = annotations.get(c.ANNOTATION_ROTATE)
    if requested and requested != annotations.get(c.ANNOTATION_ROTATE_HANDLED):
        return f"requested by the {c.ANNOTATION_ROTATE} annotation ({requested!r})"
    return None


def _not_waiting_for(view: RegistryView) -> str:
    if not view.stalled:
        return ""
    return (
        f" (not waiting for {len(view.stalled)} registries not Ready for longer than "
        f"OPERATOR_TRUST_OVERLAP, e.g. {view.stalled[0]}: each distributes the new CA once fixed)"
    )


def plan_rollover(
    secret: Mapping[str, Any],
    parsed: pki.ParsedBundle,
    now: datetime,
    *,
    permitted: Sequence[str],
    overlap: timedelta,
    view: RegistryView,
    new_ca: Callable[[], pki.TLSBundle],
) -> RolloverStep:
    """The next step of a rollover of the (managed, usable) root CA; see the module docstring."""
    data = decode_secret_data(secret)
    annotations = dict((secret.get("metadata") or {}).get("annotations") or {})
    phase = annotations.get(c.ANNOTATION_ROLLOVER_PHASE) or c.ROLLOVER_STABLE
    since = parse_time(annotations.get(c.ANNOTATION_ROLLOVER_SINCE)) or now
    reason = annotations.get(c.ANNOTATION_ROLLOVER_REASON) or ""
    signer = parsed.cert
    signer_fp = pki.cert_fingerprint(signer)
    base = {pki.TLS_CERT_KEY: data[pki.TLS_CERT_KEY], pki.TLS_KEY_KEY: data[pki.TLS_KEY_KEY]}

    if phase == c.ROLLOVER_DISTRIBUTING:
        following = pki.parse_tls_secret_data(
            {
                pki.TLS_CERT_KEY: data.get(c.SECRET_KEY_NEXT_CERT, b""),
                pki.TLS_KEY_KEY: data.get(c.SECRET_KEY_NEXT_KEY, b""),
            },
            require_ca=False,
        )
        if not isinstance(following, pki.PkiError):
            next_fp = pki.cert_fingerprint(following.cert)
            waiting = [
                objects.key(registry)
                for registry in view.registries
                if not trust.bundle_is_out(registry, next_fp, now, overlap)
            ]
            behind = trust.secrets_behind(view.derived_secrets, old={signer_fp}, new={next_fp})
            if now < since + overlap or waiting or behind:
                if now < since + overlap:
                    until = (since + overlap).isoformat()
                    why = f"the next CA is distributed until {until} (OPERATOR_TRUST_OVERLAP)"
                elif waiting:
                    why = (
                        f"{len(waiting)} registries have not distributed the next CA for long enough, "
                        f"e.g. {waiting[0]}"
                    )
                else:
                    why = f"{len(behind)} Secrets do not hold the next CA yet, e.g. {behind[0]}"
                recheck_at = since + overlap if now < since + overlap else now + ROLLOVER_RECHECK
                return RolloverStep(None, message=why, recheck_at=recheck_at)
            return RolloverStep(
                {
                    pki.TLS_CERT_KEY: following.bundle.cert_pem,
                    pki.TLS_KEY_KEY: following.bundle.key_pem,
                    pki.CA_CERT_KEY: pki.pem_bundle([following.cert, signer]),
                    c.SECRET_KEY_PREVIOUS_CERT: pki.cert_pem(signer),
                },
                {
                    **annotations,
                    c.ANNOTATION_ROLLOVER_PHASE: c.ROLLOVER_RETIRING,
                    c.ANNOTATION_ROLLOVER_SINCE: format_time(now),
                },
                "the next root CA is out: it signs the registries' certificates from now on; the previous "
                "one stays trusted until no registry serves a certificate it signed" + _not_waiting_for(view),
            )
    if phase == c.ROLLOVER_RETIRING:
        previous = pki.bundle_certs(data.get(c.SECRET_KEY_PREVIOUS_CERT))
        if previous:
            previous_fp = pki.cert_fingerprint(previous[0])
            serving = [
                objects.key(registry)
                for registry in view.registries
                if trust.serves_certificate_from(registry, previous_fp) is not False
            ]
            # Serving the new certificate, but only for less than the retire grace (pods draining).
            draining: dict[str, datetime] = {}
            for registry in view.registries:
                switched = trust.served_since(registry)
                if switched is not None and switched + trust.retire_grace(overlap) > now:
                    draining[objects.key(registry)] = switched + trust.retire_grace(overlap)
            expired_by = since + pki.SERVER_LIFETIME
            if (serving or draining) and now < expired_by:
                if serving:
                    why = f"{len(serving)} registries may still serve a certificate of the previous CA"
                    example, recheck_at = serving[0], now + ROLLOVER_RECHECK
                else:
                    why = f"{len(draining)} registries switched certificates less than the retire grace ago"
                    example, recheck_at = next(iter(draining)), min(draining.values())
                return RolloverStep(
                    None, message=f"{why}, e.g. {example}", recheck_at=min(expired_by, recheck_at)
                )
            return RolloverStep(
                {**base, pki.CA_CERT_KEY: pki.cert_pem(signer)},
                {
                    **annotations,
                    c.ANNOTATION_ROLLOVER_PHASE: c.ROLLOVER_STABLE,
                    c.ANNOTATION_ROLLOVER_SINCE: format_time(now),
                },
                "no registry serves a certificate of the previous root CA any more: it is no longer trusted"
                + _not_waiting_for(view),
            )
    trigger = rollover_trigger(secret, parsed, now, permitted)
    if trigger is None:
        if (
            phase != c.ROLLOVER_STABLE
            or data.get(pki.CA_CERT_KEY) != pki.cert_pem(signer)
            or set(data) - {pki.TLS_CERT_KEY, pki.TLS_KEY_KEY, pki.CA_CERT_KEY}
        ):
            # An interrupted rollover (next/previous unreadable) or a CA from before rollovers: settle.
            return RolloverStep(
                {**base, pki.CA_CERT_KEY: pki.cert_pem(signer)},
                {**annotations, **_stable_annotations(now, reason)},
                "",
            )
        return RolloverStep(None, recheck_at=pki.renewal_time(signer))
    upcoming = new_ca()
    upcoming_cert = x509.load_pem_x509_certificate(upcoming.cert_pem)
    started = {
        **annotations,
        c.ANNOTATION_ROLLOVER_PHASE: c.ROLLOVER_DISTRIBUTING,
        c.ANNOTATION_ROLLOVER_SINCE: format_time(now),
        c.ANNOTATION_ROLLOVER_REASON: trigger,
    }
    requested = annotations.get(c.ANNOTATION_ROTATE)
    if requested:
        started[c.ANNOTATION_ROTATE_HANDLED] = requested
    return RolloverStep(
        {
            **base,
            pki.CA_CERT_KEY: pki.pem_bundle([signer, upcoming_cert]),
            c.SECRET_KEY_NEXT_CERT: upcoming.cert_pem,
            c.SECRET_KEY_NEXT_KEY: upcoming.key_pem,
        },
        started,
        f"root CA rollover started ({trigger}): the next CA is distributed beside the current one",
    )


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
            self._namespace, bundle, _stable_annotations(now, f"generated: {assessment.reason}")
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
