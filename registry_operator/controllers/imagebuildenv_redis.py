"""The optional redis layer cache of an ImageBuildEnv: desired Secret, Deployment, Service; pure.

Differences from the original (REFERENCE-BEHAVIOUR §3.5, §11), and why:
* a Deployment instead of a bare Pod, so the pod is recreated after node loss and updated when
  the image or the password changes (the pod template carries a hash of the config);
* `Recreate` strategy: two redis pods with different passwords behind one Service would fail half
  of a build's cache requests during a rollout; a cache may be briefly absent instead;
* non-root, read-only root filesystem, no capabilities, resource requests/limits, and a memory
  cap with LRU eviction inside the limit (a cache should evict, not be OOM-killed);
* the Service selects an extra label the original's bare Pod lacks, so such a leftover Pod (with an
  outdated config) never receives traffic.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final

from registry_operator.api import constants as c
from registry_operator.api.names import build_env_redis_name, build_env_redis_secret_name
from registry_operator.controllers.common import MANAGED_LABELS, controller_ref, secret_data
from registry_operator.kube import objects

REDIS_CONTAINER: Final = "redis"
REDIS_PORT_NAME: Final = "redis"
REDIS_CONFIG_DIR: Final = "/conf"
REDIS_DATA_DIR: Final = "/data"
# The `redis` user and group of the official redis alpine images.
REDIS_UID: Final = 999
REDIS_GID: Final = 1000
REDIS_MEMORY_LIMIT: Final = "256Mi"
# Below the container limit, leaving room for redis' own overhead and client buffers.
REDIS_MAXMEMORY: Final = "192mb"
SECRET_VOLUME_MODE: Final = 0o440  # owner root, group REDIS_GID (fsGroup): readable by redis only

# Passwords the original operator generated (its alphabet) or this one generates (letters, digits)
# are kept; anything else could break the quoting in redis.conf and is replaced.
_KEEPABLE_PASSWORD = re.compile(r"^[A-Za-z0-9=.+\-_/\[\]{}@?]{16,128}$")


def keepable_password(value: bytes | None) -> str | None:
    """The existing redis password if it can be kept, else None (a new one is generated)."""
    if not value:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if _KEEPABLE_PASSWORD.match(text) else None


def redis_config(password: str) -> str:
    """redis.conf: password, cache-only (no persistence), bounded memory with LRU eviction."""
    return (
        f'requirepass "{password}"\n'
        f"dir {REDIS_DATA_DIR}\n"
        'save ""\n'
        "appendonly no\n"
        f"maxmemory {REDIS_MAXMEMORY}\n"
        "maxmemory-policy allkeys-lru\n"
    )


def config_hash(config: str) -> str:
    """Short digest for the pod template: a changed password rolls the pod (redis reads its config
    only at start). Truncated, so the annotation says nothing useful about the password."""
    return hashlib.sha256(config.encode()).hexdigest()[:16]


def redis_address(env_name: str) -> str:
    """`host:port` of the redis Service, as written to the merged secret's `redis` key."""
    return f"{build_env_redis_name(env_name)}:{c.REDIS_PORT}"


def pod_labels(env_name: str) -> dict[str, str]:
    """Pod selector of the Deployment and the Service (the `app` label is the original's)."""
    return {c.LABEL_APP: build_env_redis_name(env_name), **MANAGED_LABELS}


def _metadata(env: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": objects.namespace(env),
        "labels": pod_labels(objects.name(env)),
        "ownerReferences": [controller_ref(env)],
    }


def desired_redis_secret(env: Mapping[str, Any], password: str) -> dict[str, Any]:
    name = build_env_redis_secret_name(objects.name(env))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(env, name),
        "type": c.SECRET_TYPE_OPAQUE,
        "data": secret_data(
            {c.SECRET_KEY_REDIS_PASSWORD: password, c.SECRET_KEY_REDIS_CONF: redis_config(password)}
        ),
    }


def _tcp_probe(initial_delay: int, period: int) -> dict[str, Any]:
    return {
        "tcpSocket": {"port": REDIS_PORT_NAME},
        "initialDelaySeconds": initial_delay,
        "periodSeconds": period,
    }


def desired_redis_deployment(env: Mapping[str, Any], image: str, password: str) -> dict[str, Any]:
    env_name = objects.name(env)
    name = build_env_redis_name(env_name)
    labels = pod_labels(env_name)
    container = {
        "name": REDIS_CONTAINER,
        "image": image,
        "args": ["redis-server", f"{REDIS_CONFIG_DIR}/{c.SECRET_KEY_REDIS_CONF}"],
        "ports": [{"name": REDIS_PORT_NAME, "containerPort": c.REDIS_PORT, "protocol": "TCP"}],
        "readinessProbe": _tcp_probe(3, 3),
        "livenessProbe": _tcp_probe(5, 30),
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": REDIS_MEMORY_LIMIT},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": REDIS_CONFIG_DIR, "readOnly": True},
            {"name": "data", "mountPath": REDIS_DATA_DIR},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(env, name),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 2,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {c.ANNOTATION_CONFIG_HASH: config_hash(redis_config(password))},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": REDIS_UID,
                        "runAsGroup": REDIS_GID,
                        "fsGroup": REDIS_GID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "config",
                            "secret": {
                                "secretName": build_env_redis_secret_name(env_name),
                                "defaultMode": SECRET_VOLUME_MODE,
                            },
                        },
                        {"name": "data", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def desired_redis_service(env: Mapping[str, Any]) -> dict[str, Any]:
    env_name = objects.name(env)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(env, build_env_redis_name(env_name)),
        "spec": {
            "type": "ClusterIP",
            "selector": pod_labels(env_name),
            "ports": [
                {
                    "name": REDIS_PORT_NAME,
                    "port": c.REDIS_PORT,
                    "targetPort": REDIS_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def deployment_available(deployment: Mapping[str, Any] | None) -> bool:
    """Whether the Deployment's current spec runs and is Available (not just an older revision)."""
    if deployment is None:
        return False
    status = deployment.get("status") or {}
    generation = objects.generation(deployment)
    if (status.get("observedGeneration") or 0) < generation:
        return False
    replicas = (deployment.get("spec") or {}).get("replicas", 1)
    if (status.get("updatedReplicas") or 0) < replicas or (status.get("availableReplicas") or 0) < replicas:
        return False
    return any(
        condition.get("type") == "Available" and condition.get("status") == "True"
        for condition in status.get("conditions") or []
    )
