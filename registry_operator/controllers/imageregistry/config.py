"""Rendered configuration of a registry: distribution's config and docker_auth's config (the default
ACL or `spec.auth.acl`), in one ConfigMap the pods mount.
"""

from __future__ import annotations

from typing import Any

from registry_operator import dockerauth
from registry_operator.api import constants as c
from registry_operator.api import names
from registry_operator.api.imageregistry import ImageRegistrySpec
from registry_operator.config import Settings
from registry_operator.controllers.common import Object
from registry_operator.controllers.imageregistry.base import RegistryPart, RegistryStores
from registry_operator.controllers.imageregistry.context import (
    AUTHN_URL,
    CONFIG_KEY_AUTH,
    CONFIG_KEY_LEGACY_SHIM,
    CONFIG_KEY_REGISTRY,
    STORAGE_DIR,
    TLS_DIR,
    TOKEN_DIR,
    RegistryContext,
    child_metadata,
)
from registry_operator.controllers.imageregistry.storage import storage_config
from registry_operator.controllers.resources import CONFIGMAPS
from registry_operator.controllers.status import Problem
from registry_operator.kube.client import Client
from registry_operator.kube.events import EventRecorder


def acl_of(spec: ImageRegistrySpec, registry_namespace: str) -> list[dict[str, Any]] | None:
    """`spec.auth.acl` in docker_auth's format; None selects the default ACL, and
    `repositoryScope: Namespace` the namespace-scoped one.

    An empty list denies everyone, as the API documents (docker_auth itself would refuse an empty
    ACL, so it is written as one deny-all rule).
    """
    if spec.auth is None:
        return None
    if spec.auth.acl is None:
        scoped = spec.auth.repository_scope == "Namespace"
        return dockerauth.namespace_scoped_acl(registry_namespace) if scoped else None
    if not spec.auth.acl:
        return [{"match": {}, "actions": [], "comment": "spec.auth.acl is empty: deny everything"}]
    return [entry.to_dict() for entry in spec.auth.acl]


def render_registry_config(ctx: RegistryContext) -> str:
    config = dockerauth.registry_config(
        tls_cert_path=f"{TLS_DIR}/tls.crt",
        tls_key_path=f"{TLS_DIR}/tls.key",
        realm=dockerauth.token_realm(ctx.hostname),
        service=dockerauth.token_service(ctx.hostname),
        issuer=dockerauth.token_issuer(ctx.hostname),
        rootcertbundle=f"{TOKEN_DIR}/tls.crt",
        addr=f":{c.REGISTRY_PORT}",
        storage_root=STORAGE_DIR,
        http_host=f"https://{ctx.hostname}",
    )
    # spec.storage (PVC or S3) and garbage collection's read-only window.
    config["storage"] = storage_config(ctx.spec, read_only=ctx.storage_read_only)
    return dockerauth.to_yaml(config)


def render_auth_config(ctx: RegistryContext) -> str:
    """docker_auth's config; raises dockerauth.AclError for an ACL docker_auth would not accept."""
    return dockerauth.render_docker_auth_config(
        token_issuer=dockerauth.token_issuer(ctx.hostname),
        token_cert_path=f"{TOKEN_DIR}/tls.crt",
        token_key_path=f"{TOKEN_DIR}/tls.key",
        authn_url=AUTHN_URL,
        server_addr=f":{c.AUTH_PORT}",
        server_cert_path=f"{TLS_DIR}/tls.crt",
        server_key_path=f"{TLS_DIR}/tls.key",
        acl=acl_of(ctx.spec, ctx.namespace),
    )


# Pods of the previous template (ext_auth ran a shell shim) mount this key; it stays so that such a pod
# can still start while it waits for its turn to roll (a missing key fails the volume). The config
# they then load runs busybox wget directly, so the script itself is never run.
LEGACY_SHIM = "#!/bin/sh\n# Unused: docker_auth's ext_auth runs busybox wget directly.\nexit 3\n"


def desired_config_map(ctx: RegistryContext, registry_config: str, auth_config: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(ctx, names.registry_auth_config_name(ctx.name)),
        "data": {
            CONFIG_KEY_REGISTRY: registry_config,
            CONFIG_KEY_AUTH: auth_config,
            CONFIG_KEY_LEGACY_SHIM: LEGACY_SHIM,
        },
    }


class RegistryConfig(RegistryPart):
    """Keeps the ConfigMap of one registry as rendered."""

    def __init__(
        self, client: Client, stores: RegistryStores, settings: Settings, recorder: EventRecorder | None
    ) -> None:
        super().__init__(client, stores, settings, recorder)

    def ensure(self, ctx: RegistryContext) -> tuple[str, str]:
        """Apply the ConfigMap; return (registry config, docker_auth config) for the pod hash.
        An ACL docker_auth would refuse is a Problem, and the ConfigMap keeps its last good content."""
        registry_config = render_registry_config(ctx)
        try:
            auth_config = render_auth_config(ctx)
        except dockerauth.AclError as error:
            raise Problem(c.REASON_INVALID_SPEC, f"spec.auth.{error}") from error
        try:
            # Whatever the cause, a config docker_auth would exit on never replaces the running one.
            dockerauth.validate_docker_auth_config(auth_config)
        except dockerauth.DockerAuthConfigError as error:
            raise Problem(
                c.REASON_INVALID_AUTH_CONFIG,
                f"the rendered docker_auth configuration would be refused by docker_auth: {error}; "
                "the registry keeps its previous configuration",
            ) from error
        desired = desired_config_map(ctx, registry_config, auth_config)
        # Conditional: a writer with an older cache of the spec (a deposed leader) must not put an
        # older ACL back.
        self._ensure_cached(CONFIGMAPS, desired, self._stores.config_maps, conditional=True)
        return registry_config, auth_config
