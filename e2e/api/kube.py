"""Small kubectl helpers shared by the API e2e tests."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import yaml

from registry_operator.devenv.cluster import LocalCluster


def apply(
    cluster: LocalCluster, namespace: str, manifest: str, *extra: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Server-side apply, as users (and the seed's `kubectl apply`) would."""
    return cluster.kubectl(
        "apply", "--server-side", "-n", namespace, *extra, "-f", "-", input=manifest, check=check
    )


def get(cluster: LocalCluster, namespace: str, resource: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(
        cluster.kubectl("get", "-n", namespace, resource, name, "-o", "json").stdout
    )
    return obj


def exists(cluster: LocalCluster, namespace: str, resource: str, name: str) -> bool:
    return cluster.kubectl("get", "-n", namespace, resource, name, check=False).returncode == 0


def patch_status(
    cluster: LocalCluster, namespace: str, resource: str, name: str, status: dict[str, Any]
) -> None:
    cluster.kubectl(
        "patch", "-n", namespace, resource, name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def ready_condition(status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def documents(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def to_yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)
