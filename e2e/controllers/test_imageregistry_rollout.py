"""Operator upgrades roll registries gradually (issue 13): with a new authn sidecar image, at most
OPERATOR_MAX_CONCURRENT_ROLLOUTS registries replace their pods at once, on the real control plane
(kube-controller-manager's StatefulSet controller, kwok pods); a registry with more than one
replica gets a PodDisruptionBudget, and loses it again at one replica.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from e2e.api.kube import apply
from e2e.controllers.imageregistry_support import registry_manifest, wait_condition
from e2e.kube.support import wait_for
from e2e.support.operator import OperatorProcess
from registry_operator.controllers.imageregistry.rollout import is_rolling
from registry_operator.controllers.resources import IMAGE_REGISTRIES, POD_DISRUPTION_BUDGETS, STATEFULSETS
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.client import Client
from registry_operator.kube.errors import NotFound

REGISTRIES = [f"reg{i}" for i in range(5)]
BOUND = 1  # the operator has 2 workers: without the bound, 2 registries roll at once (measured)
OLD_IMAGE = "example.org/registry-operator:old"
NEW_IMAGE = "example.org/registry-operator:new"


def authn_images(api: Client, namespace: str) -> dict[str, str]:
    images = {}
    for sts in api.list(STATEFULSETS, namespace).get("items") or []:
        containers = sts["spec"]["template"]["spec"]["containers"]
        images[sts["metadata"]["name"]] = next(c["image"] for c in containers if c["name"] == "authn")
    return images


def test_a_new_sidecar_image_rolls_at_most_the_bound_of_registries_at_once(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    volumes: Callable[..., str],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    env = {"OPERATOR_LEADER_ELECTION": "false", "OPERATOR_MAX_CONCURRENT_ROLLOUTS": str(BOUND)}
    old = start_operator(controllers="caroot,imageregistry", env={**env, "OPERATOR_IMAGE_AUTHN": OLD_IMAGE})
    for name in REGISTRIES:
        volumes(namespace, f"imageregistry-{name}-pvc", access_modes=("ReadWriteMany",))
        apply(cluster, namespace, registry_manifest(name))
    for name in REGISTRIES:
        wait_condition(api, namespace, name, status="True")
    assert set(authn_images(api, namespace).values()) == {OLD_IMAGE}
    old.stop()

    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            items = api.list(STATEFULSETS, namespace).get("items") or []
            peak = max(peak, sum(1 for sts in items if is_rolling(sts)))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        start_operator(controllers="caroot,imageregistry", env={**env, "OPERATOR_IMAGE_AUTHN": NEW_IMAGE})
        wait_for(
            lambda: set(authn_images(api, namespace).values()) == {NEW_IMAGE}, 120, "every registry rolled"
        )
        for name in REGISTRIES:
            wait_condition(api, namespace, name, status="True")
    finally:
        stop.set()
        sampler.join()
    print(
        f"\n{len(REGISTRIES)} registries upgraded in {time.monotonic() - started:.1f}s, peak {peak} rolling"
    )
    assert 1 <= peak <= BOUND


def test_more_than_one_replica_gets_a_disruption_budget(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    volumes: Callable[..., str],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    def gone() -> bool:
        try:
            api.get(POD_DISRUPTION_BUDGETS, "ha", namespace)
        except NotFound:
            return True
        return False

    start_operator(controllers="caroot,imageregistry", env={"OPERATOR_LEADER_ELECTION": "false"})
    volumes(namespace, "imageregistry-ha-pvc", access_modes=("ReadWriteMany",))
    apply(cluster, namespace, registry_manifest("ha", replicas=2))
    wait_for(lambda: not gone(), 60, "the PodDisruptionBudget")
    pdb: dict[str, Any] = api.get(POD_DISRUPTION_BUDGETS, "ha", namespace)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == {"matchLabels": {"app": "imageregistry-ha"}}

    api.patch(IMAGE_REGISTRIES, "ha", {"spec": {"replicas": 1}}, namespace)

    wait_for(gone, 60, "the PodDisruptionBudget removed at one replica")
