"""Who an ImageRegistry is (`RegistryContext`) and the names every part of it shares: paths inside
the pod, ConfigMap keys, container and port names, the labels and metadata of its children.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from registry_operator import dockerauth
from registry_operator.accounts import AUTHN_PATH, DEFAULT_AUTHN_PORT
from registry_operator.api import constants as c
from registry_operator.api import names
from registry_operator.api.imageregistry import ImageRegistrySpec

# --- paths inside the pod -------------------------------------------------------------------------
REGISTRY_CONFIG_DIR: Final = "/etc/distribution"  # the stock image's default config location
REGISTRY_CONFIG_FILE: Final = "config.yml"
AUTH_CONFIG_DIR: Final = "/config"  # the stock docker_auth image's default config location
AUTH_CONFIG_FILE: Final = "auth_config.yml"
TLS_DIR: Final = "/etc/registry-operator/tls"
TOKEN_DIR: Final = "/etc/registry-operator/token"
STORAGE_DIR: Final = dockerauth.DEFAULT_STORAGE_ROOT
SERVICE_ACCOUNT_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"

# --- ConfigMap / Secret keys ----------------------------------------------------------------------
CONFIG_KEY_REGISTRY: Final = "registry.yml"
CONFIG_KEY_AUTH: Final = AUTH_CONFIG_FILE
CONFIG_KEY_LEGACY_SHIM: Final = "ext_auth_shim.sh"  # see config.LEGACY_SHIM
HTTP_SECRET_KEY: Final = "http-secret"

# --- container and port names ---------------------------------------------------------------------
CONTAINER_REGISTRY: Final = "registry"
CONTAINER_AUTH: Final = "auth"
CONTAINER_AUTHN: Final = "authn"
PORT_NAME_REGISTRY: Final = "https"
PORT_NAME_AUTH: Final = "auth"
AUTHN_URL: Final = f"http://127.0.0.1:{DEFAULT_AUTHN_PORT}{AUTHN_PATH}"

# The operator image's numeric non-root user; the stock images run as any uid. fsGroup makes the
# volume and the mounted Secret files (mode 0440) readable by that group.
POD_UID: Final = 65532
SECRET_FILE_MODE: Final = 0o440


@dataclass(frozen=True)
class RegistryContext:
    """Who a registry is: everything the builders need besides its spec."""

    name: str
    namespace: str
    uid: str
    generation: int
    hostname: str
    spec: ImageRegistrySpec
    # Garbage collection in progress: the registry refuses writes (see garbagecollection.py).
    storage_read_only: bool = False

    @property
    def app_label(self) -> str:
        return names.registry_app_label_value(self.name)

    @property
    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND_IMAGE_REGISTRY,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    @property
    def tls_secret_name(self) -> str:
        tls = self.spec.tls
        return names.registry_tls_secret_name(self.name, tls.secret_name, tls.issuer_ref is not None)

    @property
    def tls_mode(self) -> str:
        """`issuer` (cert-manager), `secret` (user-provided) or `selfsigned` (operator root CA)."""
        if self.spec.tls.issuer_ref is not None:
            return TLS_MODE_ISSUER
        if self.spec.tls.secret_name:
            return TLS_MODE_SECRET
        return TLS_MODE_SELF_SIGNED


TLS_MODE_ISSUER: Final = "issuer"
TLS_MODE_SECRET: Final = "secret"
TLS_MODE_SELF_SIGNED: Final = "selfsigned"


def child_labels(ctx: RegistryContext) -> dict[str, str]:
    """Labels of every child: `app` (the original's) and managed-by, which scopes the operator's caches."""
    return {c.LABEL_APP: ctx.app_label, c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE}


def child_metadata(
    ctx: RegistryContext, name: str, *, annotations: Mapping[str, str] | None = None, owned: bool = True
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": ctx.namespace, "labels": child_labels(ctx)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    if owned:
        metadata["ownerReferences"] = [ctx.owner_reference]
    return metadata
