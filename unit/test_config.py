"""Operator settings from the environment: defaults, derivations and one-line errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from registry_operator import __version__
from registry_operator.config import (
    DEFAULT_IMAGE_AUTH,
    DEFAULT_IMAGE_REDIS,
    DEFAULT_IMAGE_REGISTRY,
    ConfigError,
    Settings,
    load_settings,
)


def load(env: dict[str, str], tmp_path: Path, namespace_file_content: str | None = None) -> Settings:
    namespace_file = tmp_path / "namespace"
    if namespace_file_content is not None:
        namespace_file.write_text(namespace_file_content, encoding="utf-8")
    return load_settings(env, namespace_file=namespace_file)


def test_defaults(tmp_path: Path) -> None:
    settings = load({"POD_NAMESPACE": "operators", "POD_NAME": "operator-0"}, tmp_path)
    assert settings.watch_namespace == ""
    assert settings.watches_all_namespaces
    assert settings.operator_namespace == "operators"
    assert settings.pod_name == "operator-0"
    assert settings.dns_zone == "svc.cluster.local"
    assert settings.secret_ttl == timedelta(hours=24)
    assert settings.rotation_interval == timedelta(hours=12)
    assert settings.secret_ttl_text == "24h0m0s"  # as the original wrote accounts' spec.ttl
    assert settings.default_registry_name == "registry"
    assert settings.default_registry_namespace == "operators"
    assert settings.image_registry == DEFAULT_IMAGE_REGISTRY == "docker.io/library/registry:3.1.2"
    assert settings.image_auth == DEFAULT_IMAGE_AUTH == "docker.io/cesanta/docker_auth:1.14.0"
    assert settings.image_redis == DEFAULT_IMAGE_REDIS
    assert settings.image_operator.endswith(f":{__version__}")
    assert settings.metrics_bind_address == ":8080"
    assert settings.health_probe_bind_address == ":8081"
    assert settings.leader_election is True
    assert settings.leader_election_lease_name == "image-registry-operator-lock"


def test_explicit_values(tmp_path: Path) -> None:
    settings = load(
        {
            "WATCH_NAMESPACE": "team-a",
            "POD_NAMESPACE": "operators",
            "OPERATOR_DNS_ZONE": "svc.example.org",
            "OPERATOR_SECRET_TTL": "12h30m",
            "OPERATOR_DEFAULT_REGISTRY_NAME": "main",
            "OPERATOR_DEFAULT_REGISTRY_NAMESPACE": "infra",
            "OPERATOR_IMAGE_REGISTRY": "registry.local/registry:3",
            "OPERATOR_METRICS_BIND_ADDRESS": "0",
            "OPERATOR_HEALTH_PROBE_BIND_ADDRESS": "127.0.0.1:9000",
            "OPERATOR_LEADER_ELECTION": "false",
        },
        tmp_path,
    )
    assert settings.watch_namespace == "team-a" and not settings.watches_all_namespaces
    assert settings.dns_zone == "svc.example.org"
    assert settings.secret_ttl == timedelta(hours=12, minutes=30)
    assert settings.rotation_interval == timedelta(hours=6, minutes=15)
    assert settings.secret_ttl_text == "12h30m0s"
    assert (settings.default_registry_name, settings.default_registry_namespace) == ("main", "infra")
    assert settings.image_registry == "registry.local/registry:3"
    assert settings.metrics_bind_address is None  # "0" disables metrics
    assert settings.health_probe_bind_address == "127.0.0.1:9000"
    assert settings.leader_election is False


def test_empty_values_mean_the_default(tmp_path: Path) -> None:
    settings = load({"POD_NAMESPACE": "ops", "OPERATOR_DNS_ZONE": "", "OPERATOR_SECRET_TTL": ""}, tmp_path)
    assert settings.dns_zone == "svc.cluster.local"
    assert settings.secret_ttl == timedelta(hours=24)


def test_operator_namespace_sources_in_order(tmp_path: Path) -> None:
    assert load({"POD_NAMESPACE": "from-env"}, tmp_path, "from-file").operator_namespace == "from-env"
    assert load({}, tmp_path, "from-file\n").operator_namespace == "from-file"
    assert load({"WATCH_NAMESPACE": "watched"}, tmp_path / "x").operator_namespace == "watched"


def test_missing_operator_namespace_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot determine the operator namespace: set POD_NAMESPACE"):
        load({}, tmp_path)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("OPERATOR_SECRET_TTL", "banana", "a Go duration of at least 1s"),
        ("OPERATOR_SECRET_TTL", "0s", "a Go duration of at least 1s"),
        ("OPERATOR_SECRET_TTL", "-1h", "a Go duration of at least 1s"),
        ("OPERATOR_SECRET_TTL", "500ms", "a Go duration of at least 1s"),
        ("OPERATOR_SECRET_TTL", "24", "a Go duration of at least 1s"),
        ("OPERATOR_DNS_ZONE", "Svc.Example", "a DNS domain"),
        ("OPERATOR_DNS_ZONE", "example.org.", "a DNS domain"),
        ("OPERATOR_DNS_ZONE", ".".join(["a" * 60] * 3), "at most 139 characters"),
        ("WATCH_NAMESPACE", "Team_A", "or empty for all namespaces"),
        ("POD_NAMESPACE", "a.b", "a namespace name"),
        ("OPERATOR_DEFAULT_REGISTRY_NAME", "1registry", "an ImageRegistry name"),
        ("OPERATOR_DEFAULT_REGISTRY_NAMESPACE", "-x", "a namespace name"),
        ("OPERATOR_IMAGE_AUTH", "docker_auth latest", "a container image reference"),
        ("OPERATOR_METRICS_BIND_ADDRESS", "8080", "[host]:port"),
        ("OPERATOR_HEALTH_PROBE_BIND_ADDRESS", ":99999", "[host]:port"),
        ("OPERATOR_LEADER_ELECTION", "maybe", "true or false"),
        ("OPERATOR_LEADER_ELECTION_LEASE_NAME", "Lock", "a Lease name"),
    ],
)
def test_invalid_value_is_a_one_line_error_naming_the_variable(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    env = {"POD_NAMESPACE": "operators", variable: value}
    with pytest.raises(ConfigError) as error:
        load(env, tmp_path)
    message = str(error.value)
    assert "\n" not in message
    shown = repr(value) if len(value) <= 80 else repr(value[:77] + "...")
    assert message.startswith(f"invalid {variable}={shown}: expected ")
    assert expected in message


def test_error_shows_a_hostile_value_on_one_short_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load({"POD_NAMESPACE": "ops", "OPERATOR_SECRET_TTL": "1h\n" + "x" * 500}, tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert len(message) < 200
