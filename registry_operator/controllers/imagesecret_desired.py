"""Pure parts of the ImagePushSecret / ImagePullSecret reconciler: per-kind settings, the labels
that tie accounts to their CR, registry references, and the desired account and Secret.

Nothing here talks to the API or reads a clock; `imagesecret.py` does that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from registry_operator.api import constants as c
from registry_operator.api.names import (
    account_label_key,
    account_metadata_labels,
    account_name,
    image_secret_name,
    label_value,
)
from registry_operator.config import Settings
from registry_operator.controllers.common import (
    MANAGED_LABELS,
    controller_ref,
    key_of,
    parse_time,
    secret_data,
)
from registry_operator.controllers.resources import IMAGE_PULL_SECRETS, IMAGE_PUSH_SECRETS
from registry_operator.dockerconfig import docker_config_for
from registry_operator.goduration import DurationError, parse_duration
from registry_operator.kube import objects
from registry_operator.kube.cache import IndexFunc
from registry_operator.kube.resources import Resource

Object = dict[str, Any]

# Prefix of a hashed label value. A CR name is a DNS-1123 label and can never contain a dot, so a
# hashed value can never equal a real name.


@dataclass(frozen=True)
class ImageSecretKind:
    """What differs between ImagePushSecret and ImagePullSecret."""

    resource: Resource
    mode: c.AccessMode
    secret_type: str
    controller_name: str

    @property
    def kind(self) -> str:
        return self.resource.kind

    @property
    def account_label_key(self) -> str:
        return account_label_key(self.mode)

    def secret_name(self, cr_name: str) -> str:
        return image_secret_name(self.mode, cr_name)

    def account_name(self, cr_namespace: str, cr_name: str, rotation: int) -> str:
        return account_name(self.mode, cr_namespace, cr_name, rotation)


PUSH: Final = ImageSecretKind(IMAGE_PUSH_SECRETS, c.ACCESS_MODE_PUSH, c.SECRET_TYPE_OPAQUE, "imagepushsecret")
# kubelet accepts only kubernetes.io/dockerconfigjson in imagePullSecrets; push secrets stay Opaque
# so that they can never be used that way (ARCHITECTURE §1).
PULL: Final = ImageSecretKind(
    IMAGE_PULL_SECRETS, c.ACCESS_MODE_PULL, c.SECRET_TYPE_DOCKER_CONFIG_JSON, "imagepullsecret"
)
KINDS: Final = (PUSH, PULL)


# --- labels tying accounts to their CR ------------------------------------------------------------


def account_owner_labels(kind: ImageSecretKind, cr_namespace: str, cr_name: str) -> dict[str, str]:
    """Metadata labels on every account of one CR; exactly these select the CR's accounts."""
    return account_metadata_labels(kind.mode, cr_name, cr_namespace)


def account_owner_selector(kind: ImageSecretKind, cr_namespace: str, cr_name: str) -> str:
    labels = account_owner_labels(kind, cr_namespace, cr_name)
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def has_owner_labels(account: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether `account` carries every one of `labels` (checked again after a selector LIST: a
    cleanup must never delete an account it was not meant to, see bug B1)."""
    actual = objects.labels(account)
    return bool(labels) and all(actual.get(key) == value for key, value in labels.items())


def owner_index_value(cr_namespace: str, label_value_of_name: str) -> str:
    """Index value joining accounts to CRs: the CR namespace and the (maybe hashed) name label."""
    return key_of(cr_namespace, label_value_of_name)


def cr_owner_index(obj: Object) -> list[str]:
    """CR index: the value its accounts' labels map to (see `account_owner_index_value`)."""
    metadata = objects.metadata(obj)
    return [owner_index_value(label_value(metadata["namespace"]), label_value(metadata["name"]))]


def account_owner_index_value(kind: ImageSecretKind, account: Mapping[str, Any]) -> str | None:
    """The CR index value an account belongs to, from its labels; None for other accounts."""
    labels = objects.labels(account)
    name = labels.get(kind.account_label_key)
    namespace = labels.get(c.LABEL_SECRET_NAMESPACE)
    if not name or not namespace:
        return None
    return owner_index_value(namespace, name)


def is_issued_account(account: Mapping[str, Any]) -> bool:
    """Whether the account carries the owner labels of an ImagePushSecret or ImagePullSecret."""
    return any(account_owner_index_value(kind, account) is not None for kind in KINDS)


# --- registry references --------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return key_of(self.namespace, self.name)


def registry_key(cr: Mapping[str, Any], settings: Settings) -> RegistryKey:
    """`spec.registryRef` (namespace defaulting to the CR's), else the operator's default registry."""
    ref = (cr.get("spec") or {}).get("registryRef")
    if not ref or not ref.get("name"):
        return RegistryKey(settings.default_registry_namespace, settings.default_registry_name)
    return RegistryKey(ref.get("namespace") or objects.namespace(cr), ref["name"])


def registry_index(settings: Settings) -> IndexFunc:
    """CR index function: the `namespace/name` key of the registry the CR resolves to."""

    def index(obj: Object) -> list[str]:
        return [str(registry_key(obj, settings))]

    return index


def registry_tls_secret_index(registry: Object) -> list[str]:
    """ImageRegistry index: the `namespace/name` key of the TLS secret its status names."""
    secret_name = (registry.get("status") or {}).get("tlsSecretName")
    return [key_of(objects.namespace(registry), secret_name)] if secret_name else []


@dataclass(frozen=True)
class UsableRegistry:
    """A registry that credentials can be issued for."""

    namespace: str
    name: str
    hostname: str
    ca_cert: bytes
    # Whether every pod of the registry verifies the fast hash of generated passwords
    # (ImageRegistry status.passwordSchemes); bcrypt until then.
    fast_password_hash: bool = False


# --- accounts -------------------------------------------------------------------------------------


def desired_account(
    kind: ImageSecretKind,
    cr_namespace: str,
    cr_name: str,
    rotation: int,
    registry_namespace: str,
    password_hash: str,
    ttl_text: str,
) -> Object:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND_IMAGE_REGISTRY_ACCOUNT,
        "metadata": {
            "name": kind.account_name(cr_namespace, cr_name, rotation),
            "namespace": registry_namespace,
            "labels": account_owner_labels(kind, cr_namespace, cr_name),
        },
        "spec": {
            "password": password_hash,
            "ttl": ttl_text,
            "labels": {
                c.ACCOUNT_LABEL_NAMESPACE: [cr_namespace],
                c.ACCOUNT_LABEL_NAME: [cr_name],
                c.ACCOUNT_LABEL_ACCESS_MODE: [kind.mode],
            },
        },
    }


def account_ttl(account: Mapping[str, Any]) -> timedelta | None:
    """The account's `spec.ttl`; None without one. Raises DurationError when unreadable."""
    ttl = (account.get("spec") or {}).get("ttl")
    if not ttl:
        return None
    if not isinstance(ttl, str):
        raise DurationError(f"invalid duration {ttl!r}")
    return parse_duration(ttl)


def account_expiry(account: Mapping[str, Any]) -> datetime | None:
    """`creationTimestamp + spec.ttl`; None without a TTL or an unreadable one."""
    created = parse_time(objects.creation_timestamp(account))
    try:
        ttl = account_ttl(account)
    except DurationError:
        return None
    return None if created is None or ttl is None else created + ttl


def rotation_due_time(account: Mapping[str, Any], settings: Settings) -> datetime | None:
    """When an account's credentials are replaced: halfway through its lifetime.

    The lifetime is the operator's TTL, or the account's own if that is shorter (an operator
    restarted with a shorter TTL then replaces older, longer-lived credentials in time).
    """
    created = parse_time(objects.creation_timestamp(account))
    if created is None:
        return None
    lifetime = settings.secret_ttl
    try:
        own_ttl = account_ttl(account)
    except DurationError:
        own_ttl = None
    if own_ttl is not None:
        lifetime = min(lifetime, own_ttl)
    return created + lifetime / 2


# --- the generated Secret -------------------------------------------------------------------------


def desired_secret(
    kind: ImageSecretKind,
    cr: Mapping[str, Any],
    registry: UsableRegistry,
    rotation: int,
    username: str,
    password: str,
) -> Object:
    """The generated Secret (ARCHITECTURE §1): push → Opaque with `config.json` and the same
    `.dockerconfigjson`; pull → kubernetes.io/dockerconfigjson; both with registry, ca.crt,
    username and password, annotated with the rotation the credentials belong to."""
    metadata = objects.metadata(cr)
    docker_config = docker_config_for(registry.hostname, username, password)
    values: dict[str, str | bytes] = {
        c.SECRET_KEY_REGISTRY: registry.hostname,
        c.SECRET_KEY_CA_CERT: registry.ca_cert,
        c.SECRET_KEY_USERNAME: username,
        c.SECRET_KEY_PASSWORD: password,
        c.SECRET_KEY_DOCKER_CONFIG_JSON: docker_config,
    }
    if kind.mode == c.ACCESS_MODE_PUSH:
        values[c.SECRET_KEY_CONFIG_JSON] = docker_config
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": kind.secret_name(metadata["name"]),
            "namespace": metadata["namespace"],
            # The operator's informers select on it (one written before it existed gets it on the
            # next write: the Secret then differs from the desired one).
            "labels": dict(MANAGED_LABELS),
            "annotations": {c.ANNOTATION_ROTATION: str(rotation)},
            "ownerReferences": [controller_ref(cr)],
        },
        "type": kind.secret_type,
        "data": secret_data(values),
    }


def secret_rotation(secret: Mapping[str, Any] | None) -> str | None:
    """The rotation annotation of a generated Secret (None when missing)."""
    if secret is None:
        return None
    value = objects.annotations(secret).get(c.ANNOTATION_ROTATION)
    return value if isinstance(value, str) else None
