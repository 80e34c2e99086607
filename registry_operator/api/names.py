"""Names of the objects the operator derives from a custom resource, and the name rules behind them.

Every derived name must itself be valid where Kubernetes uses it (a Service name is a DNS-1035 label,
a label value has at most 63 characters, ...). The CRDs therefore limit the length of each kind's
`metadata.name` (see the `MAX_*_NAME_LENGTH` constants, computed from the helpers below), so an object
the apiserver accepts never fails later at reconcile time because of its name.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from registry_operator.api.constants import (
    ACCESS_MODE_PULL,
    ACCESS_MODE_PUSH,
    LABEL_IMAGE_PULL_SECRET,
    LABEL_IMAGE_PUSH_SECRET,
    LABEL_SECRET_NAMESPACE,
    AccessMode,
)

# Kubernetes name grammars (k8s.io/apimachinery/pkg/util/validation).
DNS1123_LABEL_MAX_LENGTH: Final = 63
DNS1123_SUBDOMAIN_MAX_LENGTH: Final = 253
LABEL_VALUE_MAX_LENGTH: Final = 63
DNS1123_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1035_LABEL_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE_PATTERN: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"

_DNS1123_LABEL = re.compile(DNS1123_LABEL_PATTERN)
_DNS1035_LABEL = re.compile(DNS1035_LABEL_PATTERN)
_DNS1123_SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN_PATTERN)
_LABEL_VALUE = re.compile(LABEL_VALUE_PATTERN)


def is_dns1123_label(value: str) -> bool:
    return len(value) <= DNS1123_LABEL_MAX_LENGTH and _DNS1123_LABEL.match(value) is not None


def is_dns1035_label(value: str) -> bool:
    return len(value) <= DNS1123_LABEL_MAX_LENGTH and _DNS1035_LABEL.match(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= DNS1123_SUBDOMAIN_MAX_LENGTH and _DNS1123_SUBDOMAIN.match(value) is not None


def is_label_value(value: str) -> bool:
    return len(value) <= LABEL_VALUE_MAX_LENGTH and _LABEL_VALUE.match(value) is not None


# Prefix of a label value that stands for a name too long (or otherwise unfit) to be one.
HASHED_LABEL_PREFIX: Final = "sha256."


def label_value(text: str) -> str:
    """`text` if it is a valid label value, else a stable 63-character hash of it."""
    if is_label_value(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()
    return (HASHED_LABEL_PREFIX + digest)[:LABEL_VALUE_MAX_LENGTH]


# --- ImageRegistry --------------------------------------------------------------------------------


def registry_hostname(name: str, namespace: str, dns_zone: str) -> str:
    """The registry's public name, `<name>.<namespace>.<OPERATOR_DNS_ZONE>` (the Service name is `name`)."""
    return f"{name}.{namespace}.{dns_zone}"


def registry_app_label_value(name: str) -> str:
    """Value of label `app` on every child of a registry; also the pod selector."""
    return f"imageregistry-{name}"


def registry_service_name(name: str) -> str:
    return name


def registry_statefulset_name(name: str) -> str:
    return name


def registry_service_account_name(name: str) -> str:
    """Name of the registry pod's ServiceAccount, Role and RoleBinding."""
    return f"imageregistry-{name}"


def registry_pvc_name(name: str) -> str:
    return f"imageregistry-{name}-pvc"


def registry_pvc_annotation_value(name: str, namespace: str) -> str:
    """Value of ANNOTATION_IMAGE_REGISTRY on the PVC (informational; relations use owner/indexes)."""
    return f"{name}.{namespace}"


def registry_tls_secret_name(name: str, spec_secret_name: str | None, has_issuer_ref: bool) -> str:
    """The Secret holding the registry's serving certificate (`status.tlsSecretName`).

    `spec.tls.secretName` wins; with an issuerRef cert-manager then writes into that secret.
    """
    if spec_secret_name:
        return spec_secret_name
    if has_issuer_ref:
        return f"imageregistry-{name}-cm-tls"
    return f"imageregistry-{name}-selfsigned-tls"


def registry_certificate_name(name: str) -> str:
    """The cert-manager Certificate the operator creates when `spec.tls.issuerRef` is set."""
    return f"imageregistry-{name}-tls"


def registry_token_key_secret_name(name: str) -> str:
    """The Secret with the RSA key pair docker_auth signs tokens with and the registry verifies."""
    return f"imageregistry-{name}-auth-token"


def registry_http_secret_name(name: str) -> str:
    """Holds REGISTRY_HTTP_SECRET, shared by all replicas so chunked uploads survive load balancing."""
    return f"imageregistry-{name}-http-secret"


def registry_auth_config_name(name: str) -> str:
    """The ConfigMap with the rendered registry and docker_auth configs."""
    return f"imageregistry-{name}-auth-config"


# --- ImagePushSecret / ImagePullSecret ------------------------------------------------------------


def image_secret_name(mode: AccessMode, cr_name: str) -> str:
    """The generated Secret of an ImagePushSecret (`imagepushsecret-<name>`) or ImagePullSecret."""
    return f"image{mode}secret-{cr_name}"


def push_secret_name(cr_name: str) -> str:
    return image_secret_name(ACCESS_MODE_PUSH, cr_name)


def pull_secret_name(cr_name: str) -> str:
    return image_secret_name(ACCESS_MODE_PULL, cr_name)


def account_name(mode: AccessMode, cr_namespace: str, cr_name: str, rotation: int) -> str:
    """The ImageRegistryAccount (and login user name) of one credential: `<mode>.<ns>.<name>.<rotation>`."""
    return f"{mode}.{cr_namespace}.{cr_name}.{rotation}"


def account_label_key(mode: AccessMode) -> str:
    return LABEL_IMAGE_PUSH_SECRET if mode == ACCESS_MODE_PUSH else LABEL_IMAGE_PULL_SECRET


def account_metadata_labels(mode: AccessMode, cr_name: str, cr_namespace: str) -> dict[str, str]:
    """Metadata labels of the accounts of one push/pull secret CR; also its exact cleanup selector.
    A CR name longer than a label value (DNS subdomains may be) is hashed."""
    return {account_label_key(mode): label_value(cr_name), LABEL_SECRET_NAMESPACE: label_value(cr_namespace)}


def account_label_selector(mode: AccessMode, cr_name: str, cr_namespace: str) -> str:
    """Label selector (`k=v,k=v`) matching exactly the accounts of one CR (the original matched all)."""
    labels = account_metadata_labels(mode, cr_name, cr_namespace)
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


# --- ImageBuildEnv --------------------------------------------------------------------------------


def build_env_secret_name(name: str) -> str:
    """The merged docker config / makisu config Secret of an ImageBuildEnv."""
    return f"imagebuildenv-{name}-conf"


def build_env_redis_name(name: str) -> str:
    """Name of the redis Deployment and Service, and value of its `app` label."""
    return f"imagebuildenv-{name}-redis"


def build_env_redis_secret_name(name: str) -> str:
    return f"imagebuildenv-{name}-redis-conf"


# --- name length limits enforced by the CRDs ------------------------------------------------------


# ImageRegistry: the `app` label value `imageregistry-<name>` is the tightest limit (also a DNS-1035
# label, since the Service is named after the registry).
MAX_REGISTRY_NAME_LENGTH: Final = LABEL_VALUE_MAX_LENGTH - len(registry_app_label_value(""))
# Push/pull secret CRs: any DNS subdomain (dots too) short enough that the longest account name,
# `<mode>.<63-char namespace>.<name>.<int64 rotation>`, is one as well; label values hash long names.
MAX_IMAGE_SECRET_NAME_LENGTH: Final = DNS1123_SUBDOMAIN_MAX_LENGTH - len(
    account_name(ACCESS_MODE_PUSH, "n" * DNS1123_LABEL_MAX_LENGTH, "", 2**63 - 1)
)
# ImageBuildEnv: the redis Service name `imagebuildenv-<name>-redis` is a DNS-1035 label.
MAX_BUILD_ENV_NAME_LENGTH: Final = DNS1123_LABEL_MAX_LENGTH - len(build_env_redis_name(""))
# ImageRegistryAccount: the name is the login user; Kubernetes' own DNS-subdomain limit is enough.
MAX_ACCOUNT_NAME_LENGTH: Final = DNS1123_SUBDOMAIN_MAX_LENGTH
