"""`ImagePushSecret` and `ImagePullSecret`: rotating registry credentials as a Secret.

Both kinds have the same shape; they differ in the access mode, which decides the account's name
prefix and labels (and so what the ACL lets it do) and the generated Secret's name and type.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from registry_operator.api.base import ApiModel, Resource, Time, is_empty
from registry_operator.api.common import DNS1123Label, RegistryName, StatusBase
from registry_operator.api.constants import (
    ACCESS_MODE_PULL,
    ACCESS_MODE_PUSH,
    API_VERSION,
    KIND_IMAGE_PULL_SECRET,
    KIND_IMAGE_PUSH_SECRET,
    PLURAL_IMAGE_PULL_SECRETS,
    PLURAL_IMAGE_PUSH_SECRETS,
    AccessMode,
)
from registry_operator.api.names import account_name, image_secret_name


class RegistryRef(ApiModel):
    """A reference to an ImageRegistry."""

    name: RegistryName
    """Name of the ImageRegistry."""
    namespace: DNS1123Label | None = None
    """Namespace of the ImageRegistry; omitted: the namespace of this object."""


class ImageSecretSpec(ApiModel):
    """Desired state of an ImagePushSecret or ImagePullSecret."""

    registry_ref: RegistryRef | None = None
    """The registry to get credentials for; omitted: the operator's default registry
    (OPERATOR_DEFAULT_REGISTRY_NAME in OPERATOR_DEFAULT_REGISTRY_NAMESPACE)."""


# A ServiceAccount name (a DNS subdomain) or `*` for every ServiceAccount of the namespace.
SERVICE_ACCOUNTS_ALL = "*"
ServiceAccountSelector = Annotated[
    str,
    Field(max_length=253, pattern=r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$"),
]


class ImagePullSecretSpec(ImageSecretSpec):
    """Desired state of an ImagePullSecret."""

    service_accounts: list[ServiceAccountSelector] | None = Field(
        default=None, max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """ServiceAccounts of this namespace (names, or `*` for all, including ones created later) whose
    `imagePullSecrets` get the generated Secret, so their pods pull without naming it. The operator
    adds exactly one entry and removes exactly that entry when the list changes or this object is
    deleted; every other entry stays as it is."""


class RegistryStatusRef(ApiModel):
    """The registry the current credentials belong to."""

    name: Annotated[str, Field(max_length=253)] | None = None
    """Name of the ImageRegistry."""
    namespace: Annotated[str, Field(max_length=63)] | None = None
    """Namespace of the ImageRegistry, where this object's accounts live."""
    hostname: Annotated[str, Field(max_length=253)] | None = None
    """Hostname of the registry, as written to the Secret's `registry` key."""


class ImageSecretStatus(StatusBase):
    """Observed state of an ImagePushSecret or ImagePullSecret."""

    # Omitted while 0, as in the original (it only ever grows, so omitting cannot mean "reset").
    rotation: Annotated[int, Field(ge=0)] = Field(default=0, exclude_if=lambda value: value == 0)
    """Number of credentials issued so far; the current account is `<push|pull>.<ns>.<name>.<rotation>`."""
    rotation_date: Time | None = None
    """When the current credentials were issued."""
    current_expiry_time: Time | None = None
    """When the current credentials stop working (their account's TTL ends). They are replaced
    halfway through their lifetime."""
    previous_expiry_time: Time | None = None
    """When the previous credentials stop working; until then both work, so running pulls survive."""
    registry: RegistryStatusRef | None = None
    """The registry the current credentials belong to."""
    rotate_request: Annotated[str, Field(max_length=1024)] | None = None
    """The last value of annotation `registry.mgoltzsche.github.com/rotate` that caused a rotation."""


class ImageSecret(Resource):
    """Common base of ImagePushSecret and ImagePullSecret (not a kind of its own)."""

    ACCESS_MODE: ClassVar[AccessMode]

    spec: ImageSecretSpec = Field(default_factory=ImageSecretSpec)
    # Omitted while empty: the API has no status until the operator writes one.
    status: ImageSecretStatus = Field(default_factory=ImageSecretStatus, exclude_if=is_empty)

    def secret_name(self) -> str:
        """Name of the generated Secret, `image<push|pull>secret-<name>`."""
        return image_secret_name(self.ACCESS_MODE, self.metadata.name)

    def account_name(self, rotation: int) -> str:
        return account_name(self.ACCESS_MODE, self.metadata.namespace, self.metadata.name, rotation)


class ImagePushSecret(ImageSecret):
    """Credentials to push to (and pull from) a registry, as an Opaque Secret `imagepushsecret-<name>`
    with `config.json` and `.dockerconfigjson`, rotated before they expire."""

    KIND: ClassVar[str] = KIND_IMAGE_PUSH_SECRET
    PLURAL: ClassVar[str] = PLURAL_IMAGE_PUSH_SECRETS
    ACCESS_MODE: ClassVar[AccessMode] = ACCESS_MODE_PUSH

    api_version: Literal["registry.mgoltzsche.github.com/v1alpha1"] = API_VERSION
    kind: Literal["ImagePushSecret"] = KIND_IMAGE_PUSH_SECRET


class ImagePullSecret(ImageSecret):
    """Credentials to pull from a registry, as a `kubernetes.io/dockerconfigjson` Secret
    `imagepullsecret-<name>` usable in `imagePullSecrets`, rotated before they expire."""

    KIND: ClassVar[str] = KIND_IMAGE_PULL_SECRET
    PLURAL: ClassVar[str] = PLURAL_IMAGE_PULL_SECRETS
    ACCESS_MODE: ClassVar[AccessMode] = ACCESS_MODE_PULL

    api_version: Literal["registry.mgoltzsche.github.com/v1alpha1"] = API_VERSION
    kind: Literal["ImagePullSecret"] = KIND_IMAGE_PULL_SECRET
    spec: ImagePullSecretSpec = Field(default_factory=ImagePullSecretSpec)
