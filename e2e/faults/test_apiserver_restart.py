"""Fault scenario 2 of issue 17: kube-apiserver restarts while 200 ImagePullSecrets converge.

One operator replica with leader election (its own identity, straight to the API server), restarted
by the test whenever it exits, as its pod's kubelet would (a leader that cannot renew through the
restart exits non-zero by design). Every secret ends Ready with exactly one account, and its Secret's
credential is one the authn sidecar accepts: 0 lost updates.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from e2e.controllers.imagesecret_support import api_client, create_cr, make_registry, wait_for
from e2e.faults.rotations import (
    Replica,
    accounts_per_secret,
    all_ready,
    cpu_note,
    is_ready,
    new_lease_name,
    refused_credentials,
)
from e2e.kube.support import parallel
from registry_operator.controllers.imagesecret_desired import PULL
from registry_operator.controllers.resources import IMAGE_PULL_SECRETS
from registry_operator.devenv.cluster import LocalCluster

pytestmark = pytest.mark.faults

COUNT = 200


def test_200_pull_secrets_converge_across_a_kube_apiserver_restart(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    api = api_client(cluster)
    replica = Replica(cluster, tmp_path, None, "solo", new_lease_name(), namespace)
    try:
        replica.start()
        replica.supervise()
        make_registry(api, namespace)
        names = [f"pull-{index}" for index in range(COUNT)]
        registry = {"name": "registry", "namespace": namespace}
        started = time.monotonic()
        parallel(lambda name: create_cr(api, PULL, namespace, name, registry), names)

        def ready_count() -> int:
            return sum(1 for cr in api.list(IMAGE_PULL_SECRETS, namespace)["items"] if is_ready(cr))

        wait_for(lambda: ready_count() >= COUNT // 4, 90, "a quarter of the secrets Ready")
        ready_before = ready_count()
        restart_started = time.monotonic()
        cluster.restart_apiserver()
        down = time.monotonic() - restart_started
        wait_for(lambda: all_ready(api, namespace, names), 180, "every ImagePullSecret Ready", interval=0.5)
        convergence = time.monotonic() - started
        time.sleep(3)  # a stray extra rotation shows itself here

        accounts = accounts_per_secret(api, namespace)
        crs = {cr["metadata"]["name"]: cr for cr in api.list(IMAGE_PULL_SECRETS, namespace)["items"]}
        double = {name: rotations for name, rotations in accounts.items() if len(rotations) != 1}
        unrotated = [name for name in names if (crs[name].get("status") or {}).get("rotation") != 1]
        refused = refused_credentials(api, namespace, names)
        lost = [name for name in names if not is_ready(crs[name])] + refused
        print(
            f"\nkube-apiserver restart ({down:.1f}s down) with {ready_before}/{COUNT} Ready: all Ready after "
            f"{convergence:.1f}s (convergence), lost updates {len(lost)}, double rotations {len(double)}, "
            f"operator restarts {replica.restarts} {cpu_note()}"
        )
        assert double == {}, "exactly one account per secret"
        assert unrotated == []
        assert lost == []
        assert set(accounts) == set(names)
    finally:
        replica.stop()
        api.close()
