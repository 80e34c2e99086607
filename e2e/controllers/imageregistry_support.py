"""Helpers shared by the imageregistry, cert-manager and registry-stack e2e modules."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from e2e.kube.support import host_label, wait_for
from e2e.support.operator import OPERATOR_NAMESPACE, OperatorProcess
from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.controllers.common import now_utc
from registry_operator.controllers.resources import (
    CONFIGMAPS,
    IMAGE_REGISTRIES,
    ROLE_BINDINGS,
    ROLES,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
    STATEFULSETS,
)
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.client import Client
from registry_operator.kube.errors import NotFound
from registry_operator.kube.resources import Resource

SEED = Path(__file__).resolve().parents[1] / "testdata" / "seed" / "imageregistry.yaml"
PERSISTENT_VOLUMES = Resource("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False)
READY_TIMEOUT = 90.0
OWNED_CHILDREN = (STATEFULSETS, SERVICES, SERVICE_ACCOUNTS, ROLES, ROLE_BINDINGS, CONFIGMAPS)


@contextlib.contextmanager
def volume_binder(api: Client) -> Iterator[Callable[..., str]]:
    """`bind(namespace, claim, storage_class=..., access_modes=...)`; the volumes go afterwards."""
    created: list[str] = []

    def bind(namespace: str, claim: str, **kwargs: Any) -> str:
        name = bind_volume(api, namespace, claim, **kwargs)
        created.append(name)
        return name

    try:
        yield bind
    finally:
        for name in created:
            api.delete(PERSISTENT_VOLUMES, name, missing_ok=True)


def bind_volume(
    api: Client,
    namespace: str,
    claim: str,
    *,
    storage_class: str = "standard",
    access_modes: tuple[str, ...] = ("ReadWriteOnce",),
    size: str = "1Gi",
) -> str:
    """A hostPath PV pre-bound to `namespace/claim`, so the PV controller binds the claim at once."""
    name = f"pv-{namespace}-{claim}"[:63]
    api.create(
        PERSISTENT_VOLUMES,
        {
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": list(access_modes),
                "storageClassName": storage_class,
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": f"/tmp/{name}"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        },
    )
    return name


def get_or_none(api: Client, resource: Resource, name: str, namespace: str) -> dict[str, Any] | None:
    try:
        return api.get(resource, name, namespace)
    except NotFound:
        return None


def condition(obj: dict[str, Any] | None, condition_type: str) -> dict[str, Any]:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == condition_type:
            return dict(item)
    return {}


def wait_condition(
    api: Client,
    namespace: str,
    name: str,
    *,
    status: str,
    reason: str | None = None,
    timeout: float = READY_TIMEOUT,
) -> dict[str, Any]:
    """Wait until the registry's Ready condition has `status` (and `reason`) for its current generation."""
    seen: dict[str, Any] = {}

    def matches() -> bool:
        registry = get_or_none(api, IMAGE_REGISTRIES, name, namespace)
        ready = condition(registry, c.CONDITION_READY)
        seen.update(registry=registry, ready=ready)
        return (
            registry is not None
            and ready.get("status") == status
            and (reason is None or ready.get("reason") == reason)
            and ready.get("observedGeneration") == registry["metadata"]["generation"]
        )

    try:
        wait_for(matches, timeout, f"{namespace}/{name} Ready={status} ({reason})")
    except AssertionError as error:
        raise AssertionError(f"{error}; last Ready condition: {seen.get('ready')}") from None
    registry: dict[str, Any] = seen["registry"]
    return registry


def registry_manifest(name: str, **spec: Any) -> str:
    body: dict[str, Any] = {
        "replicas": 1,
        "persistentVolumeClaim": {
            "storageClassName": "standard",
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    body.update(spec)
    return yaml.safe_dump(
        {"apiVersion": c.API_VERSION, "kind": c.KIND_IMAGE_REGISTRY, "metadata": {"name": name}, "spec": body}
    )


def merge_patch(cluster: LocalCluster, namespace: str, name: str, patch: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch", "-n", namespace, "imageregistry", name, "--type=merge", "-p", json.dumps(patch)
    )  # fmt: skip


def decoded(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


def pod_template_hash(api: Client, namespace: str, name: str) -> str:
    sts = api.get(STATEFULSETS, name, namespace)
    return str(sts["spec"]["template"]["metadata"]["annotations"][c.ANNOTATION_CONFIG_HASH])


def root_ca_cert(api: Client) -> x509.Certificate:
    secret = api.get(SECRETS, c.ROOT_CA_SECRET_NAME, OPERATOR_NAMESPACE)
    return x509.load_pem_x509_certificate(decoded(secret, "tls.crt"))


def user_tls_secret(namespace: str, name: str, dns_names: list[str]) -> dict[str, Any]:
    """A kubernetes.io/tls Secret as a user (or cert-manager) would write it, from its own CA."""
    now = now_utc()
    ca = pki.parse_bundle(pki.create_ca("e2e user CA", now, key_size=2048))
    assert not isinstance(ca, pki.PkiError)
    bundle = pki.create_server_cert(ca, dns_names, now)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": c.SECRET_TYPE_TLS,
        "data": {k: base64.b64encode(v).decode() for k, v in bundle.to_secret_data().items()},
    }


def writes_so_far(operator: OperatorProcess, api: Client) -> float:
    """The operator's write requests to the API server (from its rest_client_requests_total)."""
    host = host_label(api)
    total = 0.0
    for line in operator.metrics().splitlines():
        if (
            line.startswith("rest_client_requests_total{")
            and f'host="{host}"' in line
            and any(f'method="{m}"' in line for m in ("POST", "PUT", "PATCH", "DELETE"))
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def settled_writes(
    operator: OperatorProcess, api: Client, quiet: float = 2.0, timeout: float = 30.0
) -> float:
    """The write count once no write has happened for `quiet` seconds.

    Ready can be observed while the pass that wrote it is still finishing (a status write that hit a
    Conflict is retried at once), so a steady-state measurement starts only after the writes stop.
    """
    last = writes_so_far(operator, api)
    quiet_since = time.monotonic()
    deadline = quiet_since + timeout
    while time.monotonic() - quiet_since < quiet:
        assert time.monotonic() < deadline, f"the operator kept writing for {timeout:.0f}s"
        time.sleep(0.2)
        current = writes_so_far(operator, api)
        if current != last:
            last, quiet_since = current, time.monotonic()
    return last
