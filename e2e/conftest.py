"""Fixtures for tests against a real kube-apiserver + etcd (+ controller-manager, scheduler, kwok).

One control plane serves the whole session; each test gets its own namespace. The binaries are
built (never skipped) by hack/build-deps.sh on first use and cached outside the clone.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2e.support.operator import OperatorProcess
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.client import Client

CRD_DIR = Path(__file__).resolve().parents[1] / "manifests" / "crds"


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    keep = os.environ.get("E2E_KEEP_WORKDIR") == "1"  # keep component logs for debugging
    local = LocalCluster(keep_workdir=keep)
    local.start()
    try:
        local.install_crds(CRD_DIR)
        yield local
    finally:
        local.stop()
        if keep:
            print(f"\ncluster logs kept in {local.log_dir}")


@pytest.fixture(scope="session")
def api(cluster: LocalCluster) -> Iterator[Client]:
    """A framework client as the cluster admin, for tests that read and write objects directly."""
    client = Client.from_kubeconfig(cluster.kubeconfig)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        # Don't wait: namespace finalization runs in controller-manager while the next test goes on.
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def start_operator(cluster: LocalCluster, tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    """Start the real operator as a subprocess; stopped (and its log kept in tmp_path) afterwards.

    Usage: `start_operator(controllers="caroot,imageregistry", env={"OPERATOR_SECRET_TTL": "1m"})`.
    Only one operator should run at a time: they share the cluster (and the leader Lease).
    """
    started: list[OperatorProcess] = []

    def start(
        *, controllers: str = "*", env: dict[str, str] | None = None, wait_ready: bool = True
    ) -> OperatorProcess:
        operator = OperatorProcess(
            cluster, tmp_path, controllers=controllers, env=env, name=f"operator-{len(started)}"
        )
        started.append(operator)
        return operator.start(wait_ready=wait_ready)

    try:
        yield start
    finally:
        for operator in started:
            operator.stop()
