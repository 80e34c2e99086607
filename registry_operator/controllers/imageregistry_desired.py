"""Pure builders of everything an ImageRegistry consists of; no API access, no clock, no randomness.

Each `desired_*()` returns the object as the operator server-side applies it: only the fields the
operator owns. Defaults the API server adds, labels users add (e.g. on the PVC) and values other
controllers allocate (a Service's clusterIP and nodePorts) are therefore left alone.

Pod layout (ARCHITECTURE §2): one StatefulSet pod with three containers
* `registry` (stock distribution v3): TLS on 5000, token auth; config from the ConfigMap, the serving
  certificate from the TLS Secret, only the token *certificate* from the token key Secret, and
  `REGISTRY_HTTP_SECRET` from a generated Secret all replicas share;
* `auth` (stock cesanta/docker_auth): TLS on 5001; config (with the ACL) and the ext_auth shim from the
  ConfigMap, the token signing key from the token key Secret;
* `authn` (the operator image, `registry-operator authn-server`): answers the shim on 127.0.0.1:5002.
  It is the only container that gets Kubernetes API credentials (a projected ServiceAccount token);
  the pod itself does not automount one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from registry_operator import dockerauth
from registry_operator.accounts import AUTHN_PATH, DEFAULT_AUTHN_PORT, HEALTH_PATH
from registry_operator.api import constants as c
from registry_operator.api import names
from registry_operator.api.imageregistry import ImageRegistrySpec
from registry_operator.controllers.common import Object, secret_data

# --- paths inside the pod -------------------------------------------------------------------------
REGISTRY_CONFIG_DIR: Final = "/etc/distribution"  # the stock image's default config location
REGISTRY_CONFIG_FILE: Final = "config.yml"
AUTH_CONFIG_DIR: Final = "/config"  # the stock docker_auth image's default config location
AUTH_CONFIG_FILE: Final = "auth_config.yml"
SHIM_FILE: Final = "ext_auth_shim.sh"
TLS_DIR: Final = "/etc/registry-operator/tls"
TOKEN_DIR: Final = "/etc/registry-operator/token"
STORAGE_DIR: Final = dockerauth.DEFAULT_STORAGE_ROOT
SERVICE_ACCOUNT_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"

# --- ConfigMap / Secret keys ----------------------------------------------------------------------
CONFIG_KEY_REGISTRY: Final = "registry.yml"
CONFIG_KEY_AUTH: Final = AUTH_CONFIG_FILE
CONFIG_KEY_SHIM: Final = SHIM_FILE
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
# A kubelet-managed ServiceAccount token's default lifetime (the client re-reads the file).
TOKEN_EXPIRATION_SECONDS: Final = 3607

# Certificates cert-manager issues for a registry (the original's values).
CERT_MANAGER_DURATION: Final = "2160h"
CERT_MANAGER_RENEW_BEFORE: Final = "480h"
_MAX_COMMON_NAME: Final = 64


@dataclass(frozen=True)
class RegistryContext:
    """Who a registry is: everything the builders need besides its spec."""

    name: str
    namespace: str
    uid: str
    generation: int
    hostname: str
    spec: ImageRegistrySpec

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


def server_dns_names(name: str, namespace: str, dns_zone: str) -> list[str]:
    """SANs of the serving certificate (the original's order; the first one is the CN)."""
    dns = [f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}.svc"]
    if dns_zone != c.DEFAULT_DNS_ZONE:
        dns.insert(0, names.registry_hostname(name, namespace, dns_zone))
    return dns


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


# --- configuration -----------------------------------------------------------------------------------


def acl_of(spec: ImageRegistrySpec) -> list[dict[str, Any]] | None:
    """`spec.auth.acl` in docker_auth's format; None selects the default ACL.

    An empty list denies everyone, as the API documents (docker_auth itself would refuse an empty
    ACL, so it is written as one deny-all rule).
    """
    if spec.auth is None or spec.auth.acl is None:
        return None
    if not spec.auth.acl:
        return [{"match": {}, "actions": [], "comment": "spec.auth.acl is empty: deny everything"}]
    return [entry.to_dict() for entry in spec.auth.acl]


def render_registry_config(ctx: RegistryContext) -> str:
    return dockerauth.render_registry_config(
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


def render_auth_config(ctx: RegistryContext) -> str:
    """docker_auth's config; raises dockerauth.AclError for an ACL docker_auth would not accept."""
    return dockerauth.render_docker_auth_config(
        token_issuer=dockerauth.token_issuer(ctx.hostname),
        token_cert_path=f"{TOKEN_DIR}/tls.crt",
        token_key_path=f"{TOKEN_DIR}/tls.key",
        ext_auth_shim_path=f"{AUTH_CONFIG_DIR}/{SHIM_FILE}",
        authn_url=AUTHN_URL,
        server_addr=f":{c.AUTH_PORT}",
        server_cert_path=f"{TLS_DIR}/tls.crt",
        server_key_path=f"{TLS_DIR}/tls.key",
        acl=acl_of(ctx.spec),
    )


def desired_config_map(ctx: RegistryContext, registry_config: str, auth_config: str, shim: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(ctx, names.registry_auth_config_name(ctx.name)),
        "data": {CONFIG_KEY_REGISTRY: registry_config, CONFIG_KEY_AUTH: auth_config, CONFIG_KEY_SHIM: shim},
    }


# --- secrets -----------------------------------------------------------------------------------------


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


def desired_certificate(ctx: RegistryContext, dns_names: Sequence[str]) -> Object:
    """The cert-manager Certificate for `spec.tls.issuerRef` (90 days, renewed 20 days before)."""
    issuer = ctx.spec.tls.issuer_ref
    if issuer is None:
        raise ValueError("desired_certificate needs spec.tls.issuerRef")
    issuer_ref: dict[str, str] = {"name": issuer.name, "kind": issuer.kind}
    if issuer.group:
        issuer_ref["group"] = issuer.group
    spec: dict[str, Any] = {
        "secretName": ctx.tls_secret_name,
        "dnsNames": list(dns_names),
        "duration": CERT_MANAGER_DURATION,
        "renewBefore": CERT_MANAGER_RENEW_BEFORE,
        "issuerRef": issuer_ref,
        "privateKey": {"algorithm": "RSA", "size": 2048, "rotationPolicy": "Always"},
        "usages": ["server auth", "digital signature", "key encipherment"],
    }
    if dns_names and len(dns_names[0]) <= _MAX_COMMON_NAME:
        spec["commonName"] = dns_names[0]
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": child_metadata(ctx, names.registry_certificate_name(ctx.name)),
        "spec": spec,
    }


# --- StatefulSet ---------------------------------------------------------------------------------------


def _security_context(*, read_only_root: bool = True) -> dict[str, Any]:
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


def _registry_container(image: str, http_secret_name: str) -> dict[str, Any]:
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
        ],
        "volumeMounts": [
            {"name": "images", "mountPath": STORAGE_DIR},
            {"name": "registry-config", "mountPath": REGISTRY_CONFIG_DIR, "readOnly": True},
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "token-cert", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "registry-tmp", "mountPath": "/tmp"},
        ],
        # The registry answers 200 on `/` (distribution's "alive" handler), also without credentials.
        "readinessProbe": _https_probe(c.REGISTRY_PORT, failure_threshold=3),
        "livenessProbe": _https_probe(c.REGISTRY_PORT, failure_threshold=6),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": _security_context(),
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
        "securityContext": _security_context(),
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
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": _security_context(),
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
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": POD_UID,
            "runAsGroup": POD_UID,
            "fsGroup": POD_UID,
            # A large image volume would otherwise be chown-ed recursively on every start.
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            _registry_container(image_registry, names.registry_http_secret_name(name)),
            _auth_container(image_auth),
            _authn_container(image_operator, ctx.namespace),
        ],
        "volumes": [
            {"name": "images", "persistentVolumeClaim": {"claimName": names.registry_pvc_name(name)}},
            _secret_volume("tls", tls_secret_name, ["tls.crt", "tls.key"]),
            # The registry only needs the certificate; the signing key goes to docker_auth alone.
            _secret_volume("token-cert", token_secret, ["tls.crt"]),
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
                    "items": [
                        {"key": CONFIG_KEY_AUTH, "path": AUTH_CONFIG_FILE},
                        {"key": CONFIG_KEY_SHIM, "path": SHIM_FILE},
                    ],
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


# --- readiness -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    """The Ready condition's view of the StatefulSet."""

    ready: bool
    message: str


def rollout_state(statefulset: Mapping[str, Any] | None, desired_replicas: int) -> Rollout:
    """Ready once the StatefulSet controller has seen the current spec and every desired pod is
    updated and ready (and no surplus pod is left)."""
    if statefulset is None:
        return Rollout(False, f"0/{desired_replicas} pods updated: the StatefulSet does not exist yet")
    generation = (statefulset.get("metadata") or {}).get("generation") or 0
    status = statefulset.get("status") or {}
    if (status.get("observedGeneration") or 0) < generation:
        return Rollout(
            False, f"0/{desired_replicas} pods updated: the StatefulSet change is not observed yet"
        )
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    current = int(status.get("replicas") or 0)
    if updated >= desired_replicas and ready >= desired_replicas and current == desired_replicas:
        return Rollout(True, f"{ready}/{desired_replicas} pods ready")
    return Rollout(
        False,
        f"{min(updated, desired_replicas)}/{desired_replicas} pods updated, "
        f"{min(ready, desired_replicas)}/{desired_replicas} ready"
        + (f", {current - desired_replicas} surplus pods terminating" if current > desired_replicas else ""),
    )
