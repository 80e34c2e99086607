"""200 ImagePullSecrets created at once all become Ready (hack/bench/pull_secrets.py against the
session's control plane and a real operator process). Prints the time it took and the API requests
the operator made; fails on a lost or duplicated credential, on writes at steady state, or on a
blow-up of the requests per secret.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from e2e.controllers.imagesecret_support import api_client
from registry_operator.devenv.cluster import LocalCluster

BENCH = Path(__file__).resolve().parents[2] / "hack" / "bench" / "pull_secrets.py"
COUNT = 200
# What one secret needs: finalizer, account, Secret, Event and one status write (rotation 1 + Ready).
# The finalizer PUT stands in for the rotation claim, and issued accounts carry no status of their own.
WRITES_PER_SECRET = 5


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pull_secrets_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_200_pull_secrets_created_at_once_all_become_ready(
    cluster: LocalCluster, namespace: str, start_operator: Any
) -> None:
    bench = load_bench()
    # No leader election: Lease renewals would count as writes.
    operator = start_operator(
        controllers="imagesecret,imageregistryaccount",
        # Only this namespace: CRs that earlier tests left terminating elsewhere would add their writes.
        env={"OPERATOR_LEADER_ELECTION": "false", "LOG_LEVEL": "info", "WATCH_NAMESPACE": namespace},
    )
    result = bench.run(
        api_client(cluster),
        f"http://127.0.0.1:{operator.metrics_port}/metrics",
        namespace,
        COUNT,
        steady_seconds=3.0,
    )
    print("\n" + bench.report(result))

    assert result.accounts == COUNT  # exactly one credential per secret
    assert result.steady_state_writes == 0
    # At least the five writes each, and no more that succeed. A write refused with 409 (a stale cache
    # under optimistic concurrency, retried with fresh data) is the only extra, and a rare one.
    assert result.writes >= WRITES_PER_SECRET * COUNT
    assert result.writes - result.conflicted_writes <= WRITES_PER_SECRET * COUNT
    assert result.conflicted_writes <= COUNT * 0.02
    assert result.event_writes == COUNT  # one Rotated Event per secret
    assert result.requests_per_secret <= WRITES_PER_SECRET + 2
    assert result.all_ready_seconds < 60
