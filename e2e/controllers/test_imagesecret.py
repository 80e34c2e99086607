"""ImagePushSecret / ImagePullSecret against the real control plane: every assertion of
REFERENCE-BEHAVIOUR §10.2 item 4 (4.1-4.8) for both kinds, with exactly one rotation per trigger,
the B1 regression (deleting one CR leaves every other account), and logins through the operator's
real authn sidecar with the generated credentials.

Not run here: a registry push and pull through docker_auth. docker_auth cannot be built on this
machine (the Go module proxy refuses github.com/cesanta/docker_auth), and a fake would prove nothing.
The authn sidecar these tests log in through is exactly what docker_auth's ext_auth consults in
production, so what stays untested is docker_auth itself and what follows it: the token flow, the
ACL evaluation of the labels checked here (push accounts may push and pull, pull accounts only pull —
so "a pull secret cannot push" is only shown as `accessMode: [pull]`), the registry's token
verification, and a real `skopeo copy` using the Secret's `config.json` and `ca.crt`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.controllers.imagesecret_support import (
    SETTLE_SECONDS,
    AuthnServer,
    accounts,
    api_client,
    create_cr,
    create_static_account,
    get_or_none,
    make_registry,
    metric_value,
    secret_values,
    wait_for,
    wait_ready,
)
from e2e.support.operator import OperatorProcess
from registry_operator.api import constants as c
from registry_operator.controllers.imagesecret_desired import PULL, PUSH, ImageSecretKind
from registry_operator.controllers.resources import IMAGE_REGISTRY_ACCOUNTS, SECRETS
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.dockerconfig import parse_docker_config
from registry_operator.kube.client import Client
from registry_operator.kube.resources import EVENTS
from registry_operator.passwords import verify_password

KINDS = [pytest.param(PUSH, id="push"), pytest.param(PULL, id="pull")]


def assert_current_credential(
    api: Client, kind: ImageSecretKind, namespace: str, name: str, rotation: int
) -> tuple[str, str, dict[str, list[str]]]:
    """Assertions 4.2-4.4 for the CR's current credential; returns (user, password, account labels)."""
    hostname = f"registry.{namespace}.svc.cluster.local"
    cr = api.get(kind.resource, name, namespace)
    assert cr["status"]["rotation"] == rotation
    assert cr["status"]["rotationDate"]
    assert cr["status"]["registry"] == {"name": "registry", "namespace": namespace, "hostname": hostname}
    account_name = f"{kind.mode}.{namespace}.{name}.{rotation}"
    # 4.2: the account exists in the registry namespace
    account = api.get(IMAGE_REGISTRY_ACCOUNTS, account_name, namespace)
    # 4.3: the Secret
    secret = api.get(SECRETS, kind.secret_name(name), namespace)
    data = secret_values(api, namespace, kind.secret_name(name))
    if kind is PUSH:
        assert secret["type"] == "Opaque"
        assert data["config.json"] == data[".dockerconfigjson"]
    else:
        assert secret["type"] == "kubernetes.io/dockerconfigjson"
        assert "config.json" not in data
    assert secret["metadata"]["annotations"][c.ANNOTATION_ROTATION] == str(rotation)
    assert data["ca.crt"].startswith("-----BEGIN CERTIFICATE-----")
    assert data["registry"] == hostname
    auths = parse_docker_config(data[".dockerconfigjson"])
    assert list(auths) == [hostname]
    assert auths[hostname].username == account_name == data["username"]
    assert auths[hostname].password == data["password"]
    # 4.4: the account
    assert account["spec"]["password"]
    assert account["spec"]["ttl"] == "24h0m0s"
    assert account["spec"]["labels"] == {"name": [name], "namespace": [namespace], "accessMode": [kind.mode]}
    assert account["metadata"]["labels"] == {
        kind.account_label_key: name,
        c.LABEL_SECRET_NAMESPACE: namespace,
    }
    assert verify_password(data["password"], account["spec"]["password"])
    return data["username"], data["password"], account["spec"]["labels"]


def rotation_of(api: Client, kind: ImageSecretKind, namespace: str, name: str) -> int:
    return int((api.get(kind.resource, name, namespace).get("status") or {}).get("rotation") or 0)


def wait_rotation(api: Client, kind: ImageSecretKind, namespace: str, name: str, rotation: int) -> None:
    """Wait for `rotation`, then watch a while longer: exactly that number, no stray extra rotation."""
    wait_for(lambda: rotation_of(api, kind, namespace, name) >= rotation, 10, f"rotation {rotation}")
    wait_ready(api, kind, namespace, name)
    time.sleep(SETTLE_SECONDS)
    assert rotation_of(api, kind, namespace, name) == rotation


@pytest.mark.parametrize("kind", KINDS)
def test_credentials_are_issued_rotated_once_per_trigger_and_revoked_exactly(
    cluster: LocalCluster,
    namespace: str,
    start_operator: Any,
    tmp_path: Path,
    kind: ImageSecretKind,
) -> None:
    api = api_client(cluster)
    make_registry(api, namespace)
    create_static_account(api, namespace, "static-user", "static-password")
    operator: OperatorProcess = start_operator(controllers="imagesecret,imageregistryaccount")
    name = f"my-{kind.mode}-secret-cr"
    expected_accounts = {"static-user"}

    with AuthnServer(cluster, namespace, tmp_path) as authn:
        # 4.1: Ready within 10 s with exactly one rotation
        started = time.monotonic()
        create_cr(api, kind, namespace, name, {"name": "registry", "namespace": namespace})
        wait_ready(api, kind, namespace, name, timeout=10)
        print(f"\n{kind.kind} Ready after {time.monotonic() - started:.2f}s")
        time.sleep(SETTLE_SECONDS)
        # 4.2-4.4
        first_user, first_password, first_labels = assert_current_credential(api, kind, namespace, name, 1)
        expected_accounts.add(first_user)
        assert set(accounts(api, namespace)) == expected_accounts

        # 4.6: logins through the authn sidecar
        allowed = {**first_labels, "origin": ["cr"], "account": [first_user]}
        assert authn.login(first_user, first_password) == (200, allowed)
        assert allowed["accessMode"] == [kind.mode]
        assert authn.login("", "") == (404, None)
        assert authn.login("unknown", "invalid") == (404, None)
        assert authn.login(first_user, "wrong-password") == (401, None)

        # 4.5: a change to the Secret that touches nothing relevant does not rotate
        secret = api.get(SECRETS, kind.secret_name(name), namespace)
        secret["metadata"]["annotations"]["unrelated"] = "value"
        api.update(SECRETS, secret)
        time.sleep(SETTLE_SECONDS)
        assert rotation_of(api, kind, namespace, name) == 1
        assert set(accounts(api, namespace)) == expected_accounts

        # 4.7: twice, the Secret loses its rotation annotation: exactly one new credential each time
        for rotation in (2, 3):
            secret = api.get(SECRETS, kind.secret_name(name), namespace)
            secret["metadata"]["annotations"] = {"someannotation": "someval"}
            api.update(SECRETS, secret)
            wait_rotation(api, kind, namespace, name, rotation)
            user, _, _ = assert_current_credential(api, kind, namespace, name, rotation)
            expected_accounts.add(user)
            assert set(accounts(api, namespace)) == expected_accounts
        # ... and the original credentials still work, with their original labels
        assert authn.login(first_user, first_password) == (200, allowed)

        # rotate-now: a new annotation value rotates once; the previous credentials keep working
        previous_user, previous_password, _ = assert_current_credential(api, kind, namespace, name, 3)
        cluster.kubectl(
            "annotate", "-n", namespace, kind.resource.plural, name, f"{c.ANNOTATION_ROTATE}=now-1"
        )
        wait_rotation(api, kind, namespace, name, 4)
        new_user, new_password, _ = assert_current_credential(api, kind, namespace, name, 4)
        expected_accounts.add(new_user)
        assert set(accounts(api, namespace)) == expected_accounts
        assert api.get(kind.resource, name, namespace)["status"]["rotateRequest"] == "now-1"
        assert authn.login(previous_user, previous_password)[0] == 200
        assert authn.login(new_user, new_password)[0] == 200

        # 4.8: deleting a second CR removes it (finalizer processed) and exactly its accounts
        other = f"{name}-delete"
        create_cr(api, kind, namespace, other, {"name": "registry", "namespace": namespace})
        wait_ready(api, kind, namespace, other)
        other_user, other_password, _ = assert_current_credential(api, kind, namespace, other, 1)
        assert authn.login(other_user, other_password)[0] == 200
        # Measured from the moment `kubectl delete` is started (its own start-up time included).
        deleted_at = time.monotonic()
        cluster.kubectl("delete", "-n", namespace, kind.resource.plural, other, "--wait=false")
        kubectl_done = time.monotonic() - deleted_at
        wait_for(lambda: authn.login(other_user, other_password)[0] != 200, 10, "credentials refused")
        latency = time.monotonic() - deleted_at
        print(
            f"{kind.kind}: revocation latency {latency:.3f}s from starting `kubectl delete` until the authn "
            f"sidecar refuses the credentials (kubectl itself returned after {kubectl_done:.3f}s)"
        )
        wait_for(lambda: get_or_none(api, kind.resource, other, namespace) is None, 10, "CR gone")
        print(f"{kind.kind}: CR gone after {time.monotonic() - deleted_at:.3f}s")
        assert latency < 2.0
        # B1: every other account survives — the other CR's and the static one
        assert set(accounts(api, namespace)) == expected_accounts
        assert authn.login("static-user", "static-password")[0] == 200
        assert authn.login(new_user, new_password)[0] == 200

    metrics = operator.metrics()
    expiry = metric_value(
        metrics,
        "registry_operator_credential_expiry_timestamp_seconds",
        {"namespace": namespace, "name": name, "kind": kind.kind},
    )
    assert expiry is not None and expiry > time.time() + 23 * 3600
    gone = {"namespace": namespace, "name": other, "kind": kind.kind}
    assert metric_value(metrics, "registry_operator_credential_expiry_timestamp_seconds", gone) is None
    # 4 credentials for the first CR, 1 for the deleted one: not a single extra rotation
    assert metric_value(metrics, "registry_operator_rotations_total", {"kind": kind.kind}) == 5
    assert metric_value(metrics, "registry_operator_rotation_errors_total", {"kind": kind.kind}) == 0

    def reasons() -> list[str]:
        return [event["reason"] for event in api.list(EVENTS, namespace)["items"]]

    # Events are written in the background: one per credential issued, one for the revocation.
    wait_for(lambda: reasons().count("Rotated") == 5 and "Revoked" in reasons(), 5, "the Events")
    assert "RegistryUnavailable" not in reasons()
    # No secret in logs, Events or conditions, ever.
    log = operator.log()
    events = json.dumps(api.list(EVENTS, namespace)["items"])
    statuses = json.dumps([cr.get("status") for cr in api.list(kind.resource, namespace)["items"]])
    for password in (first_password, previous_password, new_password, other_password):
        assert password not in log
        assert password not in events
        assert password not in statuses
