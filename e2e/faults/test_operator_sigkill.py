"""Fault scenario 3 of issue 17: SIGKILL of the operator at random points of rotation, 20 times, with
rotate-now annotations flowing.

One operator replica with leader election; after each kill it is started again under the same
POD_NAME (a container restart in its pod), so it takes its own Lease back at once. Each kill lands a
random 0-400 ms after the operator was seen handling a trigger, with triggers flowing over every
secret, so it cuts rotations at every step (claim, account, Secret, status). Right after every kill,
every Secret's username/password is checked against its ImageRegistryAccount with the authn
sidecar's own decision (`authn.authenticate` / `accounts.verify_account_password`). At the end every
trigger is handled with exactly one new account. Small N (8 secrets) keeps it near two minutes.
"""

from __future__ import annotations

import functools
import random
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
    new_lease_name,
    pull_secrets,
    refused_credentials,
)
from registry_operator.devenv.cluster import LocalCluster

pytestmark = pytest.mark.faults

KILLS = 20
SECRETS = 8


def handled_since(flow: RotationFlow, sent: int) -> bool:
    """The operator handled a trigger sent after the first `sent`: it runs and leads."""
    return flow.newest_handled() > sent


def test_sigkill_at_random_points_of_rotation_never_leaves_a_refused_credential_or_a_double_rotation(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    api = api_client(cluster)
    names = pull_secrets(api, namespace, SECRETS)
    replica = Replica(cluster, tmp_path, None, "solo", new_lease_name(), namespace)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    history: RotationHistory | None = None
    flow: RotationFlow | None = None
    try:
        replica.start()
        wait_for(lambda: all_ready(api, namespace, names), 60, "every ImagePullSecret Ready")
        history = RotationHistory(api, namespace)
        flow = RotationFlow(api, namespace, names, interval=0.05).start()
        refused_after_kills: list[str] = []
        delays: list[float] = []
        for kill in range(KILLS):
            sent = flow.count
            wait_for(
                functools.partial(handled_since, flow, sent), 60, f"a trigger handled after start {kill}"
            )
            delays.append(rng.uniform(0.0, 0.4))
            time.sleep(delays[-1])
            replica.kill()
            refused_after_kills += [f"kill {kill}: {r}" for r in refused_credentials(api, namespace, names)]
            replica.start(wait_ready=False)
        flow.stop()
        figures = converge(api, namespace, flow, history)
        refused_at_end = refused_credentials(api, namespace, names)
        print(
            f"\n{KILLS} SIGKILLs (seed {seed}, {min(delays) * 1000:.0f}-{max(delays) * 1000:.0f} ms after a "
            f"handled trigger): refused credentials after kills {len(refused_after_kills)}, at the end "
            f"{len(refused_at_end)}; {figures.line()} {cpu_note()}"
        )
        assert refused_after_kills == [], "no Secret may point at a credential the sidecar refuses"
        assert refused_at_end == []
        assert figures.lost_updates == 0
        assert figures.double_rotations == 0, "exactly one new account per trigger"
        assert figures.missing_rotations == 0
        assert figures.rollbacks == []
    finally:
        if flow is not None:
            flow.stop()
        if history is not None:
            history.close()
        replica.stop()
        api.close()
