"""KEP-1755 on the real control plane: kube-public/local-registry-hosting follows the default
registry (opt-in), and a ConfigMap someone else owns is left alone."""

from __future__ import annotations

import time
from typing import Any

import yaml

from e2e.controllers.imagesecret_support import get_or_none, make_registry, wait_for
from registry_operator.controllers.localregistryhosting import CONFIGMAP_NAME, CONFIGMAP_NAMESPACE, DATA_KEY
from registry_operator.controllers.resources import CONFIGMAPS, IMAGE_REGISTRIES
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.client import Client


def test_local_registry_hosting_follows_the_default_registry(
    cluster: LocalCluster, namespace: str, start_operator: Any
) -> None:
    api = Client.from_kubeconfig(cluster.kubeconfig)
    api.delete(CONFIGMAPS, CONFIGMAP_NAME, CONFIGMAP_NAMESPACE, missing_ok=True)
    start_operator(
        controllers="localregistryhosting",
        env={
            "OPERATOR_LOCAL_REGISTRY_HOSTING": "true",
            "OPERATOR_DEFAULT_REGISTRY_NAME": "registry",
            "OPERATOR_DEFAULT_REGISTRY_NAMESPACE": namespace,
        },
    )
    try:
        make_registry(api, namespace)

        def published() -> dict[str, Any] | None:
            cm = get_or_none(api, CONFIGMAPS, CONFIGMAP_NAME, CONFIGMAP_NAMESPACE)
            return yaml.safe_load(cm["data"][DATA_KEY]) if cm else None

        wait_for(published, 10, "the local-registry-hosting ConfigMap")
        hosting = published()
        assert hosting is not None
        assert hosting["host"] == f"registry.{namespace}.svc.cluster.local"
        assert hosting["hostFromContainerRuntime"] == hosting["host"] == hosting["hostFromClusterNetwork"]

        api.delete(IMAGE_REGISTRIES, "registry", namespace)
        wait_for(lambda: published() is None, 10, "the ConfigMap to go with the registry")

        # Someone else's ConfigMap (kind, ctlptl): never overwritten or deleted.
        theirs = {
            "metadata": {"name": CONFIGMAP_NAME, "namespace": CONFIGMAP_NAMESPACE},
            "data": {DATA_KEY: "host: x\n"},
        }
        api.create(CONFIGMAPS, theirs)
        make_registry(api, namespace)
        time.sleep(3)  # long enough for the watch events of both objects to have been handled
        assert api.get(CONFIGMAPS, CONFIGMAP_NAME, CONFIGMAP_NAMESPACE)["data"] == {DATA_KEY: "host: x\n"}
    finally:
        api.delete(CONFIGMAPS, CONFIGMAP_NAME, CONFIGMAP_NAMESPACE, missing_ok=True)
