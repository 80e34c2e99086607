"""ImagePushSecret and ImagePullSecret: rotating registry credentials as a Secret (REFERENCE-BEHAVIOUR
§3.3). One reconciler class serves both kinds; `setup` registers two controllers, `imagepushsecret`
and `imagepullsecret`.

Reconcile flow (reads come from the informer caches, writes go to the API):
1. CR gone: drop its metric. CR being deleted: delete exactly its accounts (a LIST by the labels this
   controller wrote, every hit checked again, each deleted with a uid precondition), record `Revoked`,
   remove the finalizer.
2. Add the finalizer (PUT with the resourceVersion precondition) before any account exists.
3. Resolve the registry (`spec.registryRef`, its namespace defaulting to the CR's; else the default
   registry from the settings). It is usable when the ImageRegistry exists, is Ready and its TLS
   secret (`status.tlsSecretName`) exists; the CA is that secret's `ca.crt`. Otherwise `Ready=False`,
   reason `RegistryUnavailable`, with a message naming what is missing. The ImageRegistry and its TLS
   secret are watched, so the CR is reconciled again as soon as that changes.
4. Find the current credential: account `<mode>.<ns>.<name>.<status.rotation>` in the registry
   namespace and the Secret. When the cache lacks either (or the Secret's rotation annotation is not
   `status.rotation`), GET it from the API: a cache that has not yet seen our own last write must not
   look like a lost credential.
5. Rotate when there is no credential yet, the registry namespace changed, a new value of the
   rotate-now annotation appeared, the account is gone or half its lifetime has passed, or the Secret
   is missing, belongs to another rotation or has a password that does not match the account.
6. Otherwise bring the Secret up to date (registry hostname, CA) with the password it already has,
   write the status (Ready, expiry times) if it changed, and requeue at the next rotation time.
   Steady state: no write at all.

Exactly one rotation per trigger: a rotation first writes `status.rotation + 1` (with rotationDate,
the registry, the handled rotate request) under the CR's resourceVersion precondition, and only
then creates the account and writes the Secret. A pass that decided to rotate from a stale copy of
the CR fails that write with Conflict and does nothing else; a pass with a fresh CR finds the new
account and Secret (through the API if the cache lags) and does not rotate. Accounts are created,
never updated, under a name no earlier pass used; if the name is taken (AlreadyExists) the pass
fails and the next pass moves on to the next number.

Credentials never appear in a log line, an Event or a condition: messages name accounts and Secrets,
and API errors are reduced to their status and reason (an API message may echo object content).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

import structlog

from registry_operator import metrics
from registry_operator.accounts import verify_account_password
from registry_operator.api import constants as c
from registry_operator.api.conditions import Condition, set_condition
from registry_operator.api.imagesecret import ImageSecretStatus, RegistryStatusRef
from registry_operator.api.names import registry_hostname
from registry_operator.config import Settings
from registry_operator.controllers.common import (
    FIELD_MANAGER,
    EventSink,
    contains,
    decode_secret_data,
    ensure,
    key_of,
    meta,
    now_utc,
    write_status,
)
from registry_operator.controllers.imagesecret_desired import (
    KINDS,
    ImageSecretKind,
    UsableRegistry,
    account_expiry,
    account_owner_index_value,
    account_owner_labels,
    account_owner_selector,
    cr_owner_index,
    desired_account,
    desired_secret,
    has_owner_labels,
    registry_index,
    registry_key,
    registry_tls_secret_index,
    rotation_due_time,
    secret_rotation,
)
from registry_operator.controllers.resources import IMAGE_REGISTRIES, IMAGE_REGISTRY_ACCOUNTS, SECRETS
from registry_operator.kube.cache import Object, Store, json_copy
from registry_operator.kube.client import (
    AlreadyExists,
    ApiError,
    Client,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
)
from registry_operator.kube.controller import (
    Controller,
    ReconcileError,
    Request,
    RequestMapper,
    Result,
    index_mapper,
)
from registry_operator.kube.manager import Manager
from registry_operator.passwords import generate_password, hash_password

log = structlog.get_logger(__name__)

# Cache indexes (names prefixed: informers are shared with other controllers):
# CR → "namespace/name" of the registry it resolves to;
CR_REGISTRY_INDEX: Final = "imagesecret-registry"
# CR → "namespace/name label value" that its accounts' owner labels carry;
CR_OWNER_INDEX: Final = "imagesecret-account-owner"
# ImageRegistry → "namespace/name" of the TLS secret its status names.
REGISTRY_TLS_SECRET_INDEX: Final = "imagesecret-registry-tls-secret"

# Workers per kind: a pass spends most of its time waiting for the API, so a few run in parallel
# (never two for one CR: the work queue guarantees that).
WORKERS: Final = 4
# A timed requeue lands a little after the rotation time, so the pass does not arrive early and
# need another requeue for the remaining milliseconds.
ROTATION_REQUEUE_SLACK_SECONDS: Final = 0.5

EVENT_ROTATED: Final = "Rotated"
EVENT_REVOKED: Final = "Revoked"


def describe_api_error(error: ApiError, what: str) -> str:
    """A message for users about a failed write, built only from the status and reason: the API's own
    message may quote the object (an Invalid error on an account quotes its password hash)."""
    if isinstance(error, AlreadyExists):
        return f"{what} already exists"
    if isinstance(error, Invalid):
        fields = sorted({cause.field for cause in error.causes if cause.field})
        return f"{what} was refused as invalid" + (f" ({', '.join(fields)})" if fields else "")
    if isinstance(error, Forbidden):
        return f"the operator is not allowed to write {what} (Forbidden)"
    return f"writing {what} failed: {error.status} {error.reason}"


def _ready_condition(cr: Mapping[str, Any]) -> dict[str, Any] | None:
    for condition in (cr.get("status") or {}).get("conditions") or []:
        if condition.get("type") == c.CONDITION_READY:
            found: dict[str, Any] = condition
            return found
    return None


class ImageSecretReconciler:
    """Reconciles one kind (ImagePushSecret or ImagePullSecret)."""

    def __init__(
        self,
        kind: ImageSecretKind,
        client: Client,
        settings: Settings,
        *,
        crs: Store,
        registries: Store,
        secrets: Store,
        accounts: Store,
        events: EventSink,
        now: Callable[[], datetime] = now_utc,
    ) -> None:
        self.kind = kind
        self.client = client
        self.settings = settings
        self.crs = crs
        self.registries = registries
        self.secrets = secrets
        self.accounts = accounts
        self.events = events
        self.now = now

    # --- entry point -----------------------------------------------------------------------------
    def reconcile(self, request: Request) -> Result | None:
        cr = self.crs.get_by_name(request.namespace, request.name)
        if cr is None:
            metrics.forget_credential_expiry(request.namespace, request.name, self.kind.kind)
            return None
        if meta(cr).get("deletionTimestamp"):
            self._finalize(cr)
            return None
        if c.FINALIZER_ACCOUNTS not in (meta(cr).get("finalizers") or []):
            cr = self._add_finalizer(cr)
        registry = self._resolve_registry(cr)
        if isinstance(registry, str):
            self._set_unavailable(cr, registry)
            return None
        return self._sync(cr, registry)

    # --- deletion --------------------------------------------------------------------------------
    def _add_finalizer(self, cr: Object) -> Object:
        body = json_copy(cr)
        body["metadata"]["finalizers"] = [*(meta(cr).get("finalizers") or []), c.FINALIZER_ACCOUNTS]
        # The body's resourceVersion makes this conditional: a stale cache fails with Conflict.
        updated: Object = self.client.update(self.kind.resource, body, field_manager=FIELD_MANAGER)
        return updated

    def _finalize(self, cr: Object) -> None:
        metadata = meta(cr)
        if c.FINALIZER_ACCOUNTS in (metadata.get("finalizers") or []):
            self._revoke(cr, keep_namespace=None, why=f"{self.kind.kind} {metadata['name']} is being deleted")
            body = json_copy(cr)
            body["metadata"]["finalizers"] = [
                f for f in metadata.get("finalizers") or [] if f != c.FINALIZER_ACCOUNTS
            ]
            with contextlib.suppress(NotFound):
                self.client.update(self.kind.resource, body, field_manager=FIELD_MANAGER)
        metrics.forget_credential_expiry(metadata["namespace"], metadata["name"], self.kind.kind)

    def _revoke(self, cr: Object, *, keep_namespace: str | None, why: str) -> list[str]:
        """Delete this CR's accounts (outside `keep_namespace`); returns "namespace/name" of each.

        Selected by exactly the labels this controller writes (the original's selector matched every
        account: bug B1), read from the API rather than the cache so that an account created a moment
        ago is not missed, and each hit checked again before it is deleted.
        """
        metadata = meta(cr)
        labels = account_owner_labels(self.kind, metadata["namespace"], metadata["name"])
        selector = account_owner_selector(self.kind, metadata["namespace"], metadata["name"])
        listed = self.client.list(
            IMAGE_REGISTRY_ACCOUNTS, self.settings.watch_namespace or None, label_selector=selector
        )
        deleted: list[str] = []
        for account in listed.get("items") or []:
            account_meta = meta(account)
            if account_meta.get("namespace") == keep_namespace or not has_owner_labels(account, labels):
                continue
            try:
                self.client.delete(
                    IMAGE_REGISTRY_ACCOUNTS,
                    account_meta["name"],
                    account_meta["namespace"],
                    uid=account_meta.get("uid"),
                    missing_ok=True,
                )
            except Conflict:
                continue  # replaced by another object of that name meanwhile: not the one we listed
            deleted.append(key_of(account_meta["namespace"], account_meta["name"]))
        if deleted:
            deleted.sort()
            log.info("revoked credentials", accounts=deleted, why=why)
            self.events.normal(
                cr, EVENT_REVOKED, f"Deleted {len(deleted)} account(s) ({why}): {', '.join(deleted)}"
            )
        return deleted

    # --- registry --------------------------------------------------------------------------------
    def _resolve_registry(self, cr: Object) -> UsableRegistry | str:
        """The registry to issue credentials for, or a message saying why it cannot be used."""
        key = registry_key(cr, self.settings)
        watched = self.settings.watch_namespace
        if watched and key.namespace != watched:
            return f"ImageRegistry {key} is outside the namespace the operator watches ({watched})"
        registry = self.registries.get_by_name(key.namespace, key.name, copy=False)
        if registry is None:
            return f"ImageRegistry {key} not found"
        if meta(registry).get("deletionTimestamp"):
            return f"ImageRegistry {key} is being deleted"
        ready = _ready_condition(registry)
        if ready is None:
            return f"ImageRegistry {key} is not Ready yet (no Ready condition)"
        if ready.get("status") != "True":
            detail = ready.get("reason") or "Unknown"
            if ready.get("message"):
                detail += f": {ready['message']}"
            return f"ImageRegistry {key} is not Ready: {detail}"
        status = registry.get("status") or {}
        tls_secret_name = status.get("tlsSecretName")
        if not tls_secret_name:
            return f"ImageRegistry {key} names no TLS secret in its status yet"
        tls_secret = self.secrets.get_by_name(key.namespace, tls_secret_name, copy=False)
        if tls_secret is None:
            return f"TLS secret {key.namespace}/{tls_secret_name} of ImageRegistry {key} not found"
        return UsableRegistry(
            namespace=key.namespace,
            name=key.name,
            hostname=status.get("hostname")
            or registry_hostname(key.name, key.namespace, self.settings.dns_zone),
            ca_cert=decode_secret_data(tls_secret).get(c.SECRET_KEY_CA_CERT, b""),
        )

    def _set_unavailable(self, cr: Object, message: str) -> None:
        status = ImageSecretStatus.model_validate(cr.get("status") or {})
        updated = self._with_ready(
            status, cr, ready=False, reason=c.REASON_REGISTRY_UNAVAILABLE, message=message
        )
        before = _ready_condition(cr) or {}
        self._write_status(cr, updated)
        if (before.get("reason"), before.get("message")) != (c.REASON_REGISTRY_UNAVAILABLE, message):
            log.info("registry unavailable", why=message)
            self.events.warning(cr, c.REASON_REGISTRY_UNAVAILABLE, message)

    # --- credentials -----------------------------------------------------------------------------
    def _current_account(self, cr: Object, namespace: str, rotation: int) -> Object | None:
        name = self.kind.account_name(meta(cr)["namespace"], meta(cr)["name"], rotation)
        account = self.accounts.get_by_name(namespace, name)
        if account is None:
            # Not in the cache: perhaps created a moment ago and its watch event is still on the
            # way. Rotating on that basis would issue a second credential for one trigger.
            try:
                account = self.client.get(IMAGE_REGISTRY_ACCOUNTS, name, namespace)
            except NotFound:
                return None
        return None if meta(account).get("deletionTimestamp") else account

    def _current_secret(self, cr: Object, rotation: int) -> Object | None:
        namespace, name = meta(cr)["namespace"], self.kind.secret_name(meta(cr)["name"])
        secret = self.secrets.get_by_name(namespace, name)
        if rotation > 0 and (secret is None or secret_rotation(secret) != str(rotation)):
            # The cache may not have seen our last write of it yet (see _current_account).
            try:
                secret = self.client.get(SECRETS, name, namespace)
            except NotFound:
                return None
        return secret

    def _rotation_reason(
        self,
        cr: Object,
        status: ImageSecretStatus,
        registry: UsableRegistry,
        account: Object | None,
        secret: Object | None,
    ) -> str | None:
        """Why a new credential is needed now, or None."""
        rotation = status.rotation
        if rotation == 0:
            return "first credentials"
        previous_namespace = status.registry.namespace if status.registry else None
        if previous_namespace != registry.namespace:
            return f"the registry namespace changed from {previous_namespace} to {registry.namespace}"
        requested = (meta(cr).get("annotations") or {}).get(c.ANNOTATION_ROTATE)
        if requested and requested != status.rotate_request:
            return f"rotation requested with annotation {c.ANNOTATION_ROTATE}"
        account_name = self.kind.account_name(meta(cr)["namespace"], meta(cr)["name"], rotation)
        if account is None:
            return f"account {registry.namespace}/{account_name} no longer exists"
        due = rotation_due_time(account, self.settings)
        if due is None or self.now() >= due:
            return "the credentials reached half of their lifetime"
        secret_name = self.kind.secret_name(meta(cr)["name"])
        if secret is None:
            return f"Secret {secret_name} is missing"
        if secret_rotation(secret) != str(rotation):
            return f"Secret {secret_name} does not hold credentials #{rotation}"
        if not decode_secret_data(secret).get(c.SECRET_KEY_PASSWORD):
            return f"Secret {secret_name} has no password"
        return None

    def _sync(self, cr: Object, registry: UsableRegistry) -> Result:
        status = ImageSecretStatus.model_validate(cr.get("status") or {})
        rotation = status.rotation
        same_namespace = status.registry is not None and status.registry.namespace == registry.namespace
        account = (
            self._current_account(cr, registry.namespace, rotation)
            if rotation > 0 and same_namespace
            else None
        )
        secret = self._current_secret(cr, rotation)
        reason = self._rotation_reason(cr, status, registry, account, secret)
        if reason is not None or account is None or secret is None:
            return self._rotate(cr, status, registry, account, secret, reason or "no usable credentials")

        username = meta(account)["name"]
        password = decode_secret_data(secret)[c.SECRET_KEY_PASSWORD].decode(errors="replace")
        desired = desired_secret(self.kind, cr, registry, rotation, username, password)
        if not self._secret_is_current(secret, desired, cr):
            # Rewriting the Secret (new hostname or CA, edited content) keeps its password, which is
            # only safe when that password really is the account's.
            if not verify_account_password(account, password):
                reason = (
                    f"Secret {self.kind.secret_name(meta(cr)['name'])} holds a password the account rejects"
                )
                return self._rotate(cr, status, registry, account, secret, reason)
            # Conditional on the Secret's resourceVersion: a stale copy must not overwrite newer content.
            self._write_secret(cr, desired, secret, precondition=True)
            log.info("updated secret", secret=desired["metadata"]["name"], registry=registry.hostname)
        return self._finish(cr, status, registry, account)

    def _secret_is_current(self, secret: Mapping[str, Any], desired: Mapping[str, Any], cr: Object) -> bool:
        # Owner references are compared by our controller reference only: an ImageBuildEnv adds
        # references of its own to the Secrets it reads, and those must not look like a difference.
        without_refs = json_copy(dict(desired))
        del without_refs["metadata"]["ownerReferences"]
        return contains(secret, without_refs) and self._controlled_by_cr(secret, cr)

    @staticmethod
    def _controlled_by_cr(obj: Mapping[str, Any], cr: Mapping[str, Any]) -> bool:
        return any(
            ref.get("controller") and ref.get("uid") == meta(cr).get("uid")
            for ref in meta(obj).get("ownerReferences") or []
        )

    def _foreign_controller_problem(self, cr: Object, secret: Object | None) -> str | None:
        """A message when the Secret's name is taken by an object another controller manages."""
        for ref in meta(secret).get("ownerReferences") or [] if secret is not None else []:
            if ref.get("controller") and ref.get("uid") != meta(cr).get("uid"):
                return (
                    f"Secret {self.kind.secret_name(meta(cr)['name'])} is managed by {ref.get('kind')} "
                    f"{ref.get('name')}, not by this {self.kind.kind}"
                )
        return None

    def _write_secret(
        self, cr: Object, desired: Object, current: Object | None, *, precondition: bool
    ) -> Object:
        name = desired["metadata"]["name"]
        if current is not None:
            problem = self._foreign_controller_problem(cr, current)
            if problem is not None:
                raise ReconcileError(problem)
            if current.get("type") != desired["type"]:
                # A Secret's type cannot change (the original wrote push secrets as
                # kubernetes.io/dockerconfigjson): replace that very object.
                self.client.delete(
                    SECRETS, name, meta(current)["namespace"], uid=meta(current).get("uid"), missing_ok=True
                )
                current = None
        if current is not None and precondition:
            desired = json_copy(desired)
            desired["metadata"]["resourceVersion"] = meta(current)["resourceVersion"]
        return ensure(self.client, SECRETS, desired, current)

    def _rotate(
        self,
        cr: Object,
        status: ImageSecretStatus,
        registry: UsableRegistry,
        previous_account: Object | None,
        secret: Object | None,
        reason: str,
    ) -> Result:
        metadata = meta(cr)
        problem = self._foreign_controller_problem(cr, secret)
        if problem is not None:
            # Checked before anything is written: no account is issued for a Secret we cannot write.
            self._write_status(
                cr, self._with_ready(status, cr, ready=False, reason=c.REASON_FAILED_SYNC, message=problem)
            )
            self.events.warning(cr, c.REASON_FAILED_SYNC, problem)
            raise ReconcileError(problem)
        previous_namespace = status.registry.namespace if status.registry else None
        if status.rotation > 0 and previous_namespace != registry.namespace:
            # Accounts in the old namespace would stay valid there until their TTL: remove them.
            # Before the status write, so that a failure here is retried with the old namespace known.
            self._revoke(
                cr,
                keep_namespace=registry.namespace,
                why=f"the registry moved to namespace {registry.namespace}",
            )
            previous_account = None
        password = generate_password()
        password_hash = hash_password(password, self.settings.bcrypt_cost)
        now = self.now()
        rotation = status.rotation + 1
        account_name = self.kind.account_name(metadata["namespace"], metadata["name"], rotation)

        started = status.model_copy(deep=True)
        started.rotation = rotation
        started.rotation_date = now
        started.registry = RegistryStatusRef(
            name=registry.name, namespace=registry.namespace, hostname=registry.hostname
        )
        started.current_expiry_time = now + self.settings.secret_ttl
        started.previous_expiry_time = account_expiry(previous_account) if previous_account else None
        requested = (metadata.get("annotations") or {}).get(c.ANNOTATION_ROTATE)
        if requested:
            started.rotate_request = requested
        # 1. Claim the rotation number first, conditional on the CR's resourceVersion: a pass working
        #    from a stale CR stops here with Conflict, and a retry never reuses an account name.
        cr = self._write_status(cr, started)

        what = f"account {registry.namespace}/{account_name}"
        try:
            # 2. Create (never update) the account. AlreadyExists fails this pass; the next one sees
            #    a Secret without credentials #rotation and moves on to the next number.
            account: Object = self.client.create(
                IMAGE_REGISTRY_ACCOUNTS,
                desired_account(
                    self.kind,
                    metadata["namespace"],
                    metadata["name"],
                    rotation,
                    registry.namespace,
                    password_hash,
                    self.settings.secret_ttl_text,
                ),
                field_manager=FIELD_MANAGER,
            )
            # 3. The Secret, unconditionally: this pass owns rotation #rotation (step 1 proved the
            #    CR was current), so whatever the Secret holds now is older.
            what = f"Secret {self.kind.secret_name(metadata['name'])}"
            self._write_secret(
                cr,
                desired_secret(self.kind, cr, registry, rotation, account_name, password),
                secret,
                precondition=False,
            )
        except (ApiError, ReconcileError) as error:
            detail = describe_api_error(error, what) if isinstance(error, ApiError) else str(error)
            message = f"Issuing credentials #{rotation} failed: {detail}"
            metrics.ROTATION_ERRORS.labels(kind=self.kind.kind).inc()
            log.warning("rotation failed", rotation=rotation, why=detail)
            self.events.warning(cr, c.REASON_FAILED_SYNC, message)
            failed = self._with_ready(started, cr, ready=False, reason=c.REASON_FAILED_SYNC, message=message)
            with contextlib.suppress(ApiError):
                self._write_status(cr, failed)
            raise ReconcileError(message) from error

        metrics.ROTATIONS.labels(kind=self.kind.kind).inc()
        log.info("issued credentials", rotation=rotation, account=account_name, why=reason)
        self.events.normal(
            cr,
            EVENT_ROTATED,
            f"Issued credentials #{rotation} (account {registry.namespace}/{account_name}): {reason}",
        )
        return self._finish(cr, started, registry, account)

    def _finish(
        self, cr: Object, status: ImageSecretStatus, registry: UsableRegistry, account: Object
    ) -> Result:
        """Record the credential in the status (if that changed) and schedule the next rotation."""
        rotation = status.rotation
        current = status.model_copy(deep=True)
        current.registry = RegistryStatusRef(
            name=registry.name, namespace=registry.namespace, hostname=registry.hostname
        )
        expiry = account_expiry(account)
        if expiry is not None:
            current.current_expiry_time = expiry
        message = (
            f"Secret {self.kind.secret_name(meta(cr)['name'])} holds credentials #{rotation} "
            f"for {registry.hostname}"
        )
        current = self._with_ready(current, cr, ready=True, reason=c.REASON_AVAILABLE, message=message)
        self._write_status(cr, current)
        if current.current_expiry_time is not None:
            metrics.set_credential_expiry(
                meta(cr)["namespace"],
                meta(cr)["name"],
                self.kind.kind,
                current.current_expiry_time.timestamp(),
            )
        due = rotation_due_time(account, self.settings)
        if due is None:
            return Result()
        return Result(
            requeue_after=max(0.0, (due - self.now()).total_seconds()) + ROTATION_REQUEUE_SLACK_SECONDS
        )

    # --- status ----------------------------------------------------------------------------------
    def _with_ready(
        self, status: ImageSecretStatus, cr: Object, *, ready: bool, reason: str, message: str
    ) -> ImageSecretStatus:
        generation = meta(cr).get("generation")
        updated = status.model_copy(deep=True)
        set_condition(
            updated.conditions,
            Condition(
                type=c.CONDITION_READY,
                status="True" if ready else "False",
                reason=reason,
                message=message,
                observed_generation=generation,
            ),
            self.now(),
        )
        updated.observed_generation = generation
        return updated

    def _write_status(self, cr: Object, status: ImageSecretStatus) -> Object:
        """PUT the status unless unchanged (Conflict when `cr` was stale); returns the CR as the API
        now has it, whose resourceVersion the next write of the same pass needs."""
        return write_status(self.client, self.kind.resource, cr, status.to_dict())


# --- watches ----------------------------------------------------------------------------------------


def registry_mapper(crs: Store) -> RequestMapper:
    """ImageRegistry → the CRs resolving to it."""
    return index_mapper(
        crs, CR_REGISTRY_INDEX, lambda registry: key_of(meta(registry)["namespace"], meta(registry)["name"])
    )


def tls_secret_mapper(registries: Store, crs: Store) -> RequestMapper:
    """Secret → the CRs whose registry names it as its TLS secret (a CA change must reach them)."""

    def mapped(secret: Object) -> list[Request]:
        secret_key = key_of(meta(secret).get("namespace") or "", meta(secret)["name"])
        requests: list[Request] = []
        for registry in registries.by_index(REGISTRY_TLS_SECRET_INDEX, secret_key, copy=False):
            registry_key_value = key_of(meta(registry)["namespace"], meta(registry)["name"])
            requests.extend(
                Request.from_object(cr)
                for cr in crs.by_index(CR_REGISTRY_INDEX, registry_key_value, copy=False)
            )
        return requests

    return mapped


def account_mapper(kind: ImageSecretKind, crs: Store) -> RequestMapper:
    """ImageRegistryAccount → the CR of this kind its owner labels name (none for other accounts)."""
    return index_mapper(crs, CR_OWNER_INDEX, functools.partial(account_owner_index_value, kind))


def setup(manager: Manager, settings: Settings) -> None:
    namespace = settings.watch_namespace or None
    informers = manager.informers
    registries = informers.informer(
        IMAGE_REGISTRIES, namespace=namespace, indexers={REGISTRY_TLS_SECRET_INDEX: registry_tls_secret_index}
    )
    secrets = informers.informer(SECRETS, namespace=namespace)
    accounts = informers.informer(IMAGE_REGISTRY_ACCOUNTS, namespace=namespace)
    index_by_registry = registry_index(settings)
    for kind in KINDS:
        crs = informers.informer(
            kind.resource,
            namespace=namespace,
            indexers={CR_REGISTRY_INDEX: index_by_registry, CR_OWNER_INDEX: cr_owner_index},
        )
        reconciler = ImageSecretReconciler(
            kind,
            manager.client,
            settings,
            crs=crs.store,
            registries=registries.store,
            secrets=secrets.store,
            accounts=accounts.store,
            events=manager.event_recorder(kind.controller_name),
        )
        controller = Controller(kind.controller_name, reconciler, max_concurrent_reconciles=WORKERS)
        controller.watch_for(crs)
        controller.watch_owned(secrets, kind.resource)
        controller.watch_mapped(accounts, account_mapper(kind, crs.store))
        controller.watch_mapped(registries, registry_mapper(crs.store))
        controller.watch_mapped(secrets, tls_secret_mapper(registries.store, crs.store))
        manager.add_controller(controller)
