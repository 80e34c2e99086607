"""The workload of a registry: the StatefulSet (pod layout below), its Service, the authn sidecar's
ServiceAccount, Role and RoleBinding, and the storage claim. Pure `desired_*()` builders return only
the fields the operator owns, so defaults the API server adds, labels users add (e.g. on the PVC)
and values other controllers allocate (a Service's clusterIP and nodePorts) are left alone.

Pod layout (ARCHITECTURE §2): one StatefulSet pod with three containers
* `registry` (stock distribution v3): TLS on 5000, token auth; config from the ConfigMap, the serving
  certificate from the TLS Secret, only the token *certificate* from the token key Secret, and
  `REGISTRY_HTTP_SECRET` from a generated Secret all replicas share;
* `auth` (stock cesanta/docker_auth): TLS on 5001; config (with the ACL) from the ConfigMap, the token
  signing key from the token key Secret; its ext_auth runs the image's busybox wget;
* `authn` (the operator image, `registry-operator authn-server`): answers that wget on 127.0.0.1:5002.
  It is the only container that gets Kubernetes API credentials (a projected ServiceAccount token);
  the pod itself does not automount one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from registry_operator import dockerauth
from registry_operator.accounts import DEFAULT_AUTHN_PORT, HEALTH_PATH
from registry_operator.api import constants as c
from registry_operator.api import names
from registry_operator.api.imageregistry import ImageRegistrySpec
from registry_operator.controllers.common import Object, controlled_by_uid
from registry_operator.controllers.imageregistry.base import RegistryPart
from registry_operator.controllers.imageregistry.context import (
    AUTH_CONFIG_DIR,
    AUTH_CONFIG_FILE,
    CONFIG_KEY_AUTH,
    CONFIG_KEY_REGISTRY,
    CONTAINER_AUTH,
    CONTAINER_AUTHN,
    CONTAINER_REGISTRY,
    HTTP_SECRET_KEY,
    POD_UID,
    PORT_NAME_AUTH,
    PORT_NAME_REGISTRY,
    REGISTRY_CONFIG_DIR,
    REGISTRY_CONFIG_FILE,
    SECRET_FILE_MODE,
    SERVICE_ACCOUNT_DIR,
    TLS_DIR,
    TOKEN_DIR,
    RegistryContext,
    child_metadata,
)
from registry_operator.controllers.imageregistry.storage import storage_env, storage_mounts, storage_volumes
from registry_operator.controllers.resources import PERSISTENT_VOLUME_CLAIMS

# A kubelet-managed ServiceAccount token's default lifetime (the client re-reads the file).
TOKEN_EXPIRATION_SECONDS: Final = 3607


# --- RBAC for the authn sidecar --------------------------------------------------------------------


def desired_service_account(ctx: RegistryContext) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": child_metadata(ctx, names.registry_service_account_name(ctx.name)),
    }


def desired_role(ctx: RegistryContext) -> Object:
    """Read the accounts of this namespace and this one registry; nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": child_metadata(ctx, names.registry_service_account_name(ctx.name)),
        "rules": [
            {
                "apiGroups": [c.GROUP],
                "resources": [c.PLURAL_IMAGE_REGISTRY_ACCOUNTS],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": [c.GROUP],
                "resources": [c.PLURAL_IMAGE_REGISTRIES],
                "resourceNames": [ctx.name],
                "verbs": ["get"],
            },
        ],
    }


def desired_role_binding(ctx: RegistryContext) -> Object:
    name = names.registry_service_account_name(ctx.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": child_metadata(ctx, name),
        # apiGroup is left out: it is "" for ServiceAccounts and the API omits empty strings, so an
        # explicit "" would never compare equal to what the cache holds.
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ctx.namespace}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
    }


# --- Service and storage ---------------------------------------------------------------------------


def desired_service(ctx: RegistryContext) -> Object:
    """443 → registry, 5001 → docker_auth (the token realm is `https://<hostname>:5001/auth`).

    clusterIP and nodePorts are not set here, so the API server's allocations stay untouched.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(
            ctx,
            names.registry_service_name(ctx.name),
            annotations={c.ANNOTATION_EXTERNAL_DNS_HOSTNAME: ctx.hostname},
        ),
        "spec": {
            "type": ctx.spec.service.type,
            "selector": {c.LABEL_APP: ctx.app_label},
            "ports": [
                {
                    "name": PORT_NAME_REGISTRY,
                    "port": c.SERVICE_HTTPS_PORT,
                    "targetPort": c.REGISTRY_PORT,
                    "protocol": "TCP",
                },
                {"name": PORT_NAME_AUTH, "port": c.AUTH_PORT, "targetPort": c.AUTH_PORT, "protocol": "TCP"},
            ],
        },
    }


def desired_pvc(ctx: RegistryContext) -> Object:
    """The image volume. Owned by the registry (and garbage-collected with it) only with deleteClaim.

    With deleteClaim false the ownerReference is left out: server-side apply then removes the one
    the operator set earlier (toggling true → false un-owns the claim) and keeps any other owner.
    """
    claim = ctx.spec.persistent_volume_claim
    assert claim is not None, "no claim with S3 storage"
    resources: dict[str, Any] = {"requests": {"storage": str(claim.resources.requests.storage)}}
    if claim.resources.limits is not None and claim.resources.limits.storage is not None:
        resources["limits"] = {"storage": str(claim.resources.limits.storage)}
    spec: dict[str, Any] = {"accessModes": list(claim.access_modes), "resources": resources}
    if claim.storage_class_name:
        spec["storageClassName"] = claim.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": child_metadata(
            ctx,
            names.registry_pvc_name(ctx.name),
            annotations={
                c.ANNOTATION_IMAGE_REGISTRY: names.registry_pvc_annotation_value(ctx.name, ctx.namespace)
            },
            owned=claim.delete_claim,
        ),
        "spec": spec,
    }


# --- StatefulSet ---------------------------------------------------------------------------------------


def pod_security_context() -> dict[str, Any]:
    """Registry pods and the garbage collector: the same non-root user on the same volume."""
    return {
        "runAsNonRoot": True,
        "runAsUser": POD_UID,
        "runAsGroup": POD_UID,
        "fsGroup": POD_UID,
        # A large image volume would otherwise be chown-ed recursively on every start.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(*, read_only_root: bool = True) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
    }


def _https_probe(port: int, *, failure_threshold: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/", "port": port, "scheme": "HTTPS"},
        "periodSeconds": 10,
        "timeoutSeconds": 3,
        "failureThreshold": failure_threshold,
    }


def _secret_volume(name: str, secret_name: str, keys: Sequence[str]) -> dict[str, Any]:
    return {
        "name": name,
        "secret": {
            "secretName": secret_name,
            "items": [{"key": key, "path": key} for key in keys],
            "defaultMode": SECRET_FILE_MODE,
        },
    }


def _registry_container(image: str, http_secret_name: str, spec: ImageRegistrySpec) -> dict[str, Any]:
    return {
        "name": CONTAINER_REGISTRY,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["serve", f"{REGISTRY_CONFIG_DIR}/{REGISTRY_CONFIG_FILE}"],
        "ports": [{"name": PORT_NAME_REGISTRY, "containerPort": c.REGISTRY_PORT, "protocol": "TCP"}],
        "env": [
            *({"name": key, "value": value} for key, value in sorted(dockerauth.REGISTRY_ENV.items())),
            {
                "name": "REGISTRY_HTTP_SECRET",
                "valueFrom": {"secretKeyRef": {"name": http_secret_name, "key": HTTP_SECRET_KEY}},
            },
            *storage_env(spec),
        ],
        "volumeMounts": [
            *storage_mounts(spec),
            {"name": "registry-config", "mountPath": REGISTRY_CONFIG_DIR, "readOnly": True},
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "token-cert", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "registry-tmp", "mountPath": "/tmp"},
        ],
        # The registry answers 200 on `/` (distribution's "alive" handler), also without credentials.
        "readinessProbe": _https_probe(c.REGISTRY_PORT, failure_threshold=3),
        "livenessProbe": _https_probe(c.REGISTRY_PORT, failure_threshold=6),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": container_security_context(),
    }


def _auth_container(image: str) -> dict[str, Any]:
    return {
        "name": CONTAINER_AUTH,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        # Log to stderr only: glog exits the process when it cannot create its log files.
        "args": ["--logtostderr", "--v=2", f"{AUTH_CONFIG_DIR}/{AUTH_CONFIG_FILE}"],
        "ports": [{"name": PORT_NAME_AUTH, "containerPort": c.AUTH_PORT, "protocol": "TCP"}],
        "volumeMounts": [
            {"name": "auth-config", "mountPath": AUTH_CONFIG_DIR, "readOnly": True},
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "token-key", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "auth-tmp", "mountPath": "/tmp"},
        ],
        "readinessProbe": _https_probe(c.AUTH_PORT, failure_threshold=3),
        "livenessProbe": _https_probe(c.AUTH_PORT, failure_threshold=6),
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": container_security_context(),
    }


def authn_probe(failure_threshold: int, port: int = DEFAULT_AUTHN_PORT) -> dict[str, Any]:
    # The sidecar listens on 127.0.0.1 only (credentials never leave the pod) and kubelet's HTTP
    # probes go to the pod IP, so the probe runs inside the container: plain stdlib Python, no
    # operator import, so it costs tens of milliseconds.
    url = f"http://127.0.0.1:{port}{HEALTH_PATH}"
    return {
        "exec": {
            "command": ["python", "-c", f"import urllib.request; urllib.request.urlopen({url!r}, timeout=2)"]
        },
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def _authn_container(image: str, namespace: str) -> dict[str, Any]:
    return {
        "name": CONTAINER_AUTHN,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["authn-server", "--namespace", namespace, "--port", str(DEFAULT_AUTHN_PORT)],
        "env": [{"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "volumeMounts": [{"name": "authn-api-token", "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}],
        "readinessProbe": authn_probe(failure_threshold=3),
        "livenessProbe": authn_probe(failure_threshold=6),
        # Measured in the docker_auth lane: 56 MiB, 38 threads at the peak of a 500 wrong-password burst.
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": container_security_context(),
    }


def desired_statefulset(
    ctx: RegistryContext,
    *,
    image_registry: str,
    image_auth: str,
    image_operator: str,
    tls_secret_name: str,
    config_hash: str,
) -> Object:
    """The registry pods. `config_hash` (pod-template annotation) rolls them when mounted material changes."""
    name = ctx.name
    token_secret = names.registry_token_key_secret_name(name)
    config_map = names.registry_auth_config_name(name)
    pod_spec: dict[str, Any] = {
        "serviceAccountName": names.registry_service_account_name(name),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [
            _registry_container(image_registry, names.registry_http_secret_name(name), ctx.spec),
            _auth_container(image_auth),
            _authn_container(image_operator, ctx.namespace),
        ],
        "volumes": [
            *storage_volumes(ctx),
            _secret_volume("tls", tls_secret_name, ["tls.crt", "tls.key"]),
            # The registry only needs the certificates it trusts (`bundle.crt`: during a token key
            # rollover the previous and the next one) at its rootcertbundle path; the signing key goes
            # to docker_auth alone.
            {
                "name": "token-cert",
                "secret": {
                    "secretName": token_secret,
                    "items": [{"key": c.SECRET_KEY_TRUST_BUNDLE, "path": "tls.crt"}],
                    "defaultMode": SECRET_FILE_MODE,
                },
            },
            _secret_volume("token-key", token_secret, ["tls.crt", "tls.key"]),
            {
                "name": "registry-config",
                "configMap": {
                    "name": config_map,
                    "items": [{"key": CONFIG_KEY_REGISTRY, "path": REGISTRY_CONFIG_FILE}],
                },
            },
            {
                "name": "auth-config",
                "configMap": {
                    "name": config_map,
                    "items": [{"key": CONFIG_KEY_AUTH, "path": AUTH_CONFIG_FILE}],
                },
            },
            {"name": "registry-tmp", "emptyDir": {}},
            {"name": "auth-tmp", "emptyDir": {}},
            {
                # What kubelet would automount, for the authn container only.
                "name": "authn-api-token",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "path": "token",
                                "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                            }
                        },
                        {
                            "configMap": {
                                "name": "kube-root-ca.crt",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                        {
                            "downwardAPI": {
                                "items": [
                                    {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                                ]
                            }
                        },
                    ]
                },
            },
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": child_metadata(
            ctx,
            names.registry_statefulset_name(name),
            annotations={
                c.ANNOTATION_GENERATION: str(ctx.generation),
                c.ANNOTATION_EXTERNAL_NAME: ctx.hostname,
            },
        ),
        "spec": {
            "replicas": ctx.spec.replicas,
            "serviceName": names.registry_service_name(name),
            "selector": {"matchLabels": {c.LABEL_APP: ctx.app_label}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {
                    "labels": {c.LABEL_APP: ctx.app_label},
                    "annotations": {c.ANNOTATION_CONFIG_HASH: config_hash},
                },
                "spec": pod_spec,
            },
        },
    }


class Workload(RegistryPart):
    """Writes the workload objects that need more than `ensure` (the others go through `_apply`)."""

    def ensure_pvc(self, ctx: RegistryContext) -> None:
        claim = ctx.spec.persistent_volume_claim
        if claim is None:
            # Object storage. A claim left from PVC storage is kept: it holds the images until
            # someone who knows they were moved deletes it.
            return
        desired = desired_pvc(ctx)
        current = self._stores.pvcs.get_by_name(ctx.namespace, desired["metadata"]["name"])
        stale_owner = current is not None and not claim.delete_claim and controlled_by_uid(current, ctx.uid)
        # `contains` cannot see a field that must go away: with deleteClaim turned off, apply once
        # more so that server-side apply drops the owner reference the operator set before.
        self._apply(PERSISTENT_VOLUME_CLAIMS, desired, None if stale_owner else current)
