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
   secret (`status.tlsSecretName`) exists; the CA is its `status.caBundle` (else that secret's
   `ca.crt`). Otherwise `Ready=False`, reason `RegistryUnavailable`, with a message naming what is
   missing. The ImageRegistry and its TLS secret are watched, so the CR is reconciled again as soon
   as that changes.
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
then creates the account and writes the Secret (conditional on the Secret's resourceVersion, so a
racing writer such as a deposed leader makes it fail instead of being overwritten or rolling it
back). A pass that decided to rotate from a stale copy of the CR fails that write with Conflict and
does nothing else; a pass with a fresh CR finds the new account and Secret (through the API if the
cache lags) and does not rotate. A rotation cut after its claim (no account yet, or an account but
the Secret still on an older rotation, or none at all while the CR was never Ready) is finished by
the next pass under the same number; an account name taken by an account that is not this CR's
fails the pass, and the next pass moves on to the next number.

The very first credential skips the claim when the same pass has just added the finalizer: that PUT
was conditional on the CR's resourceVersion just the same, so this pass holds the current CR, and
account #1 can be created only once (a second attempt gets AlreadyExists and leaves the name to the
rules above). A pass that finds the finalizer already there claims as usual. That saves one status
write per secret: finalizer, account, Secret, Event and one status write are all a new secret costs.

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
from registry_operator.api.imagesecret import ImageSecretStatus, RegistryStatusRef
from registry_operator.api.names import registry_hostname
from registry_operator.config import Settings
from registry_operator.controllers import tenancy
from registry_operator.controllers.common import (
    FIELD_MANAGER,
    MANAGED_LABEL_SELECTOR,
    EventSink,
    contains,
    decode_secret_data,
    ensure,
    key_of,
    now_utc,
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
from registry_operator.controllers.resources import (
    IMAGE_REGISTRIES,
    IMAGE_REGISTRY_ACCOUNTS,
    NAMESPACES,
    SECRETS,
)
from registry_operator.controllers.status import (
    ConditionValue,
    Problem,
    condition_changed,
    update_status,
    write_status,
)
from registry_operator.kube import objects
from registry_operator.kube.cache import Object, Store, json_copy
from registry_operator.kube.client import Client
from registry_operator.kube.controller import (
    Controller,
    ReconcileError,
    Request,
    RequestMapper,
    ResourceVersionChangedPredicate,
    Result,
    index_mapper,
)
from registry_operator.kube.errors import AlreadyExists, ApiError, Conflict, Forbidden, Invalid, NotFound
from registry_operator.kube.manager import Manager
from registry_operator.passwords import HashScheme, generate_password, hash_generated_password, hash_password

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
        namespaces: Store | None = None,
        registry_secrets: Store | None = None,
        now: Callable[[], datetime] = now_utc,
    ) -> None:
        self.kind = kind
        self.client = client
        self.settings = settings
        self.crs = crs
        self.registries = registries
        self.secrets = secrets  # the generated Secrets (label-selected)
        # The registries' TLS Secrets (watched by name: a user's or cert-manager's carry no label).
        self.registry_secrets = registry_secrets if registry_secrets is not None else secrets
        self.accounts = accounts
        self.events = events
        self.namespaces = namespaces  # None: a namespaced operator, which cannot read Namespaces
        self.now = now

    # --- entry point -----------------------------------------------------------------------------
    def reconcile(self, request: Request) -> Result | None:
        cr = self.crs.get_by_name(request.namespace, request.name)
        if cr is None:
            metrics.forget_credential_expiry(request.namespace, request.name, self.kind.kind)
            return None
        if objects.is_deleting(cr):
            self._finalize(cr)
            return None
        # The finalizer PUT is conditional on the CR's resourceVersion: when it succeeds this pass
        # holds the current CR, which lets the first rotation skip its claim (see the module doc).
        fresh = c.FINALIZER_ACCOUNTS not in objects.finalizers(cr)
        if fresh:
            cr = self._add_finalizer(cr)
        try:
            registry = self._resolve_registry(cr)
        except Problem as problem:
            if problem.reason == c.REASON_NAMESPACE_NOT_ALLOWED:
                # Credentials already issued must stop working too, not just the next rotation.
                self._revoke(cr, keep_namespace=None, why=problem.message)
            self._report_problem(cr, ImageSecretStatus.model_validate(cr.get("status") or {}), problem)
            return None
        return self._sync(cr, registry, fresh=fresh)

    # --- deletion --------------------------------------------------------------------------------
    def _add_finalizer(self, cr: Object) -> Object:
        body = json_copy(cr)
        body["metadata"]["finalizers"] = [*objects.finalizers(cr), c.FINALIZER_ACCOUNTS]
        # The body's resourceVersion makes this conditional: a stale cache fails with Conflict.
        updated: Object = self.client.update(self.kind.resource, body, field_manager=FIELD_MANAGER)
        return updated

    def _finalize(self, cr: Object) -> None:
        metadata = objects.metadata(cr)
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
        metadata = objects.metadata(cr)
        labels = account_owner_labels(self.kind, metadata["namespace"], metadata["name"])
        selector = account_owner_selector(self.kind, metadata["namespace"], metadata["name"])
        listed = self.client.list(
            IMAGE_REGISTRY_ACCOUNTS, self.settings.watch_namespace or None, label_selector=selector
        )
        deleted: list[str] = []
        for account in listed.get("items") or []:
            account_meta = objects.metadata(account)
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
    def _resolve_registry(self, cr: Object) -> UsableRegistry:
        """The registry to issue credentials for; a RegistryUnavailable Problem saying why it cannot
        be used."""
        key = registry_key(cr, self.settings)
        watched = self.settings.watch_namespace
        if watched and key.namespace != watched:
            raise Problem(
                c.REASON_REGISTRY_UNAVAILABLE,
                f"ImageRegistry {key} is outside the namespace the operator watches ({watched})",
            )
        registry = self.registries.get_by_name(key.namespace, key.name, copy=False)
        if registry is None:
            raise Problem(c.REASON_REGISTRY_UNAVAILABLE, f"ImageRegistry {key} not found")
        if objects.is_deleting(registry):
            raise Problem(c.REASON_REGISTRY_UNAVAILABLE, f"ImageRegistry {key} is being deleted")
        ready = objects.condition(registry, c.CONDITION_READY)
        if ready is None:
            raise Problem(
                c.REASON_REGISTRY_UNAVAILABLE, f"ImageRegistry {key} is not Ready yet (no Ready condition)"
            )
        if ready.get("status") != "True":
            detail = ready.get("reason") or "Unknown"
            if ready.get("message"):
                detail += f": {ready['message']}"
            raise Problem(c.REASON_REGISTRY_UNAVAILABLE, f"ImageRegistry {key} is not Ready: {detail}")
        namespace = objects.namespace(cr)
        if not tenancy.admits(registry, namespace, self._namespace_labels(namespace)):
            raise Problem(c.REASON_NAMESPACE_NOT_ALLOWED, tenancy.refusal_message(registry, namespace))
        status = registry.get("status") or {}
        tls_secret_name = status.get("tlsSecretName")
        if not tls_secret_name:
            raise Problem(
                c.REASON_REGISTRY_UNAVAILABLE, f"ImageRegistry {key} names no TLS secret in its status yet"
            )
        tls_secret = self.registry_secrets.get_by_name(key.namespace, tls_secret_name, copy=False)
        if tls_secret is None:
            raise Problem(
                c.REASON_REGISTRY_UNAVAILABLE,
                f"TLS secret {key.namespace}/{tls_secret_name} of ImageRegistry {key} not found",
            )
        return UsableRegistry(
            namespace=key.namespace,
            name=key.name,
            hostname=status.get("hostname")
            or registry_hostname(key.name, key.namespace, self.settings.dns_zone),
            # The bundle the registry publishes (during a CA change: the previous and the next CA);
            # a registry not reconciled by this operator version yet has only its TLS Secret's.
            ca_cert=(status.get("caBundle") or "").encode()
            or decode_secret_data(tls_secret).get(c.SECRET_KEY_CA_CERT, b""),
            fast_password_hash=HashScheme.SALTED_SHA256_V1.value in (status.get("passwordSchemes") or []),
        )

    def _namespace_labels(self, namespace: str) -> dict[str, str] | None:
        if self.namespaces is None:
            return None
        found = self.namespaces.get_by_name("", namespace, copy=False)
        return objects.labels(found) if found is not None else {}

    def _report_problem(self, cr: Object, status: ImageSecretStatus, problem: Problem) -> Object:
        """Ready=False with the problem; its Event once per change of the condition."""
        ready = problem.condition()
        changed = condition_changed(cr, ready)
        written = update_status(self.client, self.kind.resource, cr, status, self.now(), ready)
        if changed and problem.event_type is not None:
            log.info("not ready", reason=problem.reason, why=problem.message)
            self.events.warning(cr, problem.reason, problem.message)
            if problem.reason == c.REASON_NAMESPACE_NOT_ALLOWED:
                key = registry_key(cr, self.settings)
                metrics.NAMESPACE_REFUSALS.labels(registry=str(key)).inc()
        return written

    # --- credentials -----------------------------------------------------------------------------
    def _current_account(self, cr: Object, namespace: str, rotation: int) -> Object | None:
        name = self.kind.account_name(objects.namespace(cr), objects.name(cr), rotation)
        account = self.accounts.get_by_name(namespace, name)
        if account is None:
            # Not in the cache: perhaps created a moment ago and its watch event is still on the
            # way. Rotating on that basis would issue a second credential for one trigger.
            try:
                account = self.client.get(IMAGE_REGISTRY_ACCOUNTS, name, namespace)
            except NotFound:
                return None
        return None if objects.is_deleting(account) else account

    def _current_secret(self, cr: Object, rotation: int) -> Object | None:
        namespace, name = objects.namespace(cr), self.kind.secret_name(objects.name(cr))
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
        requested = objects.annotations(cr).get(c.ANNOTATION_ROTATE)
        if requested and requested != status.rotate_request:
            return f"rotation requested with annotation {c.ANNOTATION_ROTATE}"
        account_name = self.kind.account_name(objects.namespace(cr), objects.name(cr), rotation)
        if account is None:
            return f"account {registry.namespace}/{account_name} no longer exists"
        due = rotation_due_time(account, self.settings)
        if due is None or self.now() >= due:
            return "the credentials reached half of their lifetime"
        secret_name = self.kind.secret_name(objects.name(cr))
        if secret is None:
            return f"Secret {secret_name} is missing"
        if secret_rotation(secret) != str(rotation):
            return f"Secret {secret_name} does not hold credentials #{rotation}"
        if not decode_secret_data(secret).get(c.SECRET_KEY_PASSWORD):
            return f"Secret {secret_name} has no password"
        return None

    def _sync(self, cr: Object, registry: UsableRegistry, *, fresh: bool = False) -> Result:
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
        unfinished = self._unfinished_rotation(cr, status, account, secret) if same_namespace else None
        if unfinished is not None:
            return self._issue(cr, status, registry, account, secret, unfinished, verb="Completed")
        if reason is not None or account is None or secret is None:
            return self._rotate(
                cr, status, registry, account, secret, reason or "no usable credentials", fresh=fresh
            )

        username = objects.name(account)
        password = decode_secret_data(secret)[c.SECRET_KEY_PASSWORD].decode(errors="replace")
        desired = desired_secret(self.kind, cr, registry, rotation, username, password)
        if not self._secret_is_current(secret, desired, cr):
            # Rewriting the Secret (new hostname or CA, edited content) keeps its password, which is
            # only safe when that password really is the account's.
            if not verify_account_password(account, password):
                reason = (
                    f"Secret {self.kind.secret_name(objects.name(cr))} holds a password the account rejects"
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
            ref.get("controller") and ref.get("uid") == objects.uid(cr)
            for ref in objects.owner_references(obj)
        )

    def _foreign_controller_problem(self, cr: Object, secret: Object | None) -> str | None:
        """A message when the Secret's name is taken by an object another controller manages."""
        for ref in objects.owner_references(secret) if secret is not None else []:
            if ref.get("controller") and ref.get("uid") != objects.uid(cr):
                return (
                    f"Secret {self.kind.secret_name(objects.name(cr))} is managed by {ref.get('kind')} "
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
                    SECRETS, name, objects.namespace(current), uid=objects.uid(current), missing_ok=True
                )
                current = None
        if current is not None and precondition:
            desired = json_copy(desired)
            desired["metadata"]["resourceVersion"] = objects.resource_version(current)
        return ensure(self.client, SECRETS, desired, current)

    def _rotate(
        self,
        cr: Object,
        status: ImageSecretStatus,
        registry: UsableRegistry,
        previous_account: Object | None,
        secret: Object | None,
        reason: str,
        *,
        fresh: bool = False,
    ) -> Result:
        """Claim rotation `status.rotation + 1` and issue it; `fresh`: `cr` is what this pass itself
        wrote (the finalizer), so the first rotation needs no claim of its own."""
        problem = self._foreign_controller_problem(cr, secret)
        if problem is not None:
            # Checked before anything is written: no account is issued for a Secret we cannot write.
            update_status(
                self.client,
                self.kind.resource,
                cr,
                status,
                self.now(),
                ConditionValue.false(c.REASON_FAILED_SYNC, problem),
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
        now = self.now()
        rotation = status.rotation + 1
        started = status.model_copy(deep=True)
        started.rotation = rotation
        started.rotation_date = now
        started.registry = RegistryStatusRef(
            name=registry.name, namespace=registry.namespace, hostname=registry.hostname
        )
        started.current_expiry_time = now + self.settings.secret_ttl
        started.previous_expiry_time = account_expiry(previous_account) if previous_account else None
        requested = objects.annotations(cr).get(c.ANNOTATION_ROTATE)
        if requested:
            started.rotate_request = requested
        # 1. Claim the rotation number first, conditional on the CR's resourceVersion: a pass working
        #    from a stale CR stops here with Conflict, and a retry never reuses an account name.
        #    Not for the first credential of a CR this pass has just written: account #1's name is
        #    taken once at most, and the final status write carries the claim.
        if not (fresh and rotation == 1):
            cr = write_status(self.client, self.kind.resource, cr, started.to_dict())
        return self._issue(cr, started, registry, None, secret, reason, verb="Issued")

    def _issue(
        self,
        cr: Object,
        status: ImageSecretStatus,
        registry: UsableRegistry,
        account: Object | None,
        secret: Object | None,
        reason: str,
        *,
        verb: str,
    ) -> Result:
        """Give the claimed rotation `status.rotation` its account and Secret.

        `account` is that rotation's account when an earlier pass created it but never wrote the
        Secret: nobody holds its password, so it gets a new one (conditional on its resourceVersion).
        """
        metadata = objects.metadata(cr)
        rotation = status.rotation
        account_name = self.kind.account_name(metadata["namespace"], metadata["name"], rotation)
        password = generate_password()
        # bcrypt while some pod of the registry may run a sidecar that knows no other scheme.
        password_hash = (
            hash_generated_password(password) if registry.fast_password_hash else hash_password(password)
        )
        desired = desired_account(
            self.kind,
            metadata["namespace"],
            metadata["name"],
            rotation,
            registry.namespace,
            password_hash,
            self.settings.secret_ttl_text,
        )
        what = f"account {registry.namespace}/{account_name}"
        try:
            # 2. The account. A name taken by an account that is not this CR's fails this pass
            #    (AlreadyExists); the next one sees no usable credentials and claims the next number.
            if account is None:
                issued: Object = self.client.create(
                    IMAGE_REGISTRY_ACCOUNTS, desired, field_manager=FIELD_MANAGER
                )
            else:
                body = json_copy(account)
                body["spec"] = {**(account.get("spec") or {}), "password": password_hash}
                issued = self.client.update(IMAGE_REGISTRY_ACCOUNTS, body, field_manager=FIELD_MANAGER)
            # 3. The Secret, conditional on the version this pass read: this pass owns rotation
            #    #rotation (step 1 proved the CR was current), but a write that raced it (a deposed
            #    leader's) must make it fail rather than be overwritten or roll it back.
            what = f"Secret {self.kind.secret_name(metadata['name'])}"
            self._write_secret(
                cr,
                desired_secret(self.kind, cr, registry, rotation, account_name, password),
                secret,
                precondition=True,
            )
        except (ApiError, ReconcileError) as error:
            detail = describe_api_error(error, what) if isinstance(error, ApiError) else str(error)
            message = f"Issuing credentials #{rotation} failed: {detail}"
            metrics.ROTATION_ERRORS.labels(kind=self.kind.kind).inc()
            log.warning("rotation failed", rotation=rotation, why=detail)
            self.events.warning(cr, c.REASON_FAILED_SYNC, message)
            failed = ConditionValue.false(c.REASON_FAILED_SYNC, message)
            with contextlib.suppress(ApiError):
                update_status(self.client, self.kind.resource, cr, status, self.now(), failed)
            raise ReconcileError(message) from error

        metrics.ROTATIONS.labels(kind=self.kind.kind).inc()
        log.info("issued credentials", rotation=rotation, account=account_name, why=reason)
        self.events.normal(
            cr,
            EVENT_ROTATED,
            f"{verb} credentials #{rotation} (account {registry.namespace}/{account_name}): {reason}",
        )
        return self._finish(cr, status, registry, issued)

    def _unfinished_rotation(
        self, cr: Object, status: ImageSecretStatus, account: Object | None, secret: Object | None
    ) -> str | None:
        """Why the claimed rotation `status.rotation` was never completed, or None.

        A pass claims rotation N in the status, then creates account N, then writes the Secret. When
        it was cut in between (a crash, a lost connection, a deposed leader), the Secret still holds
        an older rotation (or none, with no account N yet): that rotation is finished, not repeated,
        so one trigger never costs two accounts. A Secret deleted after it held N, or an account N
        that is not this CR's, is a new reason to rotate instead (see `_rotation_reason`).
        """
        rotation = status.rotation
        if rotation == 0:
            return None
        held = secret_rotation(secret)
        older = held is not None and held.isdigit() and int(held) < rotation
        if account is None and (secret is None or older):
            return f"finishing rotation #{rotation}: its account was never created"
        labels = account_owner_labels(self.kind, objects.namespace(cr), objects.name(cr))
        if account is not None and older and has_owner_labels(account, labels):
            return f"finishing rotation #{rotation}: its Secret was never written"
        never_ready = (objects.condition(cr, c.CONDITION_READY) or {}).get("status") != "True"
        if account is not None and secret is None and never_ready and has_owner_labels(account, labels):
            # No Secret and not Ready: the pass that created account N was cut before its Secret (the
            # first rotation, e.g. across an API server restart). A Secret deleted after it held a
            # rotation leaves Ready=True behind, and gets a new rotation instead.
            return f"finishing rotation #{rotation}: its Secret was never written"
        return None

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
            f"Secret {self.kind.secret_name(objects.name(cr))} holds credentials #{rotation} "
            f"for {registry.hostname}"
        )
        ready = ConditionValue.true(c.REASON_AVAILABLE, message)
        update_status(self.client, self.kind.resource, cr, current, self.now(), ready)
        if current.current_expiry_time is not None:
            metrics.set_credential_expiry(
                objects.namespace(cr),
                objects.name(cr),
                self.kind.kind,
                current.current_expiry_time.timestamp(),
            )
        due = rotation_due_time(account, self.settings)
        if due is None:
            return Result()
        return Result(
            requeue_after=max(0.0, (due - self.now()).total_seconds()) + ROTATION_REQUEUE_SLACK_SECONDS
        )


# --- watches ----------------------------------------------------------------------------------------


def registry_mapper(crs: Store) -> RequestMapper:
    """ImageRegistry → the CRs resolving to it."""
    return index_mapper(
        crs, CR_REGISTRY_INDEX, lambda registry: key_of(objects.namespace(registry), objects.name(registry))
    )


def tls_secret_mapper(registries: Store, crs: Store) -> RequestMapper:
    """Secret → the CRs whose registry names it as its TLS secret (a CA change must reach them)."""

    def mapped(secret: Object) -> list[Request]:
        secret_key = key_of(objects.namespace(secret), objects.name(secret))
        requests: list[Request] = []
        for registry in registries.by_index(REGISTRY_TLS_SECRET_INDEX, secret_key, copy=False):
            registry_key_value = key_of(objects.namespace(registry), objects.name(registry))
            requests.extend(
                Request.from_object(cr)
                for cr in crs.by_index(CR_REGISTRY_INDEX, registry_key_value, copy=False)
            )
        return requests

    return mapped


def namespace_mapper(crs: Store) -> RequestMapper:
    """Namespace → its CRs (a label change may admit or refuse them)."""

    def mapped(namespace: Object) -> list[Request]:
        return [Request.from_object(cr) for cr in crs.list(objects.name(namespace), copy=False)]

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
    # The generated Secrets carry the managed-by label (one written before it existed is read with
    # a GET by _current_secret, and rewritten with the label); TLS Secrets are watched by name.
    secrets = informers.informer(SECRETS, namespace=namespace, label_selector=MANAGED_LABEL_SELECTOR)
    tls_secrets = informers.by_name(SECRETS)
    tls_secrets.track_references(registries, registry_tls_secret_index)
    accounts = informers.informer(IMAGE_REGISTRY_ACCOUNTS, namespace=namespace)
    # Namespace labels decide spec.auth.namespaces.selector; only a cluster-wide operator may read them.
    namespaces = informers.informer(NAMESPACES) if namespace is None else None
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
            namespaces=namespaces.store if namespaces is not None else None,
            registry_secrets=tls_secrets.store,
        )
        controller = Controller(kind.controller_name, reconciler, max_concurrent_reconciles=WORKERS)
        controller.watch_for(crs)
        controller.watch_owned(secrets, kind.resource)
        controller.watch_mapped(accounts, account_mapper(kind, crs.store))
        controller.watch_mapped(registries, registry_mapper(crs.store))
        controller.watch_mapped(tls_secrets, tls_secret_mapper(registries.store, crs.store))
        if namespaces is not None:
            controller.watch_mapped(
                namespaces, namespace_mapper(crs.store), ResourceVersionChangedPredicate()
            )
        manager.add_controller(controller)
