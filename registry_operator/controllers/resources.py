"""REST descriptors of every resource the reconcilers read or write."""

from __future__ import annotations

from registry_operator.api import constants as c
from registry_operator.kube.resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    NAMESPACES,
    PERSISTENT_VOLUME_CLAIMS,
    PODS,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
    STATEFULSETS,
    Resource,
)

IMAGE_REGISTRIES = Resource(c.GROUP, c.VERSION, c.PLURAL_IMAGE_REGISTRIES, c.KIND_IMAGE_REGISTRY)
IMAGE_REGISTRY_ACCOUNTS = Resource(
    c.GROUP, c.VERSION, c.PLURAL_IMAGE_REGISTRY_ACCOUNTS, c.KIND_IMAGE_REGISTRY_ACCOUNT
)
IMAGE_PUSH_SECRETS = Resource(c.GROUP, c.VERSION, c.PLURAL_IMAGE_PUSH_SECRETS, c.KIND_IMAGE_PUSH_SECRET)
IMAGE_PULL_SECRETS = Resource(c.GROUP, c.VERSION, c.PLURAL_IMAGE_PULL_SECRETS, c.KIND_IMAGE_PULL_SECRET)
IMAGE_BUILD_ENVS = Resource(c.GROUP, c.VERSION, c.PLURAL_IMAGE_BUILD_ENVS, c.KIND_IMAGE_BUILD_ENV)

ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
CERTIFICATES = Resource("cert-manager.io", "v1", "certificates", "Certificate")
POD_DISRUPTION_BUDGETS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
JOBS = Resource("batch", "v1", "jobs", "Job")

__all__ = [
    "CERTIFICATES",
    "CONFIGMAPS",
    "DEPLOYMENTS",
    "IMAGE_BUILD_ENVS",
    "IMAGE_PULL_SECRETS",
    "IMAGE_PUSH_SECRETS",
    "IMAGE_REGISTRIES",
    "IMAGE_REGISTRY_ACCOUNTS",
    "JOBS",
    "NAMESPACES",
    "PERSISTENT_VOLUME_CLAIMS",
    "PODS",
    "POD_DISRUPTION_BUDGETS",
    "ROLES",
    "ROLE_BINDINGS",
    "SECRETS",
    "SERVICES",
    "SERVICE_ACCOUNTS",
    "STATEFULSETS",
]
