"""The API types parse what the apiserver returns and write back exactly that (camelCase, unknown
fields kept), with the same defaults as the CRD schema."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from registry_operator.api import (
    API_VERSION,
    ImageBuildEnv,
    ImagePullSecret,
    ImagePushSecret,
    ImageRegistry,
    ImageRegistryAccount,
    ImageRegistrySpec,
    ObjectMeta,
    RegistryRef,
    parse_resource,
)

SEED_DIR = Path(__file__).resolve().parents[2] / "e2e" / "testdata" / "seed"
BCRYPT_HASH = "$2y$05$" + "a" * 53


def seed(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((SEED_DIR / name).read_text(encoding="utf-8"))
    return loaded


def api_object(kind: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object as the apiserver returns it, including fields the models do not declare."""
    obj = {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {
            "name": "example",
            "namespace": "team-a",
            "uid": "5f0c8b8e-0000-4000-8000-000000000001",
            "resourceVersion": "4711",
            "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": "x"},
            "annotations": {"registry.mgoltzsche.github.com/rotate": "1"},
            "finalizers": ["registry.mgoltzsche.github.com/accounts"],
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1"}],
        },
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


def test_seed_registry_gets_the_schema_defaults() -> None:
    registry = ImageRegistry.model_validate(seed("imageregistry.yaml"))
    assert registry.spec.replicas == 1
    assert registry.spec.service.type == "LoadBalancer"
    assert registry.spec.tls.secret_name is None and registry.spec.tls.issuer_ref is None
    pvc = registry.spec.persistent_volume_claim
    assert pvc is not None and not registry.spec.uses_s3  # the seed's top-level claim: PVC storage
    assert pvc.storage_class_name == "standard"
    assert pvc.access_modes == ["ReadWriteOnce"]
    assert pvc.resources.requests.storage == "1Gi"
    assert pvc.delete_claim is False
    assert registry.spec.auth is None


def test_registry_access_modes_default_to_read_write_many() -> None:
    spec = ImageRegistrySpec.model_validate(
        {"persistentVolumeClaim": {"resources": {"requests": {"storage": 1}}}}
    )
    assert spec.persistent_volume_claim is not None
    assert spec.persistent_volume_claim.access_modes == ["ReadWriteMany"]
    assert spec.persistent_volume_claim.resources.requests.storage == 1  # int quantities stay ints


def test_seed_secrets_and_build_env_parse() -> None:
    push = ImagePushSecret.model_validate(seed("imagepushsecret.yaml"))
    pull = ImagePullSecret.model_validate(seed("imagepullsecret.yaml"))
    env = ImageBuildEnv.model_validate(seed("imagebuildenv.yaml"))
    assert push.spec.registry_ref == RegistryRef(name="registry")
    assert push.spec.registry_ref is not None and push.spec.registry_ref.namespace is None
    assert pull.spec.registry_ref == RegistryRef(name="registry")
    assert env.spec.redis is True
    assert [s.secret_name for s in env.spec.secrets] == ["imagepushsecret-example"]
    assert push.secret_name() == "imagepushsecret-example"
    assert pull.secret_name() == "imagepullsecret-example"
    assert push.status.rotation == 0


@pytest.mark.parametrize(
    ("model", "wire"),
    [
        (
            ImageRegistry,
            api_object(
                "ImageRegistry",
                {
                    "replicas": 2,
                    "persistentVolumeClaim": {
                        "accessModes": ["ReadWriteMany"],
                        "resources": {"requests": {"storage": "8Gi"}, "limits": {"storage": "10Gi"}},
                        "deleteClaim": True,
                        "futureField": {"x": 1},
                    },
                    "tls": {
                        "secretName": "registry-tls",
                        "issuerRef": {"name": "ca", "kind": "ClusterIssuer"},
                    },
                    "service": {"type": "NodePort"},
                    "auth": {
                        "acl": [
                            {
                                "match": {"labels": {"accessMode": "push"}, "name": "${labels:namespace}/*"},
                                "actions": ["push", "pull"],
                                "comment": "push accounts",
                            },
                            {"match": {}, "actions": []},
                        ]
                    },
                },
                {
                    "observedGeneration": 3,
                    "hostname": "example.team-a.svc.cluster.local",
                    "tlsSecretName": "registry-tls",
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "Available",
                            "message": "",
                            "lastTransitionTime": "2026-01-01T00:01:00Z",
                            "observedGeneration": 3,
                        }
                    ],
                    "futureStatus": "kept",
                },
            ),
        ),
        (
            ImageRegistryAccount,
            api_object(
                "ImageRegistryAccount",
                {"password": BCRYPT_HASH, "ttl": "24h0m0s", "labels": {"namespace": ["team-a"]}},
            ),
        ),
        (
            ImagePushSecret,
            api_object(
                "ImagePushSecret",
                {"registryRef": {"name": "registry", "namespace": "infra"}},
                {
                    "rotation": 3,
                    "rotationDate": "2026-01-01T10:00:00Z",
                    "currentExpiryTime": "2026-01-02T10:00:00Z",
                    "previousExpiryTime": "2026-01-01T22:00:00Z",
                    "registry": {
                        "name": "registry",
                        "namespace": "infra",
                        "hostname": "registry.infra.example",
                    },
                    "rotateRequest": "1",
                    "observedGeneration": 3,
                },
            ),
        ),
        (ImagePullSecret, api_object("ImagePullSecret", {}, {"rotation": 1})),
        (
            ImageBuildEnv,
            api_object(
                "ImageBuildEnv",
                {"redis": False, "secrets": [{"secretName": "a"}, {"secretName": "b"}]},
                {"secretRefs": ["a", "b"]},
            ),
        ),
    ],
)
def test_round_trip_keeps_the_wire_format_and_unknown_fields(model: type[Any], wire: dict[str, Any]) -> None:
    parsed = model.model_validate(copy.deepcopy(wire))
    assert parsed.to_dict() == wire
    assert type(parse_resource(wire)) is model


def test_camel_case_and_snake_case_are_both_accepted() -> None:
    by_alias = RegistryRef.model_validate({"name": "registry"})
    spec = ImageRegistrySpec.model_validate(
        {"persistent_volume_claim": {"resources": {"requests": {"storage": "1Gi"}}}, "replicas": 0}
    )
    assert by_alias.name == "registry"
    assert spec.to_dict()["persistentVolumeClaim"]["resources"] == {"requests": {"storage": "1Gi"}}


def test_new_object_serialises_only_what_was_set() -> None:
    push = ImagePushSecret(metadata=ObjectMeta(name="example", namespace="team-a"))
    assert push.to_dict() == {
        "apiVersion": API_VERSION,
        "kind": "ImagePushSecret",
        "metadata": {"name": "example", "namespace": "team-a"},
        "spec": {},
    }


def test_times_are_rfc3339_utc_whole_seconds() -> None:
    push = ImagePushSecret(metadata=ObjectMeta(name="example"))
    push.status.rotation_date = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert push.status.rotation_date == datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert push.to_dict()["status"]["rotationDate"] == "2026-05-06T07:08:09Z"


def test_account_expiry() -> None:
    account = ImageRegistryAccount.model_validate(
        api_object("ImageRegistryAccount", {"password": BCRYPT_HASH, "ttl": "12h"}, {})
    )
    created = datetime(2026, 1, 1, tzinfo=UTC)
    assert account.expiry_time() == created + timedelta(hours=12)
    assert not account.is_expired(created + timedelta(hours=12))
    assert account.is_expired(created + timedelta(hours=12, seconds=1))
    static = ImageRegistryAccount.model_validate(
        api_object("ImageRegistryAccount", {"password": BCRYPT_HASH}, {})
    )
    assert static.expiry_time() is None
    assert not static.is_expired(created + timedelta(days=10_000))


def test_image_secret_account_names() -> None:
    pull = ImagePullSecret.model_validate(api_object("ImagePullSecret", {}, {}))
    assert pull.account_name(4) == "pull.team-a.example.4"


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (
            ImageRegistrySpec,
            {"replicas": -1, "persistentVolumeClaim": {"resources": {"requests": {"storage": "1"}}}},
        ),
        (ImageRegistrySpec, {"persistentVolumeClaim": {"resources": {"requests": {"storage": "1 GB"}}}}),
        (ImageRegistrySpec, {"persistentVolumeClaim": {"accessModes": ["ReadOnlyMany"], "resources": {}}}),
        (ImageRegistrySpec, {"service": {"type": "ExternalName"}, "persistentVolumeClaim": {}}),
        (RegistryRef, {"name": "r" * 50}),
        (RegistryRef, {"name": "Registry"}),
        (RegistryRef, {}),
    ],
)
def test_python_enforces_the_schema_constraints(model: type[Any], data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(data)


def test_wrong_kind_or_api_version_is_rejected() -> None:
    with pytest.raises(ValidationError):
        ImagePushSecret.model_validate(api_object("ImagePullSecret", {}, {}))
    with pytest.raises(ValueError, match=r"not a registry\.mgoltzsche\.github\.com/v1alpha1 custom resource"):
        parse_resource({"apiVersion": "v1", "kind": "Secret"})
