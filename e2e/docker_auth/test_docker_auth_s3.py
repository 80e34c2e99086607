"""The docker_auth lane on object storage: an S3 ImageRegistry, its generated push/pull Secrets and
the real registry + docker_auth + authn sidecar (exactly as the operator rendered them) against a
real S3-compatible server on loopback (moto, enforcing signatures). Run: `make e2e-docker-auth`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml

from e2e.api.kube import apply
from e2e.controllers.imageregistry_support import wait_condition
from e2e.controllers.test_imageregistry_storage import (
    container_env,
    create_credentials,
    registry_container,
    s3_registry,
)
from e2e.docker_auth.stack import Stack
from e2e.docker_auth.test_docker_auth_lane import Client_, app_secrets, credentials
from e2e.support.operator import OperatorProcess
from e2e.support.s3 import MotoS3
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.client import Client

NAME = "lane-s3"


def test_push_and_pull_secrets_work_on_s3_storage(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    start_operator: Callable[..., OperatorProcess],
    docker_auth_bin: Path,
    tmp_path: Path,
) -> None:
    start_operator(controllers="caroot,imageregistry,imagesecret,imageregistryaccount")
    with MotoS3(tmp_path / "moto") as s3:
        create_credentials(api, namespace, s3)
        apply(cluster, namespace, yaml.safe_dump(s3_registry(NAME, s3)))
        registry = wait_condition(api, namespace, NAME, status="True", reason="Available", timeout=90)
        push, pull = app_secrets(api, namespace, NAME)
        stack = Stack(
            cluster, api, namespace, NAME, registry["status"]["hostname"], tmp_path / "stack", docker_auth_bin
        )
        stack.ca_pem = push["ca.crt"]
        # The registry container's env as kubelet would set it: the S3 keys from the user's Secret.
        env = container_env(api, namespace, registry_container(api, namespace, NAME))
        stack.registry_env = {
            key: value for key, value in env.items() if key.startswith("REGISTRY_STORAGE_S3_")
        }
        assert set(stack.registry_env) == {"REGISTRY_STORAGE_S3_ACCESSKEY", "REGISTRY_STORAGE_S3_SECRETKEY"}
        stack.start()
        try:
            client = Client_(stack, tmp_path / "client")
            repo = f"{namespace}/app"
            pushed = client.push(credentials(push), repo)
            assert pushed.returncode == 0, pushed.stderr + stack.log("registry")[-3000:]
            pulled = client.pull(credentials(pull), repo)
            assert pulled.returncode == 0, pulled.stderr
            assert json.loads(pulled.stdout)["Name"] == f"{stack.hostname}/{repo}"
            denied = client.push(credentials(pull), f"{namespace}/other")
            assert denied.returncode != 0
            assert any(f"repositories/{repo}/_manifests/tags/v1/" in key for key in s3.keys("registry/"))
            print("case push/pull with the generated secrets on S3 storage: ok")
        finally:
            stack.stop()
