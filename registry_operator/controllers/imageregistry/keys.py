"""Key material a registry generates once and keeps: the RSA token key pair (docker_auth signs
tokens with it, the registry verifies them) and the REGISTRY_HTTP_SECRET all replicas share; and
the rule for any generated Secret: kept while usable, regenerated when missing or unusable, and a
same-named Secret the operator does not manage is never overwritten.

Token key rollover (`plan_token_key`, pure). The token key Secret holds the signing pair
(`tls.crt`/`tls.key`, docker_auth's) and `bundle.crt`, the registry's `auth.token.rootcertbundle`.
When the key is due for renewal or has another size than wanted (RSA-4096 → 2048, issue 15):
1. `Distributing`: a next pair is generated (`next.crt`/`next.key`) and `bundle.crt` = current + next;
   the pods roll so that every registry replica trusts both;
2. `Switching`: once that rollout is complete, the next pair signs (`tls.crt`/`tls.key`), the old
   certificate moves to `previous.crt` and stays in `bundle.crt`; the pods roll again, old and new
   docker_auth replicas sign with different keys that every registry replica accepts;
3. `Retiring`: once that rollout is complete, no docker_auth signs with the old key any more; its
   tokens live at most docker_auth's token expiration, so after `OPERATOR_TOKEN_KEY_RETIREMENT`
   (16 min: 900 s + skew) `bundle.crt` drops it and the phase is `Stable` again.
The phase, since when and why are annotations on the Secret and `status.tokenKey` of the registry.
"""

from __future__ import annotations

import base64
import secrets as random_secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.api import names
from registry_operator.api.base import format_time
from registry_operator.config import Settings
from registry_operator.controllers.common import (
    Object,
    controlled_by_uid,
    decode_secret_data,
    parse_time,
    secret_data,
)
from registry_operator.controllers.imageregistry.base import (
    PERSISTENT_API_ERRORS,
    PERSISTENT_ERROR_RECHECK,
    RegistryPart,
    RegistryStores,
    api_problem,
    is_managed,
)
from registry_operator.controllers.imageregistry.context import (
    HTTP_SECRET_KEY,
    RegistryContext,
    child_metadata,
)
from registry_operator.controllers.resources import SECRETS
from registry_operator.controllers.status import Problem
from registry_operator.kube import objects
from registry_operator.kube.client import Client
from registry_operator.kube.controller import ReconcileError
from registry_operator.kube.errors import AlreadyExists, NotFound
from registry_operator.kube.events import EventRecorder

HTTP_SECRET_BYTES: Final = 32
REASON_GENERATED_TOKEN_KEY: Final = "GeneratedTokenKey"
REASON_TOKEN_KEY_ROLLOVER: Final = "TokenKeyRollover"
ROLLOVER_ANNOTATIONS: Final = (
    c.ANNOTATION_ROLLOVER_PHASE,
    c.ANNOTATION_ROLLOVER_SINCE,
    c.ANNOTATION_ROLLOVER_REASON,
)


@dataclass(frozen=True)
class TlsMaterial:
    """A Secret the pods mount, parsed; `renewal_at` only for material the operator generates."""

    secret_name: str
    parsed: pki.ParsedBundle
    renewal_at: datetime | None


@dataclass(frozen=True)
class TokenKey:
    """The token key Secret as the pods use it: the signing pair and the registry's trust bundle."""

    material: TlsMaterial
    bundle: tuple[x509.Certificate, ...]
    phase: str
    since: datetime | None
    reason: str | None


@dataclass(frozen=True)
class TokenKeyPlan:
    """What the token key Secret should hold: data, rollover annotations, and what changed (None: nothing)."""

    data: dict[str, bytes]
    annotations: dict[str, str] = field(default_factory=dict)
    change: str | None = None


def _rollover_annotations(phase: str, since: datetime, reason: str) -> dict[str, str]:
    return {
        c.ANNOTATION_ROLLOVER_PHASE: phase,
        c.ANNOTATION_ROLLOVER_SINCE: format_time(since),
        c.ANNOTATION_ROLLOVER_REASON: reason,
    }


def _key_size(key: pki.PrivateKey) -> int | None:
    return key.key_size if isinstance(key, rsa.RSAPrivateKey) else None


def token_rollover_due(parsed: pki.ParsedBundle, now: datetime, key_size: int) -> str | None:
    """Why the signing key must be rolled over (None: it can stay)."""
    if pki.needs_renewal(parsed.cert, now):
        return f"renewal was due at {pki.renewal_time(parsed.cert).isoformat()}"
    size = _key_size(parsed.key)
    if size != key_size:
        return f"the key is {'RSA-' + str(size) if size else 'not RSA'}, RSA-{key_size} is wanted"
    return None


def plan_token_key(
    secret: Mapping[str, object] | None,
    now: datetime,
    *,
    key_size: int,
    settled: bool,
    retirement: timedelta,
    generate: Callable[[], pki.TLSBundle],
) -> TokenKeyPlan:
    """The next state of the token key Secret (see the module docstring). `settled`: every replica of
    the registry runs with the Secret as it is now (a complete rollout of the current pod template)."""
    data = decode_secret_data(secret) if secret is not None else {}
    parsed = pki.parse_tls_secret_data(
        {k: data[k] for k in (pki.TLS_CERT_KEY, pki.TLS_KEY_KEY) if k in data}, require_ca=False
    )
    if isinstance(parsed, pki.PkiError):
        fresh = generate()
        why = "missing" if secret is None else str(parsed)
        return TokenKeyPlan({**fresh.to_secret_data(), c.SECRET_KEY_TRUST_BUNDLE: fresh.cert_pem}, {}, why)
    annotations = objects.annotations(secret) if secret is not None else {}
    phase = annotations.get(c.ANNOTATION_ROLLOVER_PHASE) or c.ROLLOVER_STABLE
    since = parse_time(annotations.get(c.ANNOTATION_ROLLOVER_SINCE)) or now
    reason = annotations.get(c.ANNOTATION_ROLLOVER_REASON) or ""
    kept = {k: v for k, v in data.items() if k in (pki.TLS_CERT_KEY, pki.TLS_KEY_KEY, pki.CA_CERT_KEY)}
    signer_pem = pki.cert_pem(parsed.cert)
    next_pair = pki.parse_tls_secret_data(
        {
            pki.TLS_CERT_KEY: data.get(c.SECRET_KEY_NEXT_CERT, b""),
            pki.TLS_KEY_KEY: data.get(c.SECRET_KEY_NEXT_KEY, b""),
        },
        require_ca=False,
    )
    previous = pki.bundle_certs(data.get(c.SECRET_KEY_PREVIOUS_CERT))
    current = TokenKeyPlan(dict(data), dict(annotations))

    if phase == c.ROLLOVER_DISTRIBUTING and not isinstance(next_pair, pki.PkiError):
        if not settled:
            return current
        switched = {
            pki.TLS_CERT_KEY: next_pair.bundle.cert_pem,
            pki.TLS_KEY_KEY: next_pair.bundle.key_pem,
            pki.CA_CERT_KEY: next_pair.bundle.cert_pem,
            c.SECRET_KEY_PREVIOUS_CERT: signer_pem,
            c.SECRET_KEY_TRUST_BUNDLE: pki.pem_bundle([next_pair.cert, parsed.cert]),
        }
        return TokenKeyPlan(
            switched,
            _rollover_annotations(c.ROLLOVER_SWITCHING, now, reason),
            "every registry replica trusts the next key: docker_auth signs with it now",
        )
    if phase == c.ROLLOVER_SWITCHING and previous:
        if not settled:
            return current
        return TokenKeyPlan(
            dict(data),
            _rollover_annotations(c.ROLLOVER_RETIRING, now, reason),
            "every docker_auth replica signs with the new key: the previous one is trusted until "
            f"{format_time(now + retirement)}",
        )
    if phase == c.ROLLOVER_RETIRING and previous:
        if now < since + retirement:
            return current
        stable = {**kept, c.SECRET_KEY_TRUST_BUNDLE: signer_pem}
        return TokenKeyPlan(
            stable,
            _rollover_annotations(c.ROLLOVER_STABLE, now, reason),
            "the previous token key's tokens have expired: it is no longer trusted",
        )
    due = token_rollover_due(parsed, now, key_size)
    if due is not None:
        upcoming = generate()
        next_cert = x509.load_pem_x509_certificate(upcoming.cert_pem)
        distributing = {
            **kept,
            c.SECRET_KEY_NEXT_CERT: upcoming.cert_pem,
            c.SECRET_KEY_NEXT_KEY: upcoming.key_pem,
            c.SECRET_KEY_TRUST_BUNDLE: pki.pem_bundle([parsed.cert, next_cert]),
        }
        return TokenKeyPlan(
            distributing,
            _rollover_annotations(c.ROLLOVER_DISTRIBUTING, now, due),
            f"token key rollover started ({due}): every registry replica is told to trust the next key",
        )
    if data.get(c.SECRET_KEY_TRUST_BUNDLE) != signer_pem or set(data) - set(kept) - {
        c.SECRET_KEY_TRUST_BUNDLE
    }:
        # Stable (also a Secret written before rollovers existed): the bundle is the signing certificate.
        annotations_now = dict(annotations) if phase == c.ROLLOVER_STABLE else {}
        return TokenKeyPlan({**kept, c.SECRET_KEY_TRUST_BUNDLE: signer_pem}, annotations_now, None)
    return current


def token_key_of(name: str, secret: Mapping[str, object]) -> TokenKey:
    data = decode_secret_data(secret)
    parsed = pki.parse_tls_secret_data(
        {k: data[k] for k in (pki.TLS_CERT_KEY, pki.TLS_KEY_KEY) if k in data}, require_ca=False
    )
    assert not isinstance(parsed, pki.PkiError)  # planned or validated just before
    bundle = tuple(pki.bundle_certs(data.get(c.SECRET_KEY_TRUST_BUNDLE))) or (parsed.cert,)
    annotations = objects.annotations(secret)
    return TokenKey(
        material=TlsMaterial(name, parsed, pki.renewal_time(parsed.cert)),
        bundle=bundle,
        phase=annotations.get(c.ANNOTATION_ROLLOVER_PHASE) or c.ROLLOVER_STABLE,
        since=parse_time(annotations.get(c.ANNOTATION_ROLLOVER_SINCE)),
        reason=annotations.get(c.ANNOTATION_ROLLOVER_REASON),
    )


def desired_generated_secret(
    ctx: RegistryContext,
    name: str,
    values: Mapping[str, str | bytes],
    secret_type: str,
    annotations: Mapping[str, str] | None = None,
) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": child_metadata(ctx, name, annotations=annotations),
        "type": secret_type,
        "data": secret_data(values),
    }


class GeneratedSecrets(RegistryPart):
    """Secrets holding material the operator generates for one registry."""

    def __init__(
        self,
        client: Client,
        stores: RegistryStores,
        settings: Settings,
        recorder: EventRecorder | None,
        *,
        token_key_size: int,
    ) -> None:
        super().__init__(client, stores, settings, recorder)
        self._token_key_size = token_key_size

    def token_key(self, ctx: RegistryContext, now: datetime, *, settled: bool = False) -> TokenKey:
        """The token key Secret, advanced one rollover step when due (`plan_token_key`)."""
        name = names.registry_token_key_secret_name(ctx.name)
        current = self._own_secret(ctx, name)

        def generate() -> pki.TLSBundle:
            return pki.create_token_signing_pair(
                f"{ctx.hostname} token signing", now, key_size=self._token_key_size
            )

        plan = plan_token_key(
            current,
            now,
            key_size=self._token_key_size,
            settled=settled,
            retirement=self._settings.token_key_retirement,
            generate=generate,
        )
        desired = desired_generated_secret(ctx, name, plan.data, c.SECRET_TYPE_TLS, plan.annotations or None)
        secret = self._write_generated(ctx, name, c.SECRET_TYPE_TLS, desired, current)
        key = token_key_of(name, secret)
        if plan.change is not None:
            generated = current is None or (key.phase == c.ROLLOVER_STABLE and not plan.annotations)
            reason = REASON_GENERATED_TOKEN_KEY if generated else REASON_TOKEN_KEY_ROLLOVER
            message = f"token signing key: {plan.change}"
            if generated:
                message = f"generated the token signing key ({plan.change})"
            self._event(secret, "Normal", reason, message)
        return key

    def http_secret(self, ctx: RegistryContext) -> bytes:
        def problem_of(secret: Object) -> str | None:
            value = decode_secret_data(secret).get(HTTP_SECRET_KEY, b"")
            return None if len(value) >= HTTP_SECRET_BYTES else "missing or too short"

        def generate() -> dict[str, bytes]:
            return {HTTP_SECRET_KEY: random_secrets.token_hex(HTTP_SECRET_BYTES).encode()}

        name = names.registry_http_secret_name(ctx.name)
        secret, _ = self.secret(ctx, name, c.SECRET_TYPE_OPAQUE, problem_of, generate)
        return decode_secret_data(secret)[HTTP_SECRET_KEY]

    def secret(
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
        current = self._own_secret(ctx, name)
        problem = "missing" if current is None else problem_of(current)
        if current is not None and problem is None and current.get("type") == secret_type:
            # Usable: only make sure labels and owner reference are there (no write when they are).
            desired = desired_generated_secret(ctx, name, decode_secret_data(current), secret_type)
            return self._apply(SECRETS, desired, current), None
        desired = desired_generated_secret(ctx, name, generate(), secret_type)
        return self._write_generated(ctx, name, secret_type, desired, current), problem or "type changed"

    def _own_secret(self, ctx: RegistryContext, name: str) -> Object | None:
        """The cached Secret `name`, or a fresh GET when the label-scoped cache lacks it; a Problem when
        a same-named Secret is neither labelled as the operator's nor controlled by this registry."""
        current = self._stores.managed_secrets.get_by_name(ctx.namespace, name)
        if current is None:
            # Not in the label-scoped cache: it may still exist without our label (or the cache lags).
            try:
                current = self._client.get(SECRETS, name, ctx.namespace)
            except NotFound:
                current = None
        if current is not None and not (is_managed(current) or controlled_by_uid(current, ctx.uid)):
            raise Problem(
                c.REASON_FAILED_SYNC,
                f"Secret {ctx.namespace}/{name} already exists and is not managed by the operator (no label "
                f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY_VALUE}); rename or delete it so the operator can "
                "create its own",
                requeue_after=PERSISTENT_ERROR_RECHECK,
            )
        return current

    def _write_generated(
        self, ctx: RegistryContext, name: str, secret_type: str, desired: Object, current: Object | None
    ) -> Object:
        """Write `desired` unless the cached Secret already holds it (no write in steady state)."""
        where = f"Secret {ctx.namespace}/{name}"
        if current is not None and current.get("type") == secret_type:
            same_data = decode_secret_data(current) == {
                key: base64.b64decode(value) for key, value in desired["data"].items()
            }
            if same_data:
                return self._apply(SECRETS, desired, current)
        action = f"write {where}"
        try:
            if current is None:
                written = self._client.create(SECRETS, desired)
            elif current.get("type") != secret_type:
                # The type is immutable: replace exactly the object that was looked at.
                self._client.delete(SECRETS, name, ctx.namespace, uid=objects.uid(current))
                written = self._client.create(SECRETS, desired)
            else:
                # A PUT under the cached resourceVersion replaces the whole data (keys of a finished
                # rollover go away; an apply would keep keys another field manager once wrote).
                metadata = dict(current["metadata"])
                annotations = {
                    key: value
                    for key, value in (metadata.get("annotations") or {}).items()
                    if key not in ROLLOVER_ANNOTATIONS
                }
                annotations.update(desired["metadata"].get("annotations") or {})
                metadata["annotations"] = annotations
                metadata["labels"] = {**(metadata.get("labels") or {}), **desired["metadata"]["labels"]}
                metadata["ownerReferences"] = desired["metadata"]["ownerReferences"]
                written = self._client.update(
                    SECRETS, {**current, "metadata": metadata, "data": desired["data"]}
                )
        except AlreadyExists as error:
            raise ReconcileError(f"{where} appeared concurrently; retrying") from error
        except PERSISTENT_API_ERRORS as error:
            raise api_problem(action, error) from error
        return written
