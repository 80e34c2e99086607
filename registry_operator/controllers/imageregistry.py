"""ImageRegistry controller: runs a registry + docker_auth + authn sidecar StatefulSet per ImageRegistry.

Reconcile (the objects themselves are built by the pure functions in imageregistry_desired.py):
1. read the registry from the cache; gone or being deleted → done (children carry controller owner
   references and are garbage-collected; the PVC only when `deleteClaim: true`);
2. TLS material, by `spec.tls`: neither field → a serving certificate signed by the root CA
   (`imageregistry-<name>-selfsigned-tls`, re-issued when missing, invalid, due for renewal, for other
   DNS names, or signed by another CA than the current root CA); `secretName` → the user's Secret,
   used as-is; `issuerRef` → a cert-manager Certificate, then the Secret cert-manager writes;
3. the RSA token key pair (docker_auth signs, the registry verifies) and the shared
   REGISTRY_HTTP_SECRET, generated once and kept;
4. the ConfigMap with the registry config, the docker_auth config (default ACL or `spec.auth.acl`)
   and the ext_auth shim; ServiceAccount, Role, RoleBinding; Service; PVC;
5. the StatefulSet, with a pod-template hash over every mounted config and certificate;
6. status: `hostname`, `tlsSecretName`, `observedGeneration`, `Synced` and `Ready` (from the rollout);
7. requeue at the earliest renewal time of the certificates the operator issued.

Every child is written by server-side apply, and only when the cached object lacks a desired field,
so a steady state costs no writes. A user problem (unusable TLS Secret, invalid ACL, a foreign
Secret in the way) sets Ready=False and Synced=False with a message naming what to fix, and leaves the
StatefulSet as it was — running pods keep serving with the last good material. API errors that
retrying cannot fix (Invalid, Forbidden, a missing cert-manager) are reported the same way and
re-checked every few minutes; transient ones are retried with backoff. Messages never hold secret
data.

Caches (all scoped to WATCH_NAMESPACE, "" = all namespaces):
* children: informers with the label selector `app.kubernetes.io/managed-by=image-registry-operator`
  (every child carries it), so the operator does not cache every StatefulSet, ConfigMap, ... in scope;
* user TLS Secrets (`spec.tls.secretName`, and the Secret cert-manager writes): the *unscoped* Secret
  informer. Users' Secrets carry no label of ours, so a label selector cannot find them; the
  ImageBuildEnv controller keeps exactly this informer for its input Secrets anyway, so sharing it
  adds no memory in the full operator, gives an event for a Secret of any type (no polling) and keeps
  reads on the cache. They are mapped back to registries through an index on `spec.tls`;
* the root CA: the caroot controller's single-Secret informer, mapped to every registry using it;
* cert-manager Certificates are not cached: their CRD may be absent, and an informer on a missing
  resource would block the manager's cache sync. They are read with a GET, only for registries with
  an `issuerRef`; what matters for the pods is the Secret, which is watched.
"""

from __future__ import annotations

import functools
import secrets as random_secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

import structlog
from pydantic import ValidationError

from registry_operator import dockerauth, pki
from registry_operator.accounts import shim_script
from registry_operator.api import constants as c
from registry_operator.api import names
from registry_operator.api.conditions import Condition, ConditionStatus, get_condition, set_condition
from registry_operator.api.imageregistry import ImageRegistry, ImageRegistryStatus
from registry_operator.config import Settings
from registry_operator.controllers.common import (
    FIELD_MANAGER,
    Object,
    controlled_by_uid,
    decode_secret_data,
    ensure,
    key_of,
    meta,
    now_utc,
    write_status,
)
from registry_operator.controllers.imageregistry_desired import (
    HTTP_SECRET_KEY,
    TLS_MODE_ISSUER,
    TLS_MODE_SECRET,
    TLS_MODE_SELF_SIGNED,
    RegistryContext,
    desired_certificate,
    desired_config_map,
    desired_generated_secret,
    desired_pvc,
    desired_role,
    desired_role_binding,
    desired_service,
    desired_service_account,
    desired_statefulset,
    render_auth_config,
    render_registry_config,
    rollout_state,
    server_dns_names,
)
from registry_operator.controllers.resources import (
    CERTIFICATES,
    CONFIGMAPS,
    IMAGE_REGISTRIES,
    PERSISTENT_VOLUME_CLAIMS,
    ROLE_BINDINGS,
    ROLES,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
    STATEFULSETS,
)
from registry_operator.kube.cache import Store
from registry_operator.kube.client import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    Invalid,
    MethodNotAllowed,
    NotFound,
)
from registry_operator.kube.controller import (
    Controller,
    GenerationChangedPredicate,
    ReconcileError,
    Request,
    ResourceVersionChangedPredicate,
    Result,
    index_mapper,
)
from registry_operator.kube.events import EventRecorder
from registry_operator.kube.informer import SharedInformer
from registry_operator.kube.manager import Manager
from registry_operator.kube.resources import Resource

log = structlog.get_logger(__name__)

CONTROLLER_NAME: Final = "imageregistry"
EVENT_COMPONENT: Final = "imageregistry-controller"
MAX_CONCURRENT_RECONCILES: Final = 2

MANAGED_LABEL_SELECTOR: Final = f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY_VALUE}"
# Registry indexes: the user/cert-manager TLS Secret a registry reads ("ns/name"), and whether it
# uses the operator's root CA.
TLS_SECRET_INDEX: Final = "imageregistry-tls-secret"
ROOT_CA_INDEX: Final = "imageregistry-uses-root-ca"
ROOT_CA_INDEX_VALUE: Final = "root-ca"

# After an error retrying cannot fix (invalid object, missing permission or CRD), look again this
# often even without an event: an administrator may have fixed the cluster in the meantime.
PERSISTENT_ERROR_RECHECK: Final = timedelta(minutes=5)
# Past a renewal instant, so a timer that fires a little early does not just requeue again.
RENEWAL_MARGIN: Final = timedelta(seconds=2)
HTTP_SECRET_BYTES: Final = 32
CERT_MANAGER_HINT: Final = (
    " (is cert-manager installed? spec.tls.issuerRef needs its cert-manager.io/v1 Certificate API)"
)

REASON_ISSUED_CERTIFICATE: Final = "IssuedCertificate"
REASON_GENERATED_TOKEN_KEY: Final = "GeneratedTokenKey"
_WARNING_REASONS: Final = frozenset(
    {c.REASON_FAILED_SYNC, c.REASON_INVALID_SPEC, c.REASON_INVALID_SECRET, c.REASON_MISSING_SECRET}
)
# 4xx answers that the same request will get again until someone changes the object or the cluster.
_PERSISTENT_API_ERRORS: Final = (BadRequest, Forbidden, Invalid, MethodNotAllowed, NotFound, AlreadyExists)

T = TypeVar("T")


class SyncProblem(Exception):
    """Something a user or administrator has to fix; becomes Ready=False / Synced=False."""

    def __init__(self, reason: str, message: str, *, recheck: timedelta | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.recheck = recheck


@dataclass(frozen=True)
class TlsMaterial:
    secret_name: str
    parsed: pki.ParsedBundle
    renewal_at: datetime | None  # only for certificates the operator issues itself


@dataclass
class Outcome:
    """What one reconcile found, for the status and the requeue."""

    problems: list[SyncProblem] = field(default_factory=list)
    statefulset: Object | None = None
    renewals: list[datetime] = field(default_factory=list)

    def attempt(self, step: Callable[[], T]) -> T | None:
        """Run `step`; a SyncProblem is recorded (and None returned), anything else propagates."""
        try:
            return step()
        except SyncProblem as problem:
            self.problems.append(problem)
            return None


@dataclass(frozen=True)
class RegistryStores:
    """The caches the reconciler reads."""

    registries: Store
    statefulsets: Store
    services: Store
    managed_secrets: Store  # secrets the operator generates (label-scoped)
    all_secrets: Store  # every Secret in scope: user and cert-manager TLS secrets
    root_ca: Store  # the root CA secret in the operator namespace
    config_maps: Store
    service_accounts: Store
    roles: Store
    role_bindings: Store
    pvcs: Store


# --- indexes -----------------------------------------------------------------------------------------


def _tls_spec(registry: Mapping[str, Any]) -> Mapping[str, Any]:
    tls: Mapping[str, Any] = (registry.get("spec") or {}).get("tls") or {}
    return tls


def index_tls_secret(registry: Object) -> list[str]:
    """ "ns/name" of the Secret a registry reads but does not generate (user's or cert-manager's)."""
    tls = _tls_spec(registry)
    metadata = meta(registry)
    if not tls.get("issuerRef") and not tls.get("secretName"):
        return []
    secret = names.registry_tls_secret_name(
        metadata["name"], tls.get("secretName"), bool(tls.get("issuerRef"))
    )
    return [key_of(metadata["namespace"], secret)]


def index_uses_root_ca(registry: Object) -> list[str]:
    tls = _tls_spec(registry)
    return [] if tls.get("issuerRef") or tls.get("secretName") else [ROOT_CA_INDEX_VALUE]


# --- helpers -------------------------------------------------------------------------------------------


def is_managed(obj: Mapping[str, Any]) -> bool:
    return bool((meta(obj).get("labels") or {}).get(c.LABEL_MANAGED_BY) == c.MANAGED_BY_VALUE)


def _api_problem(action: str, error: ApiError, hint: str = "") -> SyncProblem:
    return SyncProblem(
        c.REASON_FAILED_SYNC,
        f"{action}: {error.reason}: {error.message}{hint}",
        recheck=PERSISTENT_ERROR_RECHECK,
    )


def _certs_of(parsed: pki.ParsedBundle) -> list[Any]:
    return [*parsed.chain, *parsed.ca_certs]


class ImageRegistryReconciler:
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
        self._client = client
        self._stores = stores
        self._settings = settings
        self._recorder = recorder
        self._now = now
        self._server_key_size = server_key_size
        self._token_key_size = token_key_size
        self._shim = shim_script()

    # --- reconcile ---------------------------------------------------------------------------
    def reconcile(self, request: Request) -> Result | None:
        obj = self._stores.registries.get_by_name(request.namespace, request.name)
        if obj is None or meta(obj).get("deletionTimestamp"):
            return None
        hostname = names.registry_hostname(request.name, request.namespace, self._settings.dns_zone)
        try:
            registry = ImageRegistry.from_dict(obj)
        except ValidationError as error:
            problem = SyncProblem(c.REASON_INVALID_SPEC, f"invalid spec: {_validation_summary(error)}")
            replicas = (obj.get("spec") or {}).get("replicas")
            self._write_status(
                obj, hostname, None, Outcome(problems=[problem]), replicas if isinstance(replicas, int) else 1
            )
            return None
        ctx = RegistryContext(
            name=request.name,
            namespace=request.namespace,
            uid=meta(obj)["uid"],
            generation=int(meta(obj).get("generation") or 0),
            hostname=hostname,
            spec=registry.spec,
        )
        now = self._now()
        try:
            outcome = self._sync(ctx, now)
        except Conflict:
            raise  # a stale cache: retry with fresh data; nothing to tell the user
        except ApiError as error:
            # Transient (5xx, timeouts, throttling): say so in the status, then retry with backoff.
            failed = Outcome(problems=[SyncProblem(c.REASON_FAILED_SYNC, f"API request failed: {error}")])
            try:
                self._write_status(obj, hostname, ctx.tls_secret_name, failed, ctx.spec.replicas)
            except ApiError as status_error:
                log.warning("writing the failure status failed", error=str(status_error))
            raise
        spec_changed = (obj.get("status") or {}).get("observedGeneration") != ctx.generation
        if spec_changed and not outcome.problems and outcome.statefulset is not None:
            # Only once the pods are told to use the new TLS source, and once per spec change.
            outcome.attempt(lambda: self._remove_unused_tls(ctx))
        self._write_status(obj, hostname, ctx.tls_secret_name, outcome, ctx.spec.replicas)
        return self._requeue(outcome, now)

    def _sync(self, ctx: RegistryContext, now: datetime) -> Outcome:
        outcome = Outcome()
        tls = outcome.attempt(lambda: self._tls(ctx, now))
        token = outcome.attempt(lambda: self._token_key(ctx, now))
        http_secret = outcome.attempt(lambda: self._http_secret(ctx))
        configs = outcome.attempt(lambda: self._config_map(ctx))
        for resource, desired, store in (
            (SERVICE_ACCOUNTS, desired_service_account(ctx), self._stores.service_accounts),
            (ROLES, desired_role(ctx), self._stores.roles),
            (ROLE_BINDINGS, desired_role_binding(ctx), self._stores.role_bindings),
            (SERVICES, desired_service(ctx), self._stores.services),
        ):
            outcome.attempt(functools.partial(self._ensure_cached, resource, desired, store))
        outcome.attempt(lambda: self._pvc(ctx))
        for material in (tls, token):
            if material is not None and material.renewal_at is not None:
                outcome.renewals.append(material.renewal_at)

        current_sts = self._stores.statefulsets.get_by_name(
            ctx.namespace, names.registry_statefulset_name(ctx.name)
        )
        if outcome.problems or tls is None or token is None or http_secret is None or configs is None:
            # Keep the pods on their last good configuration until the problem is fixed.
            outcome.statefulset = current_sts
            return outcome
        config_hash = dockerauth.config_hash(
            *configs,
            tls.secret_name,
            pki.certs_fingerprint(_certs_of(tls.parsed)),
            pki.certs_fingerprint(token.parsed.chain),
            http_secret,
        )
        desired = desired_statefulset(
            ctx,
            image_registry=self._settings.image_registry,
            image_auth=self._settings.image_auth,
            image_operator=self._settings.image_operator,
            tls_secret_name=tls.secret_name,
            config_hash=config_hash,
        )
        outcome.statefulset = outcome.attempt(lambda: self._apply(STATEFULSETS, desired, current_sts))
        if outcome.statefulset is None:
            outcome.statefulset = current_sts
        return outcome

    # --- TLS ---------------------------------------------------------------------------------
    def _tls(self, ctx: RegistryContext, now: datetime) -> TlsMaterial:
        secret_name = ctx.tls_secret_name
        where = f"Secret {ctx.namespace}/{secret_name}"
        if ctx.tls_mode == TLS_MODE_ISSUER:
            certificate = names.registry_certificate_name(ctx.name)
            self._certificate(ctx)
            secret = self._stores.all_secrets.get_by_name(ctx.namespace, secret_name)
            if secret is None:
                raise SyncProblem(
                    c.REASON_PENDING,
                    f"waiting for cert-manager to issue Certificate {certificate} into {where}",
                )
            source = f"{where} (written by cert-manager for Certificate {certificate})"
            return TlsMaterial(secret_name, self._parse_tls_secret(secret, source), None)
        if ctx.tls_mode == TLS_MODE_SECRET:
            secret = self._stores.all_secrets.get_by_name(ctx.namespace, secret_name)
            if secret is None:
                raise SyncProblem(
                    c.REASON_MISSING_SECRET, f"{where} named in spec.tls.secretName does not exist"
                )
            return TlsMaterial(
                secret_name, self._parse_tls_secret(secret, f"{where} named in spec.tls.secretName"), None
            )
        return self._self_signed_tls(ctx, now)

    @staticmethod
    def _parse_tls_secret(secret: Object, source: str) -> pki.ParsedBundle:
        parsed = pki.parse_tls_secret_data(secret.get("data"), require_ca=False)
        if isinstance(parsed, pki.PkiError):
            raise SyncProblem(
                c.REASON_INVALID_SECRET,
                f"{source} is unusable: {parsed}. It needs PEM `tls.crt` and `tls.key` of one key pair "
                "(and `ca.crt` for clients)",
            )
        return parsed

    def _certificate(self, ctx: RegistryContext) -> None:
        desired = desired_certificate(ctx, server_dns_names(ctx.name, ctx.namespace, self._settings.dns_zone))
        name = desired["metadata"]["name"]
        try:
            current: Object | None = self._client.get(CERTIFICATES, name, ctx.namespace)
        except NotFound:
            current = None
        hint = "" if current is not None else CERT_MANAGER_HINT
        self._apply(CERTIFICATES, desired, current, hint=hint)

    def _remove_unused_tls(self, ctx: RegistryContext) -> None:
        """After a switch of TLS source, delete what the old source left: the cert-manager
        Certificate (which would keep writing its secret) and the generated self-signed secret.
        Only objects this registry controls, and only the exact ones seen (uid precondition)."""
        if ctx.tls_mode != TLS_MODE_ISSUER:
            name = names.registry_certificate_name(ctx.name)
            try:
                certificate: Object | None = self._client.get(CERTIFICATES, name, ctx.namespace)
            except NotFound:  # none, or cert-manager is not installed at all
                certificate = None
            if certificate is not None and controlled_by_uid(certificate, ctx.uid):
                self._client.delete(
                    CERTIFICATES, name, ctx.namespace, uid=meta(certificate)["uid"], missing_ok=True
                )
                log.info("deleted the Certificate of the former TLS source", certificate=name)
        if ctx.tls_mode != TLS_MODE_SELF_SIGNED:
            name = names.registry_tls_secret_name(ctx.name, None, False)
            secret = self._stores.all_secrets.get_by_name(ctx.namespace, name)
            if secret is not None and name != ctx.tls_secret_name and controlled_by_uid(secret, ctx.uid):
                self._client.delete(SECRETS, name, ctx.namespace, uid=meta(secret)["uid"], missing_ok=True)
                log.info("deleted the self-signed TLS secret of the former TLS source", secret=name)

    def _self_signed_tls(self, ctx: RegistryContext, now: datetime) -> TlsMaterial:
        operator_namespace = self._settings.operator_namespace
        root_where = f"root CA Secret {operator_namespace}/{c.ROOT_CA_SECRET_NAME}"
        root_secret = self._stores.root_ca.get_by_name(operator_namespace, c.ROOT_CA_SECRET_NAME)
        if root_secret is None:
            raise SyncProblem(
                c.REASON_PENDING, f"waiting for the {root_where} (the caroot controller creates it)"
            )
        parsed_root = pki.parse_tls_secret_data(root_secret.get("data"), require_ca=False)
        if isinstance(parsed_root, pki.PkiError) or not pki.is_ca(parsed_root.cert):
            problem = (
                parsed_root if isinstance(parsed_root, pki.PkiError) else "tls.crt is not a CA certificate"
            )
            raise SyncProblem(c.REASON_INVALID_SECRET, f"the {root_where} is unusable: {problem}")
        root: pki.ParsedBundle = parsed_root
        dns_names = server_dns_names(ctx.name, ctx.namespace, self._settings.dns_zone)
        root_cert = root.cert

        def problem_of(secret: Object) -> str | None:
            parsed = pki.parse_tls_secret_data(secret.get("data"), require_ca=False)
            if isinstance(parsed, pki.PkiError):
                return str(parsed)
            return pki.server_cert_problem(parsed, dns_names, root_cert, now)

        def issue() -> dict[str, bytes]:
            bundle = pki.create_server_cert(root, dns_names, now, key_size=self._server_key_size)
            # An intermediate CA must be sent along for clients that only trust the root.
            intermediate = b"" if root_cert.issuer == root_cert.subject else pki.cert_pem(root_cert)
            return {
                "tls.crt": bundle.cert_pem + intermediate,
                "tls.key": bundle.key_pem,
                "ca.crt": root.bundle.ca_pem or pki.cert_pem(root_cert),
            }

        secret_name = ctx.tls_secret_name
        secret, replaced = self._generated_secret(ctx, secret_name, c.SECRET_TYPE_TLS, problem_of, issue)
        parsed = pki.parse_tls_secret_data(secret.get("data"), require_ca=False)
        assert not isinstance(parsed, pki.PkiError)  # just validated or generated
        renewal_at = pki.renewal_time(parsed.cert)
        if replaced is not None:
            self._event(
                secret,
                "Normal",
                REASON_ISSUED_CERTIFICATE,
                f"issued the serving certificate for {', '.join(dns_names)} ({replaced}); "
                f"renewal at {renewal_at.isoformat()}",
            )
        return TlsMaterial(secret_name, parsed, renewal_at)

    # --- generated secrets -------------------------------------------------------------------
    def _token_key(self, ctx: RegistryContext, now: datetime) -> TlsMaterial:
        def problem_of(secret: Object) -> str | None:
            parsed = pki.parse_tls_secret_data(secret.get("data"))
            if isinstance(parsed, pki.PkiError):
                return str(parsed)
            if pki.needs_renewal(parsed.cert, now):
                return f"renewal was due at {pki.renewal_time(parsed.cert).isoformat()}"
            return None

        def generate() -> dict[str, bytes]:
            common_name = f"{ctx.hostname} token signing"
            return pki.create_token_signing_pair(
                common_name, now, key_size=self._token_key_size
            ).to_secret_data()

        name = names.registry_token_key_secret_name(ctx.name)
        secret, replaced = self._generated_secret(ctx, name, c.SECRET_TYPE_TLS, problem_of, generate)
        parsed = pki.parse_tls_secret_data(secret.get("data"))
        assert not isinstance(parsed, pki.PkiError)
        renewal_at = pki.renewal_time(parsed.cert)
        if replaced is not None:
            self._event(
                secret,
                "Normal",
                REASON_GENERATED_TOKEN_KEY,
                f"generated the token signing key ({replaced}); renewal at {renewal_at.isoformat()}",
            )
        return TlsMaterial(name, parsed, renewal_at)

    def _http_secret(self, ctx: RegistryContext) -> bytes:
        def problem_of(secret: Object) -> str | None:
            value = decode_secret_data(secret).get(HTTP_SECRET_KEY, b"")
            return None if len(value) >= HTTP_SECRET_BYTES else "missing or too short"

        def generate() -> dict[str, bytes]:
            return {HTTP_SECRET_KEY: random_secrets.token_hex(HTTP_SECRET_BYTES).encode()}

        name = names.registry_http_secret_name(ctx.name)
        secret, _ = self._generated_secret(ctx, name, c.SECRET_TYPE_OPAQUE, problem_of, generate)
        return decode_secret_data(secret)[HTTP_SECRET_KEY]

    def _generated_secret(
        self,
        ctx: RegistryContext,
        name: str,
        secret_type: str,
        problem_of: Callable[[Object], str | None],
        generate: Callable[[], dict[str, bytes]],
    ) -> tuple[Object, str | None]:
        """The Secret holding generated material: kept while usable, else (re)generated.

        Returns the secret and why it was (re)generated (None when kept). A same-named Secret that is
        neither labelled as the operator's nor controlled by this registry is never overwritten.
        """
        where = f"Secret {ctx.namespace}/{name}"
        current = self._stores.managed_secrets.get_by_name(ctx.namespace, name)
        if current is None:
            # Not in the label-scoped cache: it may still exist without our label (or the cache lags).
            try:
                current = self._client.get(SECRETS, name, ctx.namespace)
            except NotFound:
                current = None
        if current is not None and not (is_managed(current) or controlled_by_uid(current, ctx.uid)):
            raise SyncProblem(
                c.REASON_FAILED_SYNC,
                f"{where} already exists and is not managed by the operator (no label "
                f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY_VALUE}); rename or delete it so the operator can "
                "create its own",
                recheck=PERSISTENT_ERROR_RECHECK,
            )
        problem = "missing" if current is None else problem_of(current)
        if current is not None and problem is None and current.get("type") == secret_type:
            # Usable: only make sure labels and owner reference are there (no write when they are).
            desired = desired_generated_secret(ctx, name, decode_secret_data(current), secret_type)
            return self._apply(SECRETS, desired, current), None
        desired = desired_generated_secret(ctx, name, generate(), secret_type)
        action = f"write {where}"
        try:
            if current is None:
                written = self._client.create(SECRETS, desired)
            elif current.get("type") != secret_type:
                # The type is immutable: replace exactly the object that was looked at.
                self._client.delete(SECRETS, name, ctx.namespace, uid=meta(current)["uid"])
                written = self._client.create(SECRETS, desired)
            else:
                written = self._client.apply(SECRETS, desired, field_manager=FIELD_MANAGER, force=True)
        except AlreadyExists as error:
            raise ReconcileError(f"{where} appeared concurrently; retrying") from error
        except _PERSISTENT_API_ERRORS as error:
            raise _api_problem(action, error) from error
        return written, problem or "type changed"

    # --- configuration and plain children ----------------------------------------------------
    def _config_map(self, ctx: RegistryContext) -> tuple[str, str, str]:
        registry_config = render_registry_config(ctx)
        try:
            auth_config = render_auth_config(ctx)
        except dockerauth.AclError as error:
            raise SyncProblem(c.REASON_INVALID_SPEC, f"spec.auth.{error}") from error
        desired = desired_config_map(ctx, registry_config, auth_config, self._shim)
        self._ensure_cached(CONFIGMAPS, desired, self._stores.config_maps)
        return registry_config, auth_config, self._shim

    def _pvc(self, ctx: RegistryContext) -> None:
        desired = desired_pvc(ctx)
        current = self._stores.pvcs.get_by_name(ctx.namespace, desired["metadata"]["name"])
        stale_owner = (
            current is not None
            and not ctx.spec.persistent_volume_claim.delete_claim
            and controlled_by_uid(current, ctx.uid)
        )
        # `contains` cannot see a field that must go away: with deleteClaim turned off, apply once
        # more so that server-side apply drops the owner reference the operator set before.
        self._apply(PERSISTENT_VOLUME_CLAIMS, desired, None if stale_owner else current)

    def _ensure_cached(self, resource: Resource, desired: Object, store: Store) -> Object:
        metadata = desired["metadata"]
        return self._apply(resource, desired, store.get_by_name(metadata["namespace"], metadata["name"]))

    def _apply(
        self, resource: Resource, desired: Object, current: Object | None, *, hint: str = ""
    ) -> Object:
        """`ensure()`, with errors that retrying cannot fix turned into a SyncProblem."""
        try:
            return ensure(self._client, resource, desired, current)
        except _PERSISTENT_API_ERRORS as error:
            raise _api_problem(f"apply {resource.kind} {desired['metadata']['name']}", error, hint) from error

    # --- status ------------------------------------------------------------------------------
    def _write_status(
        self, obj: Object, hostname: str, tls_secret_name: str | None, outcome: Outcome, replicas: int
    ) -> None:
        generation = int(meta(obj).get("generation") or 0)
        try:
            status = ImageRegistryStatus.model_validate(obj.get("status") or {})
        except ValidationError:
            status = ImageRegistryStatus()  # e.g. the original's reason-less conditions: start afresh
        previous_ready = get_condition(status.conditions, c.CONDITION_READY)
        previous = (
            (previous_ready.status, previous_ready.reason, previous_ready.message) if previous_ready else None
        )

        ready: tuple[ConditionStatus, str, str]
        synced: tuple[ConditionStatus, str, str]
        if outcome.problems:
            first = outcome.problems[0]
            message = "; ".join(problem.message for problem in outcome.problems)
            ready = synced = ("False", first.reason, message)
        else:
            synced = ("True", c.REASON_SYNCED, "all objects of the registry are up to date")
            rollout = rollout_state(outcome.statefulset, replicas)
            ready = (
                ("True", c.REASON_AVAILABLE, rollout.message)
                if rollout.ready
                else (
                    "False",
                    c.REASON_UPDATING,
                    rollout.message,
                )
            )
        now = self._now()
        for condition_type, (state, reason, message) in (
            (c.CONDITION_READY, ready),
            (c.CONDITION_SYNCED, synced),
        ):
            set_condition(
                status.conditions,
                Condition(
                    type=condition_type,
                    status=state,
                    reason=reason,
                    message=message,
                    observed_generation=generation,
                ),
                now,
            )
        status.observed_generation = generation
        status.hostname = hostname
        status.tls_secret_name = tls_secret_name
        write_status(self._client, IMAGE_REGISTRIES, obj, status.to_dict())

        if previous != ready:
            state, reason, message = ready
            if state == "False" and reason in _WARNING_REASONS:
                log.warning("registry not ready", reason=reason, message=message)
                self._event(obj, "Warning", reason, message)
            elif state == "True" and (previous is None or previous[0] != "True"):
                log.info("registry ready", message=message)
                self._event(obj, "Normal", reason, message)

    def _requeue(self, outcome: Outcome, now: datetime) -> Result | None:
        delays = [
            max((when - now).total_seconds(), 0.0) + RENEWAL_MARGIN.total_seconds()
            for when in outcome.renewals
        ]
        delays += [p.recheck.total_seconds() for p in outcome.problems if p.recheck is not None]
        return Result(requeue_after=min(delays)) if delays else None

    def _event(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        if self._recorder is not None:
            self._recorder.event(obj, event_type, reason, message)


def _validation_summary(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        location = ".".join(str(part) for part in item.get("loc", ()))
        parts.append(f"{location}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)


def _secret_key(secret: Object) -> str | None:
    metadata = meta(secret)
    return key_of(metadata.get("namespace") or "", metadata["name"]) if metadata.get("name") else None


def _root_ca_value(_secret: Object) -> str:
    return ROOT_CA_INDEX_VALUE


def setup(manager: Manager, settings: Settings) -> None:
    namespace = settings.watch_namespace or None
    informers = manager.informers
    registries = informers.informer(
        IMAGE_REGISTRIES,
        namespace=namespace,
        indexers={TLS_SECRET_INDEX: index_tls_secret, ROOT_CA_INDEX: index_uses_root_ca},
    )

    def owned(resource: Resource) -> SharedInformer:
        return informers.informer(resource, namespace=namespace, label_selector=MANAGED_LABEL_SELECTOR)

    children = {
        resource: owned(resource)
        for resource in (
            STATEFULSETS,
            SERVICES,
            SECRETS,
            CONFIGMAPS,
            SERVICE_ACCOUNTS,
            ROLES,
            ROLE_BINDINGS,
            PERSISTENT_VOLUME_CLAIMS,
        )
    }
    all_secrets = informers.informer(SECRETS, namespace=namespace)
    # Shared with the caroot controller (same key: same informer).
    root_ca = informers.informer(
        SECRETS,
        namespace=settings.operator_namespace,
        field_selector=f"metadata.name={c.ROOT_CA_SECRET_NAME}",
    )
    stores = RegistryStores(
        registries=registries.store,
        statefulsets=children[STATEFULSETS].store,
        services=children[SERVICES].store,
        managed_secrets=children[SECRETS].store,
        all_secrets=all_secrets.store,
        root_ca=root_ca.store,
        config_maps=children[CONFIGMAPS].store,
        service_accounts=children[SERVICE_ACCOUNTS].store,
        roles=children[ROLES].store,
        role_bindings=children[ROLE_BINDINGS].store,
        pvcs=children[PERSISTENT_VOLUME_CLAIMS].store,
    )
    reconciler = ImageRegistryReconciler(
        manager.client, stores, settings, recorder=manager.event_recorder(EVENT_COMPONENT)
    )
    changed = ResourceVersionChangedPredicate()
    controller = Controller(CONTROLLER_NAME, reconciler, max_concurrent_reconciles=MAX_CONCURRENT_RECONCILES)
    # Status writes (the operator's own, every reconcile that changes something) do not bump the
    # generation: filtering them out keeps a reconcile from triggering the next one.
    controller.watch_for(registries, GenerationChangedPredicate())
    for informer in children.values():
        controller.watch_owned(informer, IMAGE_REGISTRIES, changed)
    controller.watch_mapped(
        all_secrets, index_mapper(registries.store, TLS_SECRET_INDEX, _secret_key), changed
    )
    controller.watch_mapped(root_ca, index_mapper(registries.store, ROOT_CA_INDEX, _root_ca_value), changed)
    manager.add_controller(controller)
