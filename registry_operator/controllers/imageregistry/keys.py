"""Key material a registry generates once and keeps: the RSA token key pair (docker_auth signs
tokens with it, the registry verifies them) and the REGISTRY_HTTP_SECRET all replicas share; and
the rule for any generated Secret: kept while usable, regenerated when missing or unusable, and a
same-named Secret the operator does not manage is never overwritten.
"""

from __future__ import annotations

import secrets as random_secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.api import names
from registry_operator.config import Settings
from registry_operator.controllers.common import (
    FIELD_MANAGER,
    Object,
    controlled_by_uid,
    decode_secret_data,
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


@dataclass(frozen=True)
class TlsMaterial:
    """A Secret the pods mount, parsed; `renewal_at` only for material the operator generates."""

    secret_name: str
    parsed: pki.ParsedBundle
    renewal_at: datetime | None


def desired_generated_secret(
    ctx: RegistryContext, name: str, values: Mapping[str, str | bytes], secret_type: str
) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": child_metadata(ctx, name),
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

    def token_key(self, ctx: RegistryContext, now: datetime) -> TlsMaterial:
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
        secret, replaced = self.secret(ctx, name, c.SECRET_TYPE_TLS, problem_of, generate)
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
        where = f"Secret {ctx.namespace}/{name}"
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
                f"{where} already exists and is not managed by the operator (no label "
                f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY_VALUE}); rename or delete it so the operator can "
                "create its own",
                requeue_after=PERSISTENT_ERROR_RECHECK,
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
                self._client.delete(SECRETS, name, ctx.namespace, uid=objects.uid(current))
                written = self._client.create(SECRETS, desired)
            else:
                written = self._client.apply(SECRETS, desired, field_manager=FIELD_MANAGER, force=True)
        except AlreadyExists as error:
            raise ReconcileError(f"{where} appeared concurrently; retrying") from error
        except PERSISTENT_API_ERRORS as error:
            raise api_problem(action, error) from error
        return written, problem or "type changed"
