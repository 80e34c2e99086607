"""Rotation on its own at half the TTL, and expiry, with OPERATOR_SECRET_TTL=20s: credentials are
replaced every 10 s, each account is deleted by the imageregistryaccount controller once its 20 s
are over, and the authn sidecar refuses an expired credential while the current one keeps working.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from e2e.controllers.imagesecret_support import (
    AuthnServer,
    accounts,
    api_client,
    create_cr,
    make_registry,
    metric_value,
    secret_values,
    wait_for,
    wait_ready,
)
from registry_operator.controllers.imagesecret_desired import PULL
from registry_operator.devenv.cluster import LocalCluster

TTL_SECONDS = 20


def test_short_ttl_rotates_at_half_the_ttl_and_expired_accounts_are_deleted(
    cluster: LocalCluster, namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    api = api_client(cluster)
    make_registry(api, namespace)
    operator = start_operator(
        controllers="imagesecret,imageregistryaccount", env={"OPERATOR_SECRET_TTL": f"{TTL_SECONDS}s"}
    )
    account = [f"pull.{namespace}.short.{n}" for n in range(5)]  # account[n]: rotation n

    with AuthnServer(cluster, namespace, tmp_path) as authn:
        create_cr(api, PULL, namespace, "short", {"name": "registry"})
        wait_ready(api, PULL, namespace, "short")
        first = secret_values(api, namespace, "imagepullsecret-short")
        assert first["username"] == account[1]
        created_1 = datetime.fromisoformat(
            accounts(api, namespace)[account[1]]["metadata"]["creationTimestamp"]
        )
        assert accounts(api, namespace)[account[1]]["spec"]["ttl"] == "20s"

        # Rotation 2 on its own at half the TTL.
        wait_for(lambda: account[2] in accounts(api, namespace), TTL_SECONDS, "rotation 2")
        rotated_after = time.time() - created_1.timestamp()
        print(f"\nTTL {TTL_SECONDS}s: rotation 2 came {rotated_after:.2f}s after credential 1 was created")
        assert TTL_SECONDS / 2 <= rotated_after < TTL_SECONDS / 2 + 2.5
        # The account comes a moment before the Secret that holds it (the CR stays Ready meanwhile).
        wait_for(
            lambda: secret_values(api, namespace, "imagepullsecret-short")["username"] == account[2],
            5,
            "Secret with credentials #2",
        )
        wait_ready(api, PULL, namespace, "short")
        second = secret_values(api, namespace, "imagepullsecret-short")
        assert second["username"] == account[2]
        cr = api.get(PULL.resource, "short", namespace)
        created_2 = datetime.fromisoformat(
            accounts(api, namespace)[account[2]]["metadata"]["creationTimestamp"]
        )
        assert (
            datetime.fromisoformat(cr["status"]["previousExpiryTime"]).timestamp()
            == created_1.timestamp() + 20
        )
        assert (
            datetime.fromisoformat(cr["status"]["currentExpiryTime"]).timestamp()
            == created_2.timestamp() + 20
        )
        # Both credentials work during the overlap.
        assert authn.login(first["username"], first["password"])[0] == 200
        assert authn.login(second["username"], second["password"])[0] == 200

        # Credential 1 expires at creation + TTL and its account is deleted.
        wait_for(lambda: account[1] not in accounts(api, namespace), TTL_SECONDS, "account 1 deleted")
        deleted_after = time.time() - created_1.timestamp()
        print(f"TTL {TTL_SECONDS}s: account 1 deleted {deleted_after:.2f}s after its creation")
        assert TTL_SECONDS <= deleted_after < TTL_SECONDS + 2.5
        assert authn.login(first["username"], first["password"])[0] != 200

        # By now rotation 3 happened too (at 20 s), and nothing else: exactly one per half TTL.
        wait_for(lambda: account[3] in accounts(api, namespace), 5, "rotation 3")
        wait_ready(api, PULL, namespace, "short")
        time.sleep(2)
        assert set(accounts(api, namespace)) == {account[2], account[3]}
        assert api.get(PULL.resource, "short", namespace)["status"]["rotation"] == 3
        third = secret_values(api, namespace, "imagepullsecret-short")
        assert authn.login(third["username"], third["password"])[0] == 200

    expiry = metric_value(
        operator.metrics(),
        "registry_operator_credential_expiry_timestamp_seconds",
        {"namespace": namespace, "name": "short", "kind": "ImagePullSecret"},
    )
    cr = api.get(PULL.resource, "short", namespace)
    assert expiry == datetime.fromisoformat(cr["status"]["currentExpiryTime"]).timestamp()
