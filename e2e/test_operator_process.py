"""The operator process itself: start-up, leader election Lease, probes and metrics, graceful stop."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

from e2e.support.operator import OPERATOR_NAMESPACE, OperatorProcess
from registry_operator.devenv.cluster import LocalCluster

LEASE = "image-registry-operator-lock"


def _holder(cluster: LocalCluster) -> str:
    result = cluster.kubectl("get", "lease", LEASE, "-n", OPERATOR_NAMESPACE, "-o", "json", check=False)
    if result.returncode != 0:
        return ""
    return str(json.loads(result.stdout)["spec"].get("holderIdentity") or "")


def test_operator_leads_serves_probes_and_releases_the_lease_on_sigterm(
    cluster: LocalCluster, start_operator: Callable[..., OperatorProcess]
) -> None:
    operator = start_operator(controllers="")  # the process and framework only
    deadline = time.monotonic() + 30
    while not _holder(cluster):
        assert time.monotonic() < deadline, "the operator never acquired the leader Lease"
        time.sleep(0.2)
    # Identity is hostname + "_" + a per-process uuid, so two replicas on one host never collide.
    host, _, unique = _holder(cluster).partition("_")
    assert host == socket.gethostname()
    assert len(unique) >= 32

    # Probes on the health port, metrics on the metrics port (the Deployment's two ports).
    assert operator.http_get("/healthz")[0] == 200
    assert operator.http_get("/readyz")[0] == 200
    metrics = operator.metrics()
    assert "leader_election_master_status" in metrics
    assert "rest_client_requests_total" in metrics

    started = time.monotonic()
    operator.stop()  # SIGTERM
    stopped_in = time.monotonic() - started
    print(f"\ngraceful stop took {stopped_in:.2f}s")
    assert stopped_in < 30
    assert _holder(cluster) == "", "the Lease must be released on a graceful stop"
