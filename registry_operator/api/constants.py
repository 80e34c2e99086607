"""Names, keys and reasons shared by the API types, the controllers and the manifests.

The values of the original operator (mgoltzsche/image-registry-operator) are kept wherever users or
existing clusters can see them (REFERENCE-BEHAVIOUR §12): renaming a key would orphan objects that an
earlier installation created.
"""

from __future__ import annotations

from typing import Final, Literal

GROUP: Final = "registry.mgoltzsche.github.com"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "registry.mgoltzsche.github.com/v1alpha1"

# Kinds and their plural resource names (the URL path segment).
KIND_IMAGE_REGISTRY: Final = "ImageRegistry"
KIND_IMAGE_REGISTRY_ACCOUNT: Final = "ImageRegistryAccount"
KIND_IMAGE_PUSH_SECRET: Final = "ImagePushSecret"
KIND_IMAGE_PULL_SECRET: Final = "ImagePullSecret"
KIND_IMAGE_BUILD_ENV: Final = "ImageBuildEnv"

PLURAL_IMAGE_REGISTRIES: Final = "imageregistries"
PLURAL_IMAGE_REGISTRY_ACCOUNTS: Final = "imageregistryaccounts"
PLURAL_IMAGE_PUSH_SECRETS: Final = "imagepushsecrets"
PLURAL_IMAGE_PULL_SECRETS: Final = "imagepullsecrets"
PLURAL_IMAGE_BUILD_ENVS: Final = "imagebuildenvs"

# The kubectl category all five CRDs belong to: `kubectl get registry-operator` lists them together.
# They stay out of `all` on purpose: `kubectl delete all` must not remove registries or accounts.
CATEGORY: Final = "registry-operator"

# --- finalizers -----------------------------------------------------------------------------------
# Push/pull secret CRs: delete the CR's accounts in the registry namespace before the CR goes away.
FINALIZER_ACCOUNTS: Final = "registry.mgoltzsche.github.com/accounts"
# ImageBuildEnv: remove the back-references the env put on its input secrets.
FINALIZER_INPUT_REFS: Final = "registry.mgoltzsche.github.com/inputrefs"

# --- annotations ----------------------------------------------------------------------------------
# On a generated push/pull Secret: the CR's `status.rotation` the secret's credentials belong to.
ANNOTATION_ROTATION: Final = "registry.mgoltzsche.github.com/rotation"
# On a push/pull secret CR, set by a user: any new value requests one immediate rotation. The last
# value handled is recorded in `status.rotateRequest`, so the same value never rotates twice.
ANNOTATION_ROTATE: Final = "registry.mgoltzsche.github.com/rotate"
# On a registry PVC: `<registry name>.<registry namespace>` (kept from the original for existing PVCs).
ANNOTATION_IMAGE_REGISTRY: Final = "registry.mgoltzsche.github.com/imageregistry"
# On a registry StatefulSet: the ImageRegistry generation it was rendered from, and the hostname.
ANNOTATION_GENERATION: Final = "registry.mgoltzsche.github.com/generation"
ANNOTATION_EXTERNAL_NAME: Final = "registry.mgoltzsche.github.com/externalName"
# On a registry pod template: hash of the mounted certificates and config, so a change rolls the pods.
ANNOTATION_CONFIG_HASH: Final = "registry.mgoltzsche.github.com/config-hash"
# Rollover state on the root CA Secret and on a registry's token key Secret (phase, since when, why).
ANNOTATION_ROLLOVER_PHASE: Final = "registry.mgoltzsche.github.com/rollover-phase"
ANNOTATION_ROLLOVER_SINCE: Final = "registry.mgoltzsche.github.com/rollover-since"
ANNOTATION_ROLLOVER_REASON: Final = "registry.mgoltzsche.github.com/rollover-reason"
# On the root CA Secret: what a rollover in progress waits for (which registry or Secret, until when).
ANNOTATION_ROLLOVER_WAITING: Final = "registry.mgoltzsche.github.com/rollover-waiting"
# On the root CA Secret: the last value of ANNOTATION_ROTATE that started a rollover.
ANNOTATION_ROTATE_HANDLED: Final = "registry.mgoltzsche.github.com/rotate-handled"
# Extra keys of a Secret in rollover: the next key pair (not used yet), the previous certificate
# (still trusted), and the token key Secret's trust bundle (the registry's rootcertbundle).
SECRET_KEY_NEXT_CERT: Final = "next.crt"
SECRET_KEY_NEXT_KEY: Final = "next.key"
SECRET_KEY_PREVIOUS_CERT: Final = "previous.crt"
SECRET_KEY_TRUST_BUNDLE: Final = "bundle.crt"
ROLLOVER_STABLE: Final = "Stable"
ROLLOVER_DISTRIBUTING: Final = "Distributing"
ROLLOVER_RETIRING: Final = "Retiring"
ROLLOVER_SWITCHING: Final = "Switching"
# On a registry Service: the hostname external-dns should publish.
ANNOTATION_EXTERNAL_DNS_HOSTNAME: Final = "external-dns.alpha.kubernetes.io/hostname"

# --- labels ---------------------------------------------------------------------------------------
LABEL_APP: Final = "app"
LABEL_NAME: Final = "name"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "image-registry-operator"
OPERATOR_NAME_VALUE: Final = "image-registry-operator"
# Metadata labels on operator-generated ImageRegistryAccounts. Value: the owning CR's name. The original
# wrote `<name>.<namespace>` into one label, which fails label validation beyond 63 characters and needs
# splitting at a dot; the namespace now has a label of its own.
LABEL_IMAGE_PUSH_SECRET: Final = "registry.mgoltzsche.github.com/imagepushsecret"
LABEL_IMAGE_PULL_SECRET: Final = "registry.mgoltzsche.github.com/imagepullsecret"
LABEL_SECRET_NAMESPACE: Final = "registry.mgoltzsche.github.com/secret-namespace"

# `spec.labels` keys of operator-generated accounts, matched by the docker_auth ACL.
ACCOUNT_LABEL_NAMESPACE: Final = "namespace"
ACCOUNT_LABEL_NAME: Final = "name"
ACCOUNT_LABEL_ACCESS_MODE: Final = "accessMode"
# Added by the authn sidecar at login (never stored on the account).
ACCOUNT_LABEL_ORIGIN: Final = "origin"
ACCOUNT_LABEL_ACCOUNT: Final = "account"
ACCOUNT_ORIGIN_CR: Final = "cr"

AccessMode = Literal["push", "pull"]
ACCESS_MODE_PUSH: Final = "push"
ACCESS_MODE_PULL: Final = "pull"

# --- secret data keys -----------------------------------------------------------------------------
SECRET_KEY_CA_CERT: Final = "ca.crt"
SECRET_KEY_TLS_CERT: Final = "tls.crt"
SECRET_KEY_TLS_KEY: Final = "tls.key"
SECRET_KEY_REGISTRY: Final = "registry"
SECRET_KEY_USERNAME: Final = "username"
SECRET_KEY_PASSWORD: Final = "password"
SECRET_KEY_DOCKER_CONFIG_JSON: Final = ".dockerconfigjson"
SECRET_KEY_CONFIG_JSON: Final = "config.json"
SECRET_KEY_MAKISU_YAML: Final = "makisu.yaml"
SECRET_KEY_REDIS: Final = "redis"
SECRET_KEY_REDIS_PASSWORD: Final = "redis_password"
SECRET_KEY_REDIS_CONF: Final = "redis.conf"

SECRET_TYPE_DOCKER_CONFIG_JSON: Final = "kubernetes.io/dockerconfigjson"
SECRET_TYPE_OPAQUE: Final = "Opaque"
SECRET_TYPE_TLS: Final = "kubernetes.io/tls"

# --- the operator's own objects -------------------------------------------------------------------
ROOT_CA_SECRET_NAME: Final = "image-registry-root-ca"
ROOT_CA_COMMON_NAME: Final = "image-registry-operator.caroot.local"
DEFAULT_DNS_ZONE: Final = "svc.cluster.local"

# --- ports ----------------------------------------------------------------------------------------
REGISTRY_PORT: Final = 5000
AUTH_PORT: Final = 5001
SERVICE_HTTPS_PORT: Final = 443
REDIS_PORT: Final = 6379

# --- conditions -----------------------------------------------------------------------------------
CONDITION_READY: Final = "Ready"
# ImageRegistry only: whether the last reconcile wrote every child object (False carries the error).
CONDITION_SYNCED: Final = "Synced"

# Reasons. Kubernetes requires a non-empty CamelCase reason on every condition, so the `True` cases
# have reasons too (the original left them empty).
REASON_AVAILABLE: Final = "Available"  # Ready=True on every kind
REASON_SYNCED: Final = "Synced"  # Synced=True
REASON_FAILED_SYNC: Final = "FailedSync"  # writing children or rotating credentials failed
REASON_UPDATING: Final = "Updating"  # registry pods are rolling out
REASON_REGISTRY_UNAVAILABLE: Final = "RegistryUnavailable"  # referenced registry missing or not Ready
REASON_FAILED_UPDATE: Final = "FailedUpdate"  # updating the object itself or its output failed
REASON_MISSING_SECRET: Final = "MissingSecret"  # an input or referenced secret does not exist
REASON_INVALID_SECRET: Final = "InvalidSecret"  # an input or referenced secret has unusable content
REASON_PENDING: Final = "Pending"  # waiting for something outside the operator (redis, cert-manager)
REASON_EXPIRED: Final = "Expired"  # ImageRegistryAccount: its TTL has passed
REASON_INVALID_SPEC: Final = "InvalidSpec"  # the spec passed the schema but cannot be acted on
REASON_NAMESPACE_NOT_ALLOWED: Final = "NamespaceNotAllowed"  # the registry's spec.auth.namespaces says no
REASON_INVALID_AUTH_CONFIG: Final = (
    "InvalidAuthConfig"  # rendered docker_auth config docker_auth would refuse
)

ALL_REASONS: Final = (
    REASON_AVAILABLE,
    REASON_SYNCED,
    REASON_FAILED_SYNC,
    REASON_UPDATING,
    REASON_REGISTRY_UNAVAILABLE,
    REASON_FAILED_UPDATE,
    REASON_MISSING_SECRET,
    REASON_INVALID_SECRET,
    REASON_PENDING,
    REASON_EXPIRED,
    REASON_INVALID_SPEC,
    REASON_NAMESPACE_NOT_ALLOWED,
    REASON_INVALID_AUTH_CONFIG,
)
