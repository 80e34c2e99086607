"""The operator's caches hold only what its reconcilers read, on a cluster full of unrelated objects.

The whole operator (every controller but the opt-in ones) runs in this process, so that its caches
can be counted through the framework's own API (`manager.informers`): thousands of unrelated
Secrets and ConfigMaps in other namespaces never enter them, no cached object carries
managedFields, and a user Secret the operator reads by name (a registry's spec.tls.secretName, an
ImageBuildEnv input) still triggers the reconciles that depend on it when it changes.
"""

from __future__ import annotations

import base64
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.controllers.imagebuildenv_support import build_env, conf, docker_config, push_format_secret
from e2e.controllers.imagebuildenv_support import wait_ready as wait_env_ready
from e2e.controllers.imageregistry_support import (
    pod_template_hash,
    user_tls_secret,
    wait_condition,
)
from e2e.controllers.imagesecret_support import create_cr, secret_values, wait_ready
from e2e.kube.support import parallel, wait_for
from e2e.support.operator import OPERATOR_NAMESPACE
from registry_operator import controllers
from registry_operator.api import constants as c
from registry_operator.config import load_settings
from registry_operator.controllers.imagesecret_desired import PULL, PUSH
from registry_operator.controllers.resources import (
    CONFIGMAPS,
    IMAGE_BUILD_ENVS,
    IMAGE_REGISTRIES,
    NAMESPACES,
    SECRETS,
)
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.devenv.processes import free_port
from registry_operator.kube.cache import Object
from registry_operator.kube.client import Client
from registry_operator.kube.manager import ExitCode, Manager
from registry_operator.kube.transforms import LAST_APPLIED_ANNOTATION
from registry_operator.operator import PUT_FROM_CACHE, build_manager

NOISE_SECRETS = int(os.environ.get("E2E_NOISE_SECRETS", "2000"))
NOISE_CONFIGMAPS = 200
NOISE_NAMESPACES = 4
CONTROLLERS = "caroot,imageregistry,imageregistryaccount,imagesecret,imagebuildenv,serviceaccounts"


@pytest.fixture
def noise(cluster: LocalCluster, api: Client) -> Iterator[list[str]]:
    """Unrelated 4 KiB Secrets and ConfigMaps in other namespaces, some of them looking like ours:
    the same names as the test's referenced Secrets, another manager's managed-by label, kubectl's
    last-applied annotation."""
    prefix = f"noise-{uuid.uuid4().hex[:6]}"
    namespaces = [f"{prefix}-{i}" for i in range(NOISE_NAMESPACES)]
    for name in namespaces:
        api.create(NAMESPACES, {"metadata": {"name": name}})
    payload = base64.b64encode(os.urandom(3072)).decode()  # 4 KiB once encoded

    def secret(index: int) -> None:
        namespace = namespaces[index % NOISE_NAMESPACES]
        name = "user-tls" if index < NOISE_NAMESPACES else f"sh.helm.release.v1.app{index}.v1"
        metadata: Object = {
            "name": name,
            "labels": {c.LABEL_MANAGED_BY: "Helm", "owner": "helm"},
            "annotations": {LAST_APPLIED_ANNOTATION: "{}"},
        }
        api.create(
            SECRETS,
            {"metadata": metadata, "type": "helm.sh/release.v1", "data": {"release": payload}},
            namespace,
        )

    def configmap(index: int) -> None:
        namespace = namespaces[index % NOISE_NAMESPACES]
        api.create(CONFIGMAPS, {"metadata": {"name": f"cm-{index}"}, "data": {"blob": payload}}, namespace)

    parallel(secret, range(NOISE_SECRETS), workers=16)
    parallel(configmap, range(NOISE_CONFIGMAPS), workers=16)
    try:
        yield namespaces
    finally:
        for name in namespaces:
            cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


class InProcessOperator:
    def __init__(self, cluster: LocalCluster, tmp_path: Path) -> None:
        self.client = Client.from_kubeconfig(cluster.kubeconfig)
        settings = load_settings(
            {
                "POD_NAMESPACE": OPERATOR_NAMESPACE,
                "WATCH_NAMESPACE": "",
                "OPERATOR_LEADER_ELECTION": "false",
                # A user TLS Secret renewed from another CA waits this long for the CA to be out.
                "OPERATOR_TRUST_OVERLAP": "2s",
                "OPERATOR_METRICS_BIND_ADDRESS": f"127.0.0.1:{free_port()}",
                "OPERATOR_HEALTH_PROBE_BIND_ADDRESS": f"127.0.0.1:{free_port()}",
            },
            namespace_file=tmp_path / "no-namespace-file",
        )
        self.manager: Manager = build_manager(self.client, settings, controllers.select(CONTROLLERS))
        self.result: list[ExitCode] = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(self.manager.run(install_signal_handlers=False)), daemon=True
        )

    def __enter__(self) -> InProcessOperator:
        self.thread.start()
        wait_for(self.manager.ready, 120, "the operator's caches to sync")
        return self

    def __exit__(self, *exc: object) -> None:
        self.manager.request_stop()
        self.thread.join(40)
        self.client.close()

    def cached(self, resource: Any) -> list[tuple[str, Object]]:
        """(informer name, object) for every cached object of `resource`, over all its informers."""
        found: list[tuple[str, Object]] = []
        for key, informer in self.manager.informers.informers().items():
            if key.resource == resource:
                found.extend((informer.name, obj) for obj in informer.store.list(copy=False))
        for by_name_resource, by_name in self.manager.informers.by_name_informers().items():
            if by_name_resource == resource:
                found.extend((by_name.name, obj) for obj in by_name.store.list(copy=False))
        return found


def ensure_operator_namespace(cluster: LocalCluster) -> None:
    def active() -> bool:
        phase = cluster.kubectl(
            "get", "namespace", OPERATOR_NAMESPACE, "-o", "jsonpath={.status.phase}", check=False
        )
        if phase.returncode != 0:
            cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
            return False
        return phase.stdout == "Active"

    wait_for(active, 120, f"namespace {OPERATOR_NAMESPACE} to be Active")


def test_caches_hold_only_what_reconcilers_read_and_referenced_secrets_still_trigger(
    cluster: LocalCluster,
    api: Client,
    namespace: str,
    noise: list[str],
    volumes: Callable[..., str],
    tmp_path: Path,
) -> None:
    ensure_operator_namespace(cluster)
    name = "cached"
    host = f"{name}.{namespace}.svc"
    api.create(SECRETS, user_tls_secret(namespace, "user-tls", [host]))
    api.create(
        SECRETS,
        {
            "metadata": {"name": "user-docker", "namespace": namespace},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {
                ".dockerconfigjson": base64.b64encode(docker_config("a.example", "u", "p").encode()).decode()
            },
        },
    )
    # A Secret of the test namespace nobody refers to: no cache may hold it either.
    unreferenced = push_format_secret("unreferenced", "b.example", "u", "p")
    api.create(SECRETS, unreferenced, namespace)
    volumes(namespace, f"imageregistry-{name}-pvc", access_modes=("ReadWriteMany",))
    api.create(
        IMAGE_REGISTRIES,
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": 1,
                "tls": {"secretName": "user-tls"},
                "persistentVolumeClaim": {
                    "storageClassName": "standard",
                    "accessModes": ["ReadWriteMany"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        },
    )
    registry_ref = {"name": name}
    with InProcessOperator(cluster, tmp_path) as operator:
        wait_condition(api, namespace, name, status="True", reason="Available")
        create_cr(api, PUSH, namespace, "builder", registry_ref)
        create_cr(api, PULL, namespace, "puller", registry_ref)
        wait_ready(api, PUSH, namespace, "builder", timeout=60)
        wait_ready(api, PULL, namespace, "puller", timeout=60)
        api.create(IMAGE_BUILD_ENVS, build_env("env", "imagepushsecret-builder", "user-docker"), namespace)
        wait_env_ready(api, namespace, "env")

        # 1. Nothing unrelated is cached: no Secret or ConfigMap of the noise namespaces, none of the
        #    test namespace that nobody refers to, and in all only a handful of objects.
        secrets = operator.cached(SECRETS)
        configmaps = operator.cached(CONFIGMAPS)
        cached_keys = {f"{o['metadata']['namespace']}/{o['metadata']['name']}" for _, o in secrets}
        print(f"\ncached: {len(secrets)} Secrets ({len(cached_keys)} distinct), {len(configmaps)} ConfigMaps")
        for informer_name, obj in secrets + configmaps:
            assert obj["metadata"]["namespace"] in (namespace, OPERATOR_NAMESPACE), (
                informer_name,
                obj["metadata"],
            )
        assert f"{namespace}/unreferenced" not in cached_keys
        assert {f"{namespace}/user-tls", f"{namespace}/user-docker"} <= cached_keys
        assert len(secrets) < 30 and len(configmaps) < 10
        by_name = operator.manager.informers.by_name_informers()[SECRETS]
        assert set(by_name.watched_keys()) == {
            f"{namespace}/user-tls",
            f"{namespace}/user-docker",
            f"{namespace}/imagepushsecret-builder",
        }

        # 2. No cached object carries managedFields; last-applied only where the cache is written
        #    back whole (PUT_FROM_CACHE).
        every_cached = [
            (key.resource, obj)
            for key, informer in operator.manager.informers.informers().items()
            for obj in informer.store.list(copy=False)
        ] + [(SECRETS, obj) for _, obj in secrets]
        assert every_cached
        for resource, obj in every_cached:
            assert "managedFields" not in obj["metadata"], (resource, obj["metadata"]["name"])
            if resource not in PUT_FROM_CACHE:
                assert LAST_APPLIED_ANNOTATION not in (obj["metadata"].get("annotations") or {})

        # 3. A generated Secret without the managed-by label (as an older operator wrote it) leaves
        #    the label-selected cache; the reconciler finds it by GET and labels it again.
        cluster.kubectl(
            "label", "-n", namespace, "secret", "imagepullsecret-puller", f"{c.LABEL_MANAGED_BY}-"
        )
        wait_for(
            lambda: (
                api.get(SECRETS, "imagepullsecret-puller", namespace)["metadata"]
                .get("labels", {})
                .get(c.LABEL_MANAGED_BY)
                == c.MANAGED_BY_VALUE
            ),
            30,
            "the generated pull secret to be labelled again",
        )

        # 4. Referenced user Secrets are watched: changing them triggers the reconciles reading them.
        before = pod_template_hash(api, namespace, name)
        renewed = user_tls_secret(namespace, "user-tls", [host])
        current = api.get(SECRETS, "user-tls", namespace)
        current["data"] = renewed["data"]
        api.update(SECRETS, current)
        new_ca = base64.b64decode(renewed["data"]["ca.crt"]).decode()
        wait_for(lambda: pod_template_hash(api, namespace, name) != before, 60, "the registry pods to roll")
        wait_for(
            lambda: secret_values(api, namespace, "imagepullsecret-puller")["ca.crt"] == new_ca,
            60,
            "the pull secret to carry only the new CA (the trust overlap is over)",
        )
        docker = api.get(SECRETS, "user-docker", namespace)
        docker["data"][".dockerconfigjson"] = base64.b64encode(
            docker_config("c.example", "u", "p").encode()
        ).decode()
        api.update(SECRETS, docker)
        wait_for(lambda: "c.example" in conf(api, namespace, "env")["config.json"], 60, "the merged config")
    assert operator.result == [ExitCode.OK]
