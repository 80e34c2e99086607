"""Helpers for the ImagePushSecret / ImagePullSecret e2e tests (this module holds no tests).

* `make_registry` stands in for the imageregistry controller where a test needs a registry in a
  particular state: the ImageRegistry object (as the seed writes it), its status written through
  the status subresource (Ready, hostname, tlsSecretName) and a TLS Secret with a real CA
  certificate. test_imagesecret_seed.py runs the real imageregistry controller instead.
* `AuthnServer` runs the operator's real authn sidecar (`registry-operator authn-server`), which is
  what docker_auth's ext_auth consults in production for every login.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.controllers.common import now_utc
from registry_operator.controllers.imageregistry.readiness import SIDECAR_PASSWORD_SCHEMES
from registry_operator.controllers.imagesecret_desired import ImageSecretKind
from registry_operator.controllers.resources import IMAGE_REGISTRIES, IMAGE_REGISTRY_ACCOUNTS, SECRETS
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.devenv.processes import ManagedProcess, free_port, wait_until
from registry_operator.kube.client import Client
from registry_operator.kube.errors import NotFound
from registry_operator.passwords import hash_password

Object = dict[str, Any]

# How long to keep watching for a stray extra rotation before asserting exact counts.
SETTLE_SECONDS = 3.0


def api_client(cluster: LocalCluster) -> Client:
    return Client.from_kubeconfig(cluster.kubeconfig)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll until `condition()` is truthy; returns the seconds it took."""
    started = time.monotonic()
    last_error: Exception | None = None
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except Exception as error:  # e.g. NotFound while an object is being created
            last_error = error
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")
        time.sleep(interval)


def metric_value(text: str, name: str, labels: dict[str, str]) -> float | None:
    """One sample of the operator's /metrics text (None when the series does not exist)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def get_or_none(api: Client, resource: Any, name: str, namespace: str) -> Object | None:
    try:
        return api.get(resource, name, namespace)
    except NotFound:
        return None


def ready_condition(obj: Object | None) -> Object:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == c.CONDITION_READY:
            return dict(condition)
    return {}


def wait_ready(api: Client, kind: ImageSecretKind, namespace: str, name: str, timeout: float = 10) -> Object:
    """Wait for Ready=True computed for the CR's current generation; returns the CR."""
    seen: dict[str, Object] = {}

    def ready() -> bool:
        obj = seen["obj"] = api.get(kind.resource, name, namespace)
        condition = ready_condition(obj)
        return condition.get("status") == "True" and condition.get("observedGeneration") == obj[
            "metadata"
        ].get("generation")

    try:
        wait_for(ready, timeout, f"{kind.kind} {namespace}/{name} Ready")
    except AssertionError as error:
        raise AssertionError(
            f"{error}; status: {json.dumps((seen.get('obj') or {}).get('status'))}"
        ) from None
    return seen["obj"]


def accounts(api: Client, namespace: str) -> dict[str, Object]:
    listed = api.list(IMAGE_REGISTRY_ACCOUNTS, namespace)
    return {item["metadata"]["name"]: item for item in listed["items"]}


def secret_values(api: Client, namespace: str, name: str) -> dict[str, str]:
    secret = api.get(SECRETS, name, namespace)
    return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}


def create_cr(
    api: Client, kind: ImageSecretKind, namespace: str, name: str, registry_ref: Object | None
) -> Object:
    body: Object = {"metadata": {"name": name, "namespace": namespace}, "spec": {}}
    if registry_ref is not None:
        body["spec"]["registryRef"] = registry_ref
    return api.create(kind.resource, body)


def create_static_account(api: Client, namespace: str, name: str, password: str) -> Object:
    """A user's own account without TTL: nothing the operator does may remove it."""
    return api.create(
        IMAGE_REGISTRY_ACCOUNTS,
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"password": hash_password(password, 4), "labels": {"team": ["static"]}},
        },
    )


# --- a registry in a chosen state -------------------------------------------------------------------


def new_ca_pem(common_name: str) -> str:
    # 2048 bits: a 4096-bit key takes seconds to generate and proves nothing more here.
    return pki.create_ca(common_name, now_utc(), key_size=2048, lifetime=timedelta(days=1)).cert_pem.decode()


def make_registry(
    api: Client,
    namespace: str,
    name: str = "registry",
    *,
    ready: bool = True,
    tls_secret: bool = True,
    ca_pem: str | None = None,
    dns_zone: str = c.DEFAULT_DNS_ZONE,
) -> str:
    """An ImageRegistry with the status the imageregistry controller would write; returns the CA PEM."""
    api.create(
        IMAGE_REGISTRIES,
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": 1,
                "tls": {},
                "persistentVolumeClaim": {
                    "storageClassName": "standard",
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        },
    )
    tls_name = f"imageregistry-{name}-selfsigned-tls"
    set_registry_status(
        api, namespace, name, ready=ready, hostname=f"{name}.{namespace}.{dns_zone}", tls_name=tls_name
    )
    ca = ca_pem or new_ca_pem(f"{name}.{namespace} test CA")
    if tls_secret:
        write_tls_secret(api, namespace, tls_name, ca)
    return ca


def set_registry_status(
    api: Client,
    namespace: str,
    name: str,
    *,
    ready: bool,
    hostname: str,
    tls_name: str,
    reason: str | None = None,
    message: str = "",
) -> None:
    condition = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": reason or ("Available" if ready else "Updating"),
        "message": message,
        "lastTransitionTime": now_utc().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    api.patch(
        IMAGE_REGISTRIES,
        name,
        {
            "status": {
                "hostname": hostname,
                "tlsSecretName": tls_name,
                "conditions": [condition],
                # What the imageregistry controller writes once every pod runs this sidecar.
                "passwordSchemes": [scheme.value for scheme in SIDECAR_PASSWORD_SCHEMES],
            }
        },
        namespace,
        subresource="status",
    )


def write_tls_secret(api: Client, namespace: str, name: str, ca_pem: str) -> None:
    data = {
        "ca.crt": base64.b64encode(ca_pem.encode()).decode(),
        "tls.crt": base64.b64encode(ca_pem.encode()).decode(),
        "tls.key": base64.b64encode(b"not used by these tests").decode(),
    }
    body = {"metadata": {"name": name, "namespace": namespace}, "type": "Opaque", "data": data}
    existing = get_or_none(api, SECRETS, name, namespace)
    if existing is None:
        api.create(SECRETS, body)
    else:
        existing["data"] = data
        api.update(SECRETS, existing)


# --- the authn sidecar ------------------------------------------------------------------------------


class AuthnServer:
    """`python -m registry_operator authn-server` for one namespace, on a free loopback port."""

    def __init__(self, cluster: LocalCluster, namespace: str, log_dir: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "LOG_LEVEL": "info"}
        self.process = ManagedProcess(
            f"authn-{namespace}",
            [
                sys.executable,
                "-m",
                "registry_operator",
                "authn-server",
                "--namespace",
                namespace,
                "--port",
                str(self.port),
            ],
            log_dir,
            env,
        )

    def __enter__(self) -> AuthnServer:
        self.process.start()
        wait_until("authn-server /healthz", lambda: self._health() == 200, 30, self.process)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop()

    def _health(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
            return int(response.status)

    def login(self, username: str, password: str) -> tuple[int, dict[str, list[str]] | None]:
        """What docker_auth's ext_auth would be told: (HTTP status, labels when allowed)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/authn", data=f"{username} {password}".encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                labels: dict[str, list[str]] = json.loads(response.read())["labels"]
                return int(response.status), labels
        except urllib.error.HTTPError as error:
            return error.code, None
