"""The imageregistryaccount controller on the real control plane: accounts are deleted when their
TTL ends (timed requeue, not polling), accounts without a TTL stay, and an account that expired while
no operator ran is deleted as soon as one starts.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from e2e.controllers.imagesecret_support import accounts, api_client, wait_for
from registry_operator.controllers.resources import IMAGE_REGISTRY_ACCOUNTS
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.client import Client
from registry_operator.kube.resources import EVENTS
from registry_operator.passwords import hash_password


def create_account(api: Client, namespace: str, name: str, ttl: str | None) -> datetime:
    spec: dict[str, Any] = {"password": hash_password("pw", 4), "labels": {"team": ["a"]}}
    if ttl is not None:
        spec["ttl"] = ttl
    created = api.create(
        IMAGE_REGISTRY_ACCOUNTS, {"metadata": {"name": name, "namespace": namespace}, "spec": spec}
    )
    return datetime.fromisoformat(created["metadata"]["creationTimestamp"])


def test_accounts_are_deleted_when_their_ttl_ends_and_static_ones_stay(
    cluster: LocalCluster, namespace: str, start_operator: Any
) -> None:
    api = api_client(cluster)
    create_account(api, namespace, "expired-while-down", "1s")
    time.sleep(2)
    operator = start_operator(controllers="imageregistryaccount")
    started = time.monotonic()
    wait_for(
        lambda: "expired-while-down" not in accounts(api, namespace), 5, "the account that expired before"
    )
    print(f"\nexpired before the operator started -> deleted {time.monotonic() - started:.2f}s after /readyz")

    create_account(api, namespace, "static", None)
    create_account(api, namespace, "long", "1h")
    created = create_account(api, namespace, "short", "4s")
    expiry = created.timestamp() + 4
    wait_for(lambda: "short" not in accounts(api, namespace), 10, "the short-lived account to be deleted")
    deleted_after_expiry = time.time() - expiry
    print(f"TTL 4s: deleted {deleted_after_expiry:.2f}s after its expiry (creationTimestamp + ttl)")
    # Never before the expiry; within the requeue slack (0.5 s) plus the time a write takes to be seen.
    # (creationTimestamp has whole seconds, so the true expiry may be up to 1 s later than computed.)
    assert 0 <= deleted_after_expiry < 2.5

    time.sleep(1)
    assert set(accounts(api, namespace)) == {"static", "long"}
    expired = [e for e in api.list(EVENTS, namespace)["items"] if e["reason"] == "Expired"]
    assert sorted(e["involvedObject"]["name"] for e in expired) == ["expired-while-down", "short"]
    assert "reconcile failed" not in operator.log()

    # Every kind keeps a Ready condition: `kubectl wait` works on accounts too, with the validity.
    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "--timeout=10s", "imageregistryaccount/static"
    )
    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "--timeout=10s", "imageregistryaccount/long"
    )
    long_ready = next(
        cond
        for cond in api.get(IMAGE_REGISTRY_ACCOUNTS, "long", namespace)["status"]["conditions"]
        if cond["type"] == "Ready"
    )
    assert long_ready["reason"] == "Available"
    assert long_ready["message"].startswith("valid until ")
    columns = cluster.kubectl("get", "imageregistryaccount", "static", "-n", namespace).stdout
    assert "Available" in columns
