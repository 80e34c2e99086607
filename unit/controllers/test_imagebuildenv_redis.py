"""The redis cache's desired objects: locked down, selected by the Service, rolled on a new password."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from registry_operator.controllers.imagebuildenv_redis import (
    config_hash,
    deployment_available,
    desired_redis_deployment,
    desired_redis_secret,
    desired_redis_service,
    keepable_password,
    redis_address,
    redis_config,
)

ENV: dict[str, Any] = {
    "apiVersion": "registry.mgoltzsche.github.com/v1alpha1",
    "kind": "ImageBuildEnv",
    "metadata": {"name": "example", "namespace": "team", "uid": "env-uid"},
}
IMAGE = "docker.io/library/redis:7.4.2-alpine"


def test_secret_holds_the_password_and_a_config_requiring_it() -> None:
    secret = desired_redis_secret(ENV, "Secret123Secret123")
    assert secret["metadata"]["name"] == "imagebuildenv-example-redis-conf"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "env-uid"
    assert secret["metadata"]["ownerReferences"][0]["controller"] is True
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert data["redis_password"] == "Secret123Secret123"
    assert 'requirepass "Secret123Secret123"\n' in data["redis.conf"]
    assert "maxmemory-policy allkeys-lru" in data["redis.conf"]


def test_deployment_runs_the_configured_image_locked_down_with_tcp_probes() -> None:
    deployment = desired_redis_deployment(ENV, IMAGE, "pw-one-pw-one-pw-one")
    assert deployment["metadata"]["name"] == "imagebuildenv-example-redis"
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "env-uid"
    spec = deployment["spec"]
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["args"] == ["redis-server", "/conf/redis.conf"]
    assert container["readinessProbe"]["tcpSocket"] == {"port": "redis"}
    assert container["livenessProbe"]["tcpSocket"] == {"port": "redis"}
    assert container["ports"] == [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}]
    assert container["resources"]["limits"]["memory"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["config"]["secret"]["secretName"] == "imagebuildenv-example-redis-conf"


def test_service_selects_exactly_the_deployments_pods() -> None:
    deployment = desired_redis_deployment(ENV, IMAGE, "pw-one-pw-one-pw-one")
    service = desired_redis_service(ENV)
    assert service["metadata"]["name"] == "imagebuildenv-example-redis"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    # The original's bare Pod had only the `app` label: it must not receive traffic.
    assert set(service["spec"]["selector"]) > {"app"}
    assert service["spec"]["ports"] == [
        {"name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP"}
    ]
    assert redis_address("example") == "imagebuildenv-example-redis:6379"


def test_a_new_password_rolls_the_pod_without_revealing_it() -> None:
    def annotation(password: str) -> str:
        template = desired_redis_deployment(ENV, IMAGE, password)["spec"]["template"]
        value: str = template["metadata"]["annotations"]["registry.mgoltzsche.github.com/config-hash"]
        return value

    assert annotation("pw-one-pw-one-pw-one") == annotation("pw-one-pw-one-pw-one")
    assert annotation("pw-one-pw-one-pw-one") != annotation("pw-two-pw-two-pw-two")
    assert "pw-one" not in annotation("pw-one-pw-one-pw-one")
    assert len(config_hash(redis_config("x" * 32))) == 16


@pytest.mark.parametrize(
    ("stored", "kept"),
    [
        (b"abcDEF0123456789abcDEF0123456789", True),  # this operator's alphabet
        (b"0=abc.def+ghi-jk/[]{}@?", True),  # the original's alphabet
        (b"short", False),
        (b'has"quote"and-more-chars', False),
        (b"has space and more chars", False),
        (b"\xff\xfe" * 10, False),
        (None, False),
        (b"", False),
    ],
)
def test_only_passwords_safe_in_redis_conf_are_kept(stored: bytes | None, kept: bool) -> None:
    assert (keepable_password(stored) is not None) is kept


def available(
    generation: int = 2, observed: int = 2, updated: int = 1, ready: str = "True"
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": observed,
            "updatedReplicas": updated,
            "availableReplicas": 1,
            "conditions": [{"type": "Available", "status": ready}],
        },
    }


def test_deployment_is_available_only_when_its_current_spec_runs() -> None:
    assert deployment_available(available())
    assert not deployment_available(None)
    assert not deployment_available({"metadata": {"generation": 1}, "spec": {"replicas": 1}})
    assert not deployment_available(available(observed=1))  # controller has not seen the new spec
    assert not deployment_available(available(updated=0))  # the old revision still runs
    assert not deployment_available(available(ready="False"))
