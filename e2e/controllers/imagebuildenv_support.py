"""Helpers for the ImageBuildEnv e2e tests (this module holds no tests)."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from e2e.support.operator import OperatorProcess
from registry_operator.controllers.resources import DEPLOYMENTS, IMAGE_BUILD_ENVS, SECRETS, SERVICES
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.client import Client
from registry_operator.kube.errors import NotFound
from registry_operator.kube.resources import Resource

SEED_BUILD_ENV = Path(__file__).resolve().parents[1] / "testdata" / "seed" / "imagebuildenv.yaml"
API_VERSION = "registry.mgoltzsche.github.com/v1alpha1"
FINALIZER = "registry.mgoltzsche.github.com/inputrefs"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
READY_TIMEOUT = 30.0  # §10.2 item 5
# kube-controller-manager's garbage collector learns about new CRDs by rediscovery every 30 s, so
# in a session whose CRDs were just installed it may take ~45 s before it collects an env's children.
GC_TIMEOUT = 90.0


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def plain(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> float:
    """Poll until `condition()`; return the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def get(api: Client, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return api.get(resource, name, namespace)
    except NotFound:
        return None


def must_get(api: Client, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
    obj = get(api, resource, namespace, name)
    assert obj is not None, f"{resource} {namespace}/{name} does not exist"
    return obj


def apply(cluster: LocalCluster, namespace: str, *objects: dict[str, Any]) -> None:
    """Server-side apply as a user would (field manager kubectl)."""
    manifest = yaml.safe_dump_all(objects)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-n", namespace, "-f", "-", input=manifest)


def docker_config(host: str, user: str, password: str) -> str:
    return json.dumps({"auths": {host: {"auth": b64(f"{user}:{password}")}}})


def push_format_secret(name: str, host: str, user: str, password: str) -> dict[str, Any]:
    """An Opaque secret as the ImagePushSecret controller writes it (ARCHITECTURE §1)."""
    config = docker_config(host, user, password)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {
            "config.json": b64(config),
            ".dockerconfigjson": b64(config),
            "registry": b64(host),
            "ca.crt": b64(CA_PEM),
            "username": b64(user),
            "password": b64(password),
        },
    }


def build_env(name: str, *secrets: str, redis: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ImageBuildEnv",
        "metadata": {"name": name},
        "spec": {"redis": redis, "secrets": [{"secretName": secret} for secret in secrets]},
    }


def ready_condition(env: dict[str, Any] | None) -> dict[str, Any]:
    conditions = ((env or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def wait_ready(
    api: Client, namespace: str, name: str, reason: str = "Available", timeout: float = READY_TIMEOUT
) -> float:
    """Wait for Ready with `reason`, computed for the current generation; return the seconds taken."""

    def matches() -> bool:
        env = get(api, IMAGE_BUILD_ENVS, namespace, name)
        condition = ready_condition(env)
        generation = (env or {}).get("metadata", {}).get("generation")
        return (
            condition.get("reason") == reason
            and condition.get("observedGeneration") == generation
            and (env or {}).get("status", {}).get("observedGeneration") == generation
        )

    try:
        return wait_for(matches, timeout, f"ImageBuildEnv {name} Ready reason {reason}")
    except AssertionError:
        env = get(api, IMAGE_BUILD_ENVS, namespace, name)
        raise AssertionError(f"{name} not {reason}: status={(env or {}).get('status')}") from None


def conf(api: Client, namespace: str, name: str) -> dict[str, str]:
    return plain(must_get(api, SECRETS, namespace, f"imagebuildenv-{name}-conf"))


def auth_of(config_json: str, host: str) -> str:
    return base64.b64decode(json.loads(config_json)["auths"][host]["auth"]).decode()


def redis_objects(api: Client, namespace: str, name: str) -> list[dict[str, Any] | None]:
    return [
        get(api, DEPLOYMENTS, namespace, f"imagebuildenv-{name}-redis"),
        get(api, SERVICES, namespace, f"imagebuildenv-{name}-redis"),
        get(api, SECRETS, namespace, f"imagebuildenv-{name}-redis-conf"),
    ]


def controller_metric(operator: OperatorProcess, metric: str) -> float:
    """Sum of one controller-runtime counter of the imagebuildenv controller (all label values)."""
    pattern = re.compile(rf'^{metric}\{{[^}}]*controller="imagebuildenv"[^}}]*\}} (\S+)$', re.M)
    return sum(float(value) for value in pattern.findall(operator.metrics()))


def reconcile_total(operator: OperatorProcess) -> float:
    return controller_metric(operator, "controller_runtime_reconcile_total")
