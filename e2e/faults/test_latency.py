"""Fault scenario 4 of issue 17: 2 s of latency on every request.

One operator replica behind toxiproxy with a `latency` toxic of 2000 ms on the downstream (every
answer, and every watch event, arrives 2 s late; a new TLS connection pays it per round trip) while
rotate-now annotations flow. It stays correct: every trigger handled with exactly one new account,
no rollback, every secret Ready; and its leader keeps the Lease throughout (same holder, no
transition, the process never exits).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from e2e.controllers.imagesecret_support import api_client, wait_for
from e2e.faults.rotations import (
    Replica,
    RotationFlow,
    RotationHistory,
    all_ready,
    converge,
    cpu_note,
    lease_holder,
    lease_spec,
    new_lease_name,
    parse_time,
    pull_secrets,
)
from e2e.faults.toxiproxy import Toxiproxy
from registry_operator.devenv.cluster import LocalCluster

pytestmark = pytest.mark.faults

SECRETS = 6
LATENCY_MS = 2000
FLOW_SECONDS = 15.0


def test_two_seconds_of_latency_on_every_request_keeps_the_lease_and_rotates_exactly_once(
    cluster: LocalCluster, namespace: str, tmp_path: Path, toxiproxy: Toxiproxy
) -> None:
    api = api_client(cluster)
    names = pull_secrets(api, namespace, SECRETS)
    lease = new_lease_name()
    replica = Replica(cluster, tmp_path, toxiproxy, "slow", lease, namespace)
    history: RotationHistory | None = None
    flow: RotationFlow | None = None
    try:
        replica.start()
        wait_for(lambda: lease_holder(api, lease) == replica.name, 40, "the replica leads")
        wait_for(lambda: all_ready(api, namespace, names), 60, "every ImagePullSecret Ready")
        transitions = lease_spec(api, lease).get("leaseTransitions", 0)
        toxiproxy.add_toxic(replica.name, "latency", "latency", {"latency": LATENCY_MS}, both=False)
        history = RotationHistory(api, namespace)
        flow = RotationFlow(api, namespace, names, interval=0.2).start()
        holders: set[str] = set()
        until = time.monotonic() + FLOW_SECONDS
        while time.monotonic() < until:
            holders.add(lease_holder(api, lease))
            time.sleep(0.5)
        flow.stop()
        figures = converge(api, namespace, flow, history, budget=120)
        holders.add(lease_holder(api, lease))
        new_transitions = lease_spec(api, lease).get("leaseTransitions", 0) - transitions
        renewed_ago = time.time() - parse_time(lease_spec(api, lease)["renewTime"])
        print(
            f"\n{LATENCY_MS} ms latency on every answer for {FLOW_SECONDS:g}s + convergence: lease holders "
            f"{sorted(holders)}, transitions {new_transitions}, "
            f"last renewal {renewed_ago:.1f}s ago; {figures.line()} {cpu_note()}"
        )
        assert holders == {replica.name}, "the leader keeps the Lease"
        assert new_transitions == 0
        assert replica.operator.process.running(), "the leader never stepped down"
        if figures.lost_updates:
            replica.dump_threads()  # where its reconciles hang, in its log
        assert figures.lost_updates == 0
        assert figures.double_rotations == 0
        assert figures.missing_rotations == 0
        assert figures.rollbacks == []
        assert figures.triggers >= SECRETS, "rotations happened under latency"
    finally:
        if flow is not None:
            flow.stop()
        if history is not None:
            history.close()
        replica.stop()
        api.close()
