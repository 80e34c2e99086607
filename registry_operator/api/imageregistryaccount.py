"""`ImageRegistryAccount`: a login for the registries in the account's namespace."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, ClassVar, Final, Literal

from pydantic import Field

from registry_operator.api.base import ApiModel, Resource, is_empty
from registry_operator.api.common import GoDuration, StatusBase
from registry_operator.api.constants import (
    API_VERSION,
    KIND_IMAGE_REGISTRY_ACCOUNT,
    PLURAL_IMAGE_REGISTRY_ACCOUNTS,
)
from registry_operator.goduration import parse_duration

# A bcrypt hash in modular crypt format ($2a$, $2b$, $2x$, $2y$ or the original $2$), or the fast
# salted hash the operator stores for the passwords it generates (`passwords.py` says why). Requiring
# a hash keeps plain-text passwords out of the API: one would never match at login anyway.
BCRYPT_HASH_PATTERN: Final = r"^\$2[abxy]?\$[0-9]{2}\$[./A-Za-z0-9]{53}$"
GENERATED_HASH_PATTERN: Final = r"^sha256-salted-v1\$[0-9a-f]{32}\$[0-9a-f]{64}$"
PASSWORD_HASH_PATTERN: Final = f"^({BCRYPT_HASH_PATTERN[1:-1]}|{GENERATED_HASH_PATTERN[1:-1]})$"
PASSWORD_HASH_MAX_LENGTH: Final = len("sha256-salted-v1$") + 32 + 1 + 64


class ImageRegistryAccountSpec(ApiModel):
    """Desired state of an ImageRegistryAccount."""

    password: Annotated[str, Field(max_length=PASSWORD_HASH_MAX_LENGTH, pattern=PASSWORD_HASH_PATTERN)]
    """bcrypt hash of the password (`$2b$…`, e.g. `htpasswd -nbB`); accounts the operator issues carry
    `sha256-salted-v1$<salt>$<digest>` instead."""
    labels: dict[str, Annotated[list[Annotated[str, Field(max_length=253)]], Field(max_length=32)]] | None = (
        Field(default=None, max_length=32)
    )
    """Labels handed to docker_auth for ACL matching (`origin: [cr]` and `account: [<name>]` are added)."""
    ttl: GoDuration | None = None
    """Lifetime from creation, e.g. `24h`; the account is deleted when it expires. Omitted: no expiry."""

    def ttl_timedelta(self) -> timedelta | None:
        return None if self.ttl is None else parse_duration(self.ttl)


class ImageRegistryAccountStatus(StatusBase):
    """Observed state of an ImageRegistryAccount."""


class ImageRegistryAccount(Resource):
    """An account (its name is the user name) that can log in to the registries of its namespace."""

    KIND: ClassVar[str] = KIND_IMAGE_REGISTRY_ACCOUNT
    PLURAL: ClassVar[str] = PLURAL_IMAGE_REGISTRY_ACCOUNTS

    api_version: Literal["registry.mgoltzsche.github.com/v1alpha1"] = API_VERSION
    kind: Literal["ImageRegistryAccount"] = KIND_IMAGE_REGISTRY_ACCOUNT
    spec: ImageRegistryAccountSpec
    # Omitted while empty: the API has no status until the operator writes one.
    status: ImageRegistryAccountStatus = Field(
        default_factory=ImageRegistryAccountStatus, exclude_if=is_empty
    )

    def expiry_time(self) -> datetime | None:
        """creationTimestamp + ttl; None for accounts without a TTL (or not created yet)."""
        ttl = self.spec.ttl_timedelta()
        created = self.metadata.creation_timestamp
        return None if ttl is None or created is None else created + ttl

    def is_expired(self, now: datetime) -> bool:
        """Expired iff a TTL is set and `now` is past creation + TTL (as the original defined it)."""
        expiry = self.expiry_time()
        return expiry is not None and now > expiry
