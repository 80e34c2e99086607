"""Fault scenario 1 of issue 17, kind (b): the leader's new connections hang in TCP connect.

Two real operator replicas (imagesecret + imageregistryaccount controllers), each with its own client
certificate (so the API server's audit log names it) behind its own toxiproxy proxy, rotate
ImagePullSecrets under a steady flow of rotate-now annotations. Then the leader is partitioned for
20 s and for 40 s: its proxy is disabled (the established connections close) and its listen port is
taken by a listener with a full accept queue, so every new connect gets no SYN-ACK and hangs until
the client's own timeout (see e2e/faults/toxiproxy.py — toxiproxy itself accepts every connection).
Then it heals, and the deposed replica, which exited non-zero, is started again as a follower, as
its Deployment would.

Overlap must be 0: the API server accepted no write of the deposed leader received after the new
leader's acquire (audit log, by user; refused writes are counted apart), the deposed leader had
stopped before the acquire, and no Secret or CR ever moved back to an older rotation; no double
rotation, no lost trigger. Small N (12 secrets) keeps it near a minute per partition on 2 cores.
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
    audited_writes,
    converge,
    cpu_note,
    lease_holder,
    lease_spec,
    new_lease_name,
    parse_time,
    pull_secrets,
    wait_audited,
)
from e2e.faults.toxiproxy import ConnectHang, Toxiproxy
from e2e.kube.test_leader_election_real import FAILOVER_BUDGET_SECONDS
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.manager import ExitCode

pytestmark = pytest.mark.faults

SECRETS = 12


@pytest.mark.parametrize("partition_seconds", [20.0, 40.0], ids=["20s", "40s"])
def test_a_leader_whose_connects_hang_steps_down_and_none_of_its_writes_lands_after_the_acquire(
    cluster: LocalCluster, namespace: str, tmp_path: Path, toxiproxy: Toxiproxy, partition_seconds: float
) -> None:
    api = api_client(cluster)
    names = pull_secrets(api, namespace, SECRETS)
    lease = new_lease_name()
    replicas = {
        name: Replica(cluster, tmp_path, toxiproxy, name, lease, namespace) for name in ("alpha", "beta")
    }
    history: RotationHistory | None = None
    flow: RotationFlow | None = None
    try:
        for replica in replicas.values():
            replica.start()
        wait_for(lambda: lease_holder(api, lease) in replicas, 40, "a lease holder")
        old = replicas[lease_holder(api, lease)]
        new = next(r for r in replicas.values() if r is not old)
        wait_for(lambda: all_ready(api, namespace, names), 60, "every ImagePullSecret Ready")
        history = RotationHistory(api, namespace)
        flow = RotationFlow(api, namespace, names).start()
        wait_for(lambda: flow.count >= SECRETS, 30, "rotations flowing")

        old.watch_exit()
        hang = ConnectHang(toxiproxy, old.name, old.listen)
        hang.start()
        partitioned_at = time.time()
        wait_for(
            lambda: lease_holder(api, lease) == new.name,
            FAILOVER_BUDGET_SECONDS + 15,
            "the standby holds the Lease",
        )
        acquired_at = parse_time(lease_spec(api, lease)["acquireTime"])
        wait_for(
            lambda: old.exited_at is not None,
            max(1.0, partitioned_at + partition_seconds - time.time()),
            "the deposed leader exits",
        )
        time.sleep(max(0.0, partitioned_at + partition_seconds - time.time()))
        hang.stop()
        healed_at = time.time()
        exited_at, exit_code = old.exited_at, old.exit_code
        assert exited_at is not None
        old.start(wait_ready=True)  # as its Deployment would: a follower now
        time.sleep(3)
        flow.stop()
        figures = converge(api, namespace, flow, history)
        wait_audited(cluster, new.user, time.time())
        stale = audited_writes(cluster, old.user, acquired_at)
        new_writes = audited_writes(cluster, new.user, acquired_at)

        failover = acquired_at - partitioned_at
        overlap = max(0.0, exited_at - acquired_at)
        print(
            f"\nleader partition (connects hang, {partition_seconds:g}s): failover {failover:.2f}s, "
            f"deposed leader exited with {exit_code} {exited_at - partitioned_at:.2f}s in "
            f"(overlap {overlap:.2f}s), healed at +{healed_at - partitioned_at:.1f}s; "
            f"writes after the acquire: deposed {stale.line()}; new leader {new_writes.line()}; "
            f"{figures.line()} {cpu_note()}"
        )
        assert exit_code == ExitCode.LEADERSHIP_LOST, "a deposed leader exits non-zero"
        assert overlap == 0.0, "the old leader must have stopped before the new one acquired"
        assert failover <= FAILOVER_BUDGET_SECONDS
        assert stale.accepted == [], "no write of the deposed leader may be accepted after the acquire"
        assert new_writes.accepted, "the new leader's writes are in the audit log (attribution works)"
        assert lease_holder(api, lease) == new.name, "the healed replica stays a follower"
        assert figures.rollbacks == []
        assert figures.lost_updates == 0
        assert figures.double_rotations == 0
        assert figures.missing_rotations == 0
    finally:
        if flow is not None:
            flow.stop()
        if history is not None:
            history.close()
        for replica in replicas.values():
            replica.stop()
        api.close()
