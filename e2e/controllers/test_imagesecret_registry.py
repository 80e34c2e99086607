"""Push/pull secret CRs and their registry, on the real control plane: resolution (registryRef, the
default registry, other namespaces), RegistryUnavailable messages, and registry changes reaching
the Secrets at once because the controllers watch ImageRegistries and their TLS Secrets (the
original noticed them up to 12 hours late). The registry here is an ImageRegistry whose status the
test writes, so that every state can be produced on demand.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.controllers.imagesecret_support import (
    SETTLE_SECONDS,
    accounts,
    api_client,
    create_cr,
    make_registry,
    new_ca_pem,
    ready_condition,
    secret_values,
    set_registry_status,
    wait_for,
    wait_ready,
    write_tls_secret,
)
from registry_operator.api import constants as c
from registry_operator.controllers.imagesecret_desired import PULL, PUSH
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.dockerconfig import parse_docker_config
from registry_operator.kube.client import Client
from registry_operator.kube.resources import EVENTS


@pytest.fixture
def other_namespace(cluster: LocalCluster) -> Iterator[str]:
    name = f"e2e-infra-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def wait_unavailable(api: Client, namespace: str, name: str, message: str, timeout: float = 5) -> float:
    def matches() -> bool:
        ready = ready_condition(api.get(PULL.resource, name, namespace))
        return (ready.get("status"), ready.get("reason"), ready.get("message")) == (
            "False",
            c.REASON_REGISTRY_UNAVAILABLE,
            message,
        )

    return wait_for(matches, timeout, f"Ready=False RegistryUnavailable: {message}")


def test_registry_problems_are_reported_and_registry_changes_reach_the_secret_at_once(
    cluster: LocalCluster, namespace: str, start_operator: Any
) -> None:
    api = api_client(cluster)
    start_operator(controllers="imagesecret")
    key = f"{namespace}/registry"
    create_cr(api, PULL, namespace, "example", {"name": "registry"})  # namespace defaults to the CR's

    wait_unavailable(api, namespace, "example", f"ImageRegistry {key} not found")
    ca = make_registry(api, namespace, ready=False, tls_secret=False)
    wait_unavailable(api, namespace, "example", f"ImageRegistry {key} is not Ready: Updating")
    tls_name = "imageregistry-registry-selfsigned-tls"
    hostname = f"registry.{namespace}.svc.cluster.local"
    set_registry_status(api, namespace, "registry", ready=True, hostname=hostname, tls_name=tls_name)
    wait_unavailable(
        api, namespace, "example", f"TLS secret {namespace}/{tls_name} of ImageRegistry {key} not found"
    )
    assert accounts(api, namespace) == {}

    # The last missing piece appears: the CR becomes Ready from the watch, not from a timed retry.
    fixed = time.monotonic()
    write_tls_secret(api, namespace, tls_name, ca)
    wait_ready(api, PULL, namespace, "example", timeout=5)
    print(f"\nTLS secret created -> Ready in {time.monotonic() - fixed:.3f}s")
    first = secret_values(api, namespace, "imagepullsecret-example")
    assert first["ca.crt"] == ca
    events = api.list(EVENTS, namespace)["items"]
    unavailable = [e["message"] for e in events if e["reason"] == c.REASON_REGISTRY_UNAVAILABLE]
    assert f"ImageRegistry {key} not found" in unavailable
    assert all(e["type"] == "Warning" for e in events if e["reason"] == c.REASON_REGISTRY_UNAVAILABLE)

    # A new CA reaches the Secret without a new credential.
    new_ca = new_ca_pem("rotated CA")
    changed = time.monotonic()
    write_tls_secret(api, namespace, tls_name, new_ca)
    wait_for(
        lambda: secret_values(api, namespace, "imagepullsecret-example")["ca.crt"] == new_ca, 5, "new CA"
    )
    print(f"CA changed in the registry's TLS secret -> Secret updated in {time.monotonic() - changed:.3f}s")

    # So does a new hostname.
    changed = time.monotonic()
    set_registry_status(
        api, namespace, "registry", ready=True, hostname="registry.example.org", tls_name=tls_name
    )
    wait_for(
        lambda: (
            secret_values(api, namespace, "imagepullsecret-example")["registry"] == "registry.example.org"
        ),
        5,
        "new hostname",
    )
    print(f"registry hostname changed -> Secret updated in {time.monotonic() - changed:.3f}s")
    time.sleep(SETTLE_SECONDS)
    latest = secret_values(api, namespace, "imagepullsecret-example")
    assert list(parse_docker_config(latest[".dockerconfigjson"])) == ["registry.example.org"]
    assert (latest["username"], latest["password"]) == (first["username"], first["password"])
    cr = api.get(PULL.resource, "example", namespace)
    assert cr["status"]["rotation"] == 1
    assert cr["status"]["registry"]["hostname"] == "registry.example.org"
    assert len(accounts(api, namespace)) == 1

    # The registry becoming unready is reported at once too; the Secret stays.
    set_registry_status(
        api,
        namespace,
        "registry",
        ready=False,
        hostname="registry.example.org",
        tls_name=tls_name,
        reason="Updating",
        message="1 of 1 pods not ready",
    )
    wait_unavailable(
        api, namespace, "example", f"ImageRegistry {key} is not Ready: Updating: 1 of 1 pods not ready"
    )
    assert secret_values(api, namespace, "imagepullsecret-example")["password"] == first["password"]


def test_default_registry_and_registries_in_other_namespaces(
    cluster: LocalCluster, namespace: str, other_namespace: str, start_operator: Any
) -> None:
    api = api_client(cluster)
    make_registry(api, other_namespace, "shared")
    start_operator(
        controllers="imagesecret",
        env={
            "OPERATOR_DEFAULT_REGISTRY_NAME": "shared",
            "OPERATOR_DEFAULT_REGISTRY_NAMESPACE": other_namespace,
        },
    )
    create_cr(api, PUSH, namespace, "default-registry", None)
    create_cr(api, PULL, namespace, "explicit", {"name": "shared", "namespace": other_namespace})
    wait_ready(api, PUSH, namespace, "default-registry")
    wait_ready(api, PULL, namespace, "explicit")
    time.sleep(SETTLE_SECONDS)

    assert set(accounts(api, other_namespace)) == {
        f"push.{namespace}.default-registry.1",
        f"pull.{namespace}.explicit.1",
    }
    assert accounts(api, namespace) == {}
    hostname = f"shared.{other_namespace}.svc.cluster.local"
    assert secret_values(api, namespace, "imagepushsecret-default-registry")["registry"] == hostname
    assert secret_values(api, namespace, "imagepullsecret-explicit")["registry"] == hostname


def test_moving_to_a_registry_in_another_namespace_revokes_the_old_accounts(
    cluster: LocalCluster, namespace: str, other_namespace: str, start_operator: Any
) -> None:
    api = api_client(cluster)
    make_registry(api, namespace)
    make_registry(api, other_namespace)
    start_operator(controllers="imagesecret")
    create_cr(api, PUSH, namespace, "mover", {"name": "registry", "namespace": namespace})
    create_cr(api, PUSH, namespace, "stayer", {"name": "registry", "namespace": namespace})
    wait_ready(api, PUSH, namespace, "mover")
    wait_ready(api, PUSH, namespace, "stayer")

    cluster.kubectl(
        "patch", "-n", namespace, "imagepushsecret", "mover", "--type=merge",
        "-p", f'{{"spec": {{"registryRef": {{"name": "registry", "namespace": "{other_namespace}"}}}}}}',
    )  # fmt: skip
    wait_for(lambda: f"push.{namespace}.mover.2" in accounts(api, other_namespace), 10, "the new account")
    wait_ready(api, PUSH, namespace, "mover")
    time.sleep(SETTLE_SECONDS)

    assert set(accounts(api, namespace)) == {f"push.{namespace}.stayer.1"}
    assert set(accounts(api, other_namespace)) == {f"push.{namespace}.mover.2"}
    status = api.get(PUSH.resource, "mover", namespace)["status"]
    assert (status["rotation"], status["registry"]["namespace"]) == (2, other_namespace)
    assert secret_values(api, namespace, "imagepushsecret-mover")["registry"] == (
        f"registry.{other_namespace}.svc.cluster.local"
    )
    revoked = [e["message"] for e in api.list(EVENTS, namespace)["items"] if e["reason"] == "Revoked"]
    assert len(revoked) == 1 and f"{namespace}/push.{namespace}.mover.1" in revoked[0]


@pytest.mark.parametrize("kind", [PUSH, PULL], ids=["push", "pull"])
def test_names_of_the_maximum_length_work(
    cluster: LocalCluster, namespace: str, start_operator: Any, kind: Any
) -> None:
    api = api_client(cluster)
    make_registry(api, namespace)
    start_operator(controllers="imagesecret")
    name = "n" * 63
    create_cr(api, kind, namespace, name, {"name": "registry"})
    wait_ready(api, kind, namespace, name)

    account_name = f"{kind.mode}.{namespace}.{name}.1"
    account = accounts(api, namespace)[account_name]
    assert account["metadata"]["labels"] == {
        kind.account_label_key: name,
        c.LABEL_SECRET_NAMESPACE: namespace,
    }
    assert secret_values(api, namespace, kind.secret_name(name))["username"] == account_name
    # Deleting it still finds exactly its accounts by those labels.
    cluster.kubectl("delete", "-n", namespace, kind.resource.plural, name, "--timeout=20s")
    assert accounts(api, namespace) == {}
