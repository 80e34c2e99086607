"""ImageRegistry spec.auth.namespaces on the real control plane (issue 11): only secret CRs of
admitted namespaces get accounts; a namespace that stops being admitted loses its accounts within
seconds (and the authn sidecar refuses them); a label selector admits by namespace labels.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.controllers.imagesecret_support import (
    AuthnServer,
    accounts,
    api_client,
    create_cr,
    make_registry,
    ready_condition,
    secret_values,
    wait_for,
    wait_ready,
)
from registry_operator.api import constants as c
from registry_operator.controllers.imagesecret_desired import PULL, PUSH
from registry_operator.controllers.resources import IMAGE_REGISTRIES, NAMESPACES
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.client import Client, PatchType


@pytest.fixture
def tenants(cluster: LocalCluster) -> Iterator[tuple[str, str]]:
    names = (f"team-a-{uuid.uuid4().hex[:6]}", f"team-b-{uuid.uuid4().hex[:6]}")
    for name in names:
        cluster.kubectl("create", "namespace", name)
    try:
        yield names
    finally:
        for name in names:
            cluster.kubectl("delete", "namespace", name, "--wait=false")


def set_rule(api: Client, namespace: str, rule: dict[str, Any] | None) -> None:
    api.patch(
        IMAGE_REGISTRIES,
        "registry",
        {"spec": {"auth": {"namespaces": rule}}},
        namespace,
        patch_type=PatchType.MERGE,
    )


def refused(api: Client, kind: Any, namespace: str, name: str) -> bool:
    ready = ready_condition(api.get(kind.resource, name, namespace))
    return ready.get("status") == "False" and ready.get("reason") == c.REASON_NAMESPACE_NOT_ALLOWED


def test_only_admitted_namespaces_get_and_keep_accounts(
    cluster: LocalCluster, namespace: str, tenants: tuple[str, str], start_operator: Any, tmp_path: Path
) -> None:
    team_a, team_b = tenants
    api = api_client(cluster)
    make_registry(api, namespace)
    set_rule(api, namespace, {"names": [team_a]})
    operator = start_operator(controllers="imagesecret")
    ref = {"name": "registry", "namespace": namespace}
    create_cr(api, PUSH, team_a, "app", ref)
    create_cr(api, PULL, team_b, "app", ref)

    wait_ready(api, PUSH, team_a, "app", timeout=20)
    wait_for(lambda: refused(api, PULL, team_b, "app"), 20, "team-b refused")
    message = ready_condition(api.get(PULL.resource, "app", team_b))["message"]
    assert f"add {team_b} to its spec.auth.namespaces.names" in message
    assert [name for name in accounts(api, namespace) if team_b in name] == []
    assert accounts(api, namespace).keys() == {f"push.{team_a}.app.1"}

    with AuthnServer(cluster, namespace, tmp_path) as authn:
        data = secret_values(api, team_a, PUSH.secret_name("app"))
        assert authn.login(data["username"], data["password"])[0] == 200

        # team-a leaves the list: its account goes, the sidecar refuses it, the CR says why.
        started = time.monotonic()
        set_rule(api, namespace, {"names": [f"{team_b}-other"]})
        wait_for(lambda: not accounts(api, namespace), 20, "team-a's account revoked")
        print(f"\naccount revoked {time.monotonic() - started:.2f}s after the namespace left the list")
        wait_for(lambda: authn.login(data["username"], data["password"])[0] != 200, 10, "sidecar refusal")
        wait_for(lambda: refused(api, PUSH, team_a, "app"), 20, "team-a refused")

    # A selector admits by namespace labels.
    api.patch(
        NAMESPACES, team_b, {"metadata": {"labels": {"registry-access": "yes"}}}, patch_type=PatchType.MERGE
    )
    set_rule(api, namespace, {"selector": {"matchLabels": {"registry-access": "yes"}}})
    wait_ready(api, PULL, team_b, "app", timeout=20)
    assert "registry_operator_namespace_refusals_total" in operator.metrics()
