"""Fault scenario 1 of issue 17, kind (a): the leader's connections hang after connect.

Two manager processes, each behind its own toxiproxy proxy to the real kube-apiserver; probe
ConfigMaps keep arriving, and the leader stamps each with its identity (a conditional patch through
the manager's deadline-bounded client). Then the leader's proxy stops forwarding in both directions
(toxiproxy `timeout` toxic with timeout 0: connections stay open, data is held back, and delivered
when the toxic is removed) for 20 s and for 40 s, then heals.

Attribution twice: by content (every write of a manager stamps its own identity, and a watch records
each accepted write) and by the API server's audit log (each manager has its own client certificate;
held-back requests delivered after the heal show up there as refused). Overlap must be 0: no write
of the old leader accepted after the new leader acquired the Lease.

Kind (b), connects that hang in SYN, with the real operator rotating ImagePullSecrets and the
writes attributed through the API server's audit log: test_leader_partition_connect_hang.py.
"""

from __future__ import annotations

import functools
import threading
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import pytest

from e2e.faults.rotations import audited_writes, wait_audited
from e2e.faults.toxiproxy import Toxiproxy
from e2e.kube.manager_process import PROBE_LABEL, RECONCILED_BY
from e2e.kube.support import wait_for
from e2e.kube.test_leader_election_real import (
    FAILOVER_BUDGET_SECONDS,
    ManagerProcess,
    create_probe,
    lease_holder,
    reconciled_by,
)
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube import objects
from registry_operator.kube.client import Client
from registry_operator.kube.errors import ConnectionFailed
from registry_operator.kube.resources import CONFIGMAPS, LEASES

pytestmark = pytest.mark.faults


class WriteLog:
    """Every accepted write to the probe ConfigMaps: (monotonic time, name, reconciled-by)."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.writes: list[tuple[float, str, str]] = []
        self._stop = threading.Event()
        listed = client.list(CONFIGMAPS, namespace)
        self._stream = client.watch(
            CONFIGMAPS,
            namespace,
            resource_version=objects.resource_version(listed),
            label_selector=f"{PROBE_LABEL}=yes",
            timeout_seconds=600,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._stream:
                if event.type in ("ADDED", "MODIFIED"):
                    by = objects.annotations(event.object).get(RECONCILED_BY, "")
                    self.writes.append((time.monotonic(), objects.name(event.object), by))
        except ConnectionFailed:
            pass

    def close(self) -> None:
        self._stream.close()
        self._thread.join(5)


def stamped_by(client: Client, namespace: str, name: str, identity: str) -> bool:
    return reconciled_by(client, namespace, name) == identity


@pytest.mark.parametrize("partition_seconds", [20.0, 40.0], ids=["20s", "40s"])
def test_a_partitioned_leader_gives_up_and_none_of_its_writes_lands_after_the_new_leader_acquires(
    cluster: LocalCluster, namespace: str, tmp_path: Path, toxiproxy: Toxiproxy, partition_seconds: float
) -> None:
    admin = Client.from_kubeconfig(cluster.kubeconfig)
    upstream = urlparse(cluster.server).netloc
    lease = f"e2e-partition-lease-{partition_seconds:g}"
    managers: dict[str, ManagerProcess] = {}
    for name in ("alpha", "beta"):
        # Its own client certificate: the audit log names the process behind every write.
        server = f"https://{toxiproxy.proxy(name, upstream)}"
        kubeconfig = cluster.client_kubeconfig(f"manager-{name}", server=server)
        managers[name] = ManagerProcess(cluster, namespace, lease, name, tmp_path, kubeconfig=kubeconfig)
    log = WriteLog(admin, namespace)
    flowing = threading.Event()
    flowing.set()
    created: list[str] = []

    def steady_flow() -> None:
        while flowing.is_set():
            name = f"probe-{len(created)}"
            create_probe(admin, namespace, name)
            created.append(name)
            time.sleep(0.25)

    writer = threading.Thread(target=steady_flow, daemon=True)
    try:
        for manager in managers.values():
            manager.wait_event("serving", 60)
        wait_for(lambda: lease_holder(admin, namespace, lease) in managers, 30, "a lease holder")
        old = managers[lease_holder(admin, namespace, lease)]
        new = next(m for m in managers.values() if m is not old)
        old.wait_event("leading", 10)
        writer.start()
        wait_for(lambda: len(created) >= 8, 10, "probes flowing")
        wait_for(
            lambda: reconciled_by(admin, namespace, created[-4]) == old.identity, 20, "old leader writes"
        )

        toxiproxy.blackhole(old.identity)
        partitioned_at = time.monotonic()
        partitioned_wall = time.time()
        # The acquire as the API server recorded it (the Lease's acquireTime, written by the new
        # leader): independent of the processes' own milestone output.
        wait_for(
            lambda: lease_holder(admin, namespace, lease) == new.identity,
            FAILOVER_BUDGET_SECONDS + 10,
            "the standby holds the Lease",
        )
        acquire_time = admin.get(LEASES, lease, namespace)["spec"]["acquireTime"]
        acquired_wall = datetime.fromisoformat(acquire_time.replace("Z", "+00:00")).timestamp()
        acquired_at = time.monotonic() - (time.time() - acquired_wall)
        code = old.process.wait(max(1.0, partitioned_at + partition_seconds - time.monotonic()))
        # Both processes stamp their milestones with the (shared) wall clock.
        old_exited_wall = old.wait_event("exit", 5)["time"]
        time.sleep(max(0.0, partitioned_at + partition_seconds - time.monotonic()))
        toxiproxy.heal(old.identity)
        healed_at = time.monotonic()
        time.sleep(5)  # held-back requests of the old leader reach the API server now
        flowing.clear()
        writer.join(5)
        for name in created:
            wait_for(
                functools.partial(stamped_by, admin, namespace, name, new.identity), 30, f"{name} by new"
            )
        time.sleep(1)
        log.close()

        stale = [(t, name) for t, name, by in log.writes if by == old.identity and t > acquired_at]
        flips = [
            name
            for t, name, by in log.writes
            if t > acquired_at
            and by == old.identity
            and reconciled_by(admin, namespace, name) != new.identity
        ]
        wait_audited(cluster, f"manager-{new.identity}", time.time())
        audited = audited_writes(cluster, f"manager-{old.identity}", acquired_wall)
        failover = acquired_wall - partitioned_wall
        overlap = max(0.0, old_exited_wall - acquired_wall)
        print(
            f"\nleader partition (hang after connect, {partition_seconds:g}s): failover {failover:.2f}s, "
            f"old leader exited with {code} {old_exited_wall - partitioned_wall:.2f}s in "
            f"(overlap {overlap:.2f}s), healed at +{healed_at - partitioned_at:.1f}s; "
            f"{len(log.writes)} writes seen, {len(stale)} stale writes accepted after the acquire, "
            f"{len(created)} probes; audit log, old leader's writes after the acquire: {audited.line()}"
        )
        assert code == 2, "a deposed leader exits non-zero (LEADERSHIP_LOST)"
        assert overlap == 0.0, "the old leader must have given up before the new one acquired"
        assert failover <= FAILOVER_BUDGET_SECONDS
        assert stale == [], "no write of the old leader may be accepted after the new leader's acquire"
        assert flips == []
        assert audited.accepted == [], "the API server accepted no write of the old leader after the acquire"
    finally:
        flowing.clear()
        log.close()
        for manager in managers.values():
            manager.stop()
        admin.close()
