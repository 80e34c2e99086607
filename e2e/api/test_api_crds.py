"""The CRDs on a real apiserver: the seed's examples apply unchanged and are defaulted as the seed
says; invalid objects are refused naming the field; printer columns, status subresource and
`kubectl wait --for=condition=Ready` work for every kind; the Python types read what the API returns."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.api.kube import apply, exists, get, patch_status, ready_condition
from registry_operator.api import API_VERSION, parse_resource
from registry_operator.devenv.cluster import LocalCluster

SEED_DIR = Path(__file__).resolve().parents[1] / "testdata" / "seed"
BCRYPT_HASH = "$2y$05$" + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"
# The fast salted hash the operator stores for generated passwords (passwords.hash_generated_password).
GENERATED_HASH = "sha256-salted-v1$" + "0123456789abcdef" * 2 + "$" + "0123456789abcdef" * 4
VOLUME: dict[str, Any] = {"resources": {"requests": {"storage": "1Gi"}}}


def manifest(kind: str, name: str, spec: dict[str, Any] | None = None) -> str:
    obj: dict[str, Any] = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}}
    if spec is not None:
        obj["spec"] = spec
    return yaml.safe_dump(obj)


def registry(name: str = "registry", **spec: Any) -> str:
    return manifest("ImageRegistry", name, {"persistentVolumeClaim": VOLUME, **spec})


# One valid object of every kind: (resource, short name, name, manifest).
VALID_OBJECTS: list[tuple[str, str, str, str]] = [
    ("imageregistry", "imgreg", "registry", registry()),
    (
        "imageregistryaccount",
        "imgacct",
        "push.team.app.1",
        manifest(
            "ImageRegistryAccount",
            "push.team.app.1",
            {"password": BCRYPT_HASH, "ttl": "24h0m0s", "labels": {"accessMode": ["push"]}},
        ),
    ),
    ("imagepushsecret", "imgpush", "app", manifest("ImagePushSecret", "app")),
    ("imagepullsecret", "imgpull", "app", manifest("ImagePullSecret", "app")),
    ("imagebuildenv", "imgbuild", "app", manifest("ImageBuildEnv", "app", {"redis": True})),
]


def seed_file(name: str) -> str:
    return (SEED_DIR / name).read_text(encoding="utf-8")


def test_seed_examples_apply_unchanged_and_get_the_seeds_defaults(
    cluster: LocalCluster, namespace: str
) -> None:
    for path in sorted(SEED_DIR.glob("*.yaml")):
        apply(cluster, namespace, path.read_text(encoding="utf-8"))

    registry = get(cluster, namespace, "imageregistry", "registry")["spec"]
    assert registry == {
        "replicas": 1,
        "tls": {},  # no secret, no issuer: the operator's self-signed CA
        "service": {"type": "LoadBalancer"},
        "persistentVolumeClaim": {
            "storageClassName": "standard",
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "deleteClaim": False,
        },
    }
    # registryRef.namespace stays empty: the operator resolves it to the CR's own namespace.
    assert get(cluster, namespace, "imagepushsecret", "example")["spec"] == {
        "registryRef": {"name": "registry"}
    }
    assert get(cluster, namespace, "imagepullsecret", "example")["spec"] == {
        "registryRef": {"name": "registry"}
    }
    assert get(cluster, namespace, "imagebuildenv", "example")["spec"] == {
        "redis": True,
        "secrets": [{"secretName": "imagepushsecret-example"}],
    }


def test_schema_defaults_fill_in_omitted_parts(cluster: LocalCluster, namespace: str) -> None:
    apply(cluster, namespace, VALID_OBJECTS[0][3])
    apply(cluster, namespace, manifest("ImagePushSecret", "default-registry"))
    registry = get(cluster, namespace, "imageregistry", "registry")["spec"]
    assert registry["persistentVolumeClaim"]["accessModes"] == [
        "ReadWriteMany"
    ]  # the seed: "which is the default"
    assert registry["service"] == {"type": "LoadBalancer"}
    # No spec and no registryRef: the operator's default registry is used.
    assert get(cluster, namespace, "imagepushsecret", "default-registry")["spec"] == {}


def test_python_types_read_and_write_back_what_the_api_returns(cluster: LocalCluster, namespace: str) -> None:
    for path in sorted(SEED_DIR.glob("*.yaml")):
        apply(cluster, namespace, path.read_text(encoding="utf-8"))
    patch_status(
        cluster, namespace, "imagepushsecret", "example",
        {"rotation": 2, "rotationDate": "2026-01-01T00:00:00Z", "registry": {"namespace": namespace},
         "observedGeneration": 1, "conditions": [ready_condition("True", "Available")]},
    )  # fmt: skip
    for resource, name in [
        ("imageregistry", "registry"),
        ("imagepushsecret", "example"),
        ("imagepullsecret", "example"),
        ("imagebuildenv", "example"),
    ]:
        obj = get(cluster, namespace, resource, name)
        # Equal also means the Python defaults are the schema defaults (both come from the models).
        assert parse_resource(obj).to_dict() == obj, resource


# (test id, kind, name, spec, the field the error must name)
INVALID_OBJECTS: list[tuple[str, str, str, dict[str, Any] | None, str]] = [
    (
        "registryRef-without-name",
        "ImagePushSecret",
        "bad",
        {"registryRef": {"namespace": "infra"}},
        "spec.registryRef.name",
    ),
    (
        "registryRef-bad-namespace",
        "ImagePullSecret",
        "bad",
        {"registryRef": {"name": "registry", "namespace": "Infra"}},
        "spec.registryRef.namespace",
    ),
    ("bad-ttl", "ImageRegistryAccount", "bad", {"password": BCRYPT_HASH, "ttl": "banana"}, "spec.ttl"),
    ("ttl-in-days", "ImageRegistryAccount", "bad", {"password": BCRYPT_HASH, "ttl": "1d"}, "spec.ttl"),
    # Matches the pattern but is past Go's Duration range: refused by the CEL rule.
    (
        "ttl-out-of-range",
        "ImageRegistryAccount",
        "bad",
        {"password": BCRYPT_HASH, "ttl": "2600000h"},
        "spec.ttl",
    ),
    ("plain-text-password", "ImageRegistryAccount", "bad", {"password": "pw123"}, "spec.password"),
    ("missing-password", "ImageRegistryAccount", "bad", {"ttl": "1h"}, "spec.password"),
    (
        "unknown-hash-scheme",
        "ImageRegistryAccount",
        "bad",
        {"password": GENERATED_HASH.replace("-v1$", "-v2$")},
        "spec.password",
    ),
    (
        "unknown-service-type",
        "ImageRegistry",
        "bad",
        {"persistentVolumeClaim": VOLUME, "service": {"type": "ExternalName"}},
        "spec.service.type",
    ),
    (
        "unknown-access-mode",
        "ImageRegistry",
        "bad",
        {"persistentVolumeClaim": {**VOLUME, "accessModes": ["ReadOnlyMany"]}},
        "spec.persistentVolumeClaim.accessModes",
    ),
    (
        "negative-replicas",
        "ImageRegistry",
        "bad",
        {"persistentVolumeClaim": VOLUME, "replicas": -1},
        "spec.replicas",
    ),
    (
        "replicas-of-wrong-type",
        "ImageRegistry",
        "bad",
        {"persistentVolumeClaim": VOLUME, "replicas": "two"},
        "spec.replicas",
    ),
    (
        "two-replicas-on-read-write-once",
        "ImageRegistry",
        "bad",
        {"replicas": 2, "persistentVolumeClaim": {**VOLUME, "accessModes": ["ReadWriteOnce"]}},
        "spec.replicas",
    ),
    (
        "bad-storage-quantity",
        "ImageRegistry",
        "bad",
        {"persistentVolumeClaim": {"resources": {"requests": {"storage": "1 GB"}}}},
        "spec.persistentVolumeClaim.resources.requests.storage",
    ),
    (
        "negative-storage-quantity",
        "ImageRegistry",
        "bad",
        {"persistentVolumeClaim": {"resources": {"requests": {"storage": "-1Gi"}}}},
        "spec.persistentVolumeClaim.resources.requests.storage",
    ),
    (
        "missing-storage-request",
        "ImageRegistry",
        "bad",
        {"persistentVolumeClaim": {"resources": {"requests": {}}}},
        "spec.persistentVolumeClaim.resources.requests.storage",
    ),
    ("missing-volume", "ImageRegistry", "bad", {"replicas": 1}, "spec.persistentVolumeClaim"),
    (
        "s3-and-a-volume",
        "ImageRegistry",
        "bad",
        {"persistentVolumeClaim": VOLUME, "storage": {"type": "S3", "s3": {"bucket": "images"}}},
        "spec.persistentVolumeClaim",
    ),
    ("s3-without-bucket", "ImageRegistry", "bad", {"storage": {"type": "S3"}}, "spec.storage.s3"),
    (
        "s3-bucket-not-a-bucket-name",
        "ImageRegistry",
        "bad",
        {"storage": {"type": "S3", "s3": {"bucket": "Images_1"}}},
        "spec.storage.s3.bucket",
    ),
    (
        "s3-endpoint-not-a-url",
        "ImageRegistry",
        "bad",
        {"storage": {"type": "S3", "s3": {"bucket": "images", "regionEndpoint": "minio:9000"}}},
        "spec.storage.s3.regionEndpoint",
    ),
    (
        "gc-schedule-not-cron",
        "ImageRegistry",
        "bad",
        {"persistentVolumeClaim": VOLUME, "garbageCollection": {"schedule": "every sunday"}},
        "spec.garbageCollection.schedule",
    ),
    (
        "gc-on-a-read-write-once-pod-volume",
        "ImageRegistry",
        "bad",
        {
            "persistentVolumeClaim": {**VOLUME, "accessModes": ["ReadWriteOncePod"]},
            "garbageCollection": {"schedule": "@daily"},
        },
        "spec.garbageCollection",
    ),
    (
        "cert-manager-issuer-of-unknown-kind",
        "ImageRegistry",
        "bad",
        {"persistentVolumeClaim": VOLUME, "tls": {"issuerRef": {"name": "ca", "kind": "Foo"}}},
        "spec.tls.issuerRef.kind",
    ),
    (
        "issuer-without-name",
        "ImageRegistry",
        "bad",
        {"persistentVolumeClaim": VOLUME, "tls": {"issuerRef": {"kind": "Issuer"}}},
        "spec.tls.issuerRef.name",
    ),
    (
        "unknown-acl-action",
        "ImageRegistry",
        "bad",
        {"persistentVolumeClaim": VOLUME, "auth": {"acl": [{"match": {}, "actions": ["fly"]}]}},
        "spec.auth.acl[0].actions[0]",
    ),
    (
        "acl-entry-without-actions",
        "ImageRegistry",
        "bad",
        {"persistentVolumeClaim": VOLUME, "auth": {"acl": [{"match": {"account": "x"}}]}},
        "spec.auth.acl[0].actions",
    ),
    ("registry-name-too-long", "ImageRegistry", "r" * 50, {"persistentVolumeClaim": VOLUME}, "metadata.name"),
    (
        "registry-name-not-dns-1035",
        "ImageRegistry",
        "1registry",
        {"persistentVolumeClaim": VOLUME},
        "metadata.name",
    ),
    # Dots are fine (issue 11: the original accepted my.app.pull); upper case and '_' are not.
    ("pull-secret-name-not-a-subdomain", "ImagePullSecret", "My_Secret", None, "metadata.name"),
    ("build-env-name-too-long", "ImageBuildEnv", "b" * 44, None, "metadata.name"),
    ("build-env-redis-of-wrong-type", "ImageBuildEnv", "bad", {"redis": "yes please"}, "spec.redis"),
    (
        "build-env-duplicate-input",
        "ImageBuildEnv",
        "bad",
        {"secrets": [{"secretName": "a"}, {"secretName": "a"}]},
        "spec.secrets",
    ),
    ("build-env-input-without-name", "ImageBuildEnv", "bad", {"secrets": [{}]}, "spec.secrets"),
    ("unknown-field", "ImagePullSecret", "bad", {"registry": "foo"}, "spec.registry"),
]


@pytest.mark.parametrize(
    ("kind", "name", "spec", "field"), [c[1:] for c in INVALID_OBJECTS], ids=[c[0] for c in INVALID_OBJECTS]
)
def test_invalid_objects_are_refused_naming_the_field(
    cluster: LocalCluster, namespace: str, kind: str, name: str, spec: dict[str, Any] | None, field: str
) -> None:
    result = apply(cluster, namespace, manifest(kind, name, spec), check=False)
    assert result.returncode != 0, result.stdout
    assert field in result.stderr, result.stderr
    assert not exists(cluster, namespace, kind.lower(), name)


def test_accounts_take_both_password_hash_schemes(cluster: LocalCluster, namespace: str) -> None:
    for name, password in (("by-hand", BCRYPT_HASH), ("pull.team.app.1", GENERATED_HASH)):
        apply(cluster, namespace, manifest("ImageRegistryAccount", name, {"password": password}))
        assert get(cluster, namespace, "imageregistryaccount", name)["spec"]["password"] == password


def test_immutable_volume_fields_and_allowed_resize(cluster: LocalCluster, namespace: str) -> None:
    apply(cluster, namespace, seed_file("imageregistry.yaml"))

    def patch(body: str) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl(
            "patch", "-n", namespace, "imageregistry", "registry", "--type=merge", "-p", body, check=False
        )

    changed_class = patch('{"spec":{"persistentVolumeClaim":{"storageClassName":"fast"}}}')
    assert changed_class.returncode != 0
    assert "spec.persistentVolumeClaim.storageClassName" in changed_class.stderr
    assert "immutable" in changed_class.stderr
    dropped_class = patch('{"spec":{"persistentVolumeClaim":{"storageClassName":null}}}')
    assert "spec.persistentVolumeClaim.storageClassName" in dropped_class.stderr
    changed_modes = patch('{"spec":{"persistentVolumeClaim":{"accessModes":["ReadWriteMany"]}}}')
    assert "spec.persistentVolumeClaim.accessModes" in changed_modes.stderr
    scaled_up = patch('{"spec":{"replicas":3}}')
    assert "spec.replicas" in scaled_up.stderr and "ReadWriteMany" in scaled_up.stderr
    # Growing the volume is fine (PVC expansion), as is scaling to zero.
    assert (
        patch(
            '{"spec":{"replicas":0,"persistentVolumeClaim":{"resources":{"requests":{"storage":"2Gi"}}}}}'
        ).returncode
        == 0
    )
    spec = get(cluster, namespace, "imageregistry", "registry")["spec"]
    assert spec["replicas"] == 0
    assert spec["persistentVolumeClaim"]["resources"]["requests"]["storage"] == "2Gi"


def test_status_is_a_subresource(cluster: LocalCluster, namespace: str) -> None:
    apply(cluster, namespace, VALID_OBJECTS[2][3])
    # Writing status through the main resource is ignored...
    cluster.kubectl(
        "patch", "-n", namespace, "imagepushsecret", "app", "--type=merge", "-p", '{"status":{"rotation":5}}'
    )
    assert "status" not in get(cluster, namespace, "imagepushsecret", "app")
    # ...and through the subresource it does not bump the generation.
    patch_status(cluster, namespace, "imagepushsecret", "app", {"rotation": 5})
    obj = get(cluster, namespace, "imagepushsecret", "app")
    assert obj["status"] == {"rotation": 5}
    assert obj["metadata"]["generation"] == 1


STATUS_BY_RESOURCE: dict[str, dict[str, Any]] = {
    "imageregistry": {
        "hostname": "registry.ns.svc.cluster.local",
        "tlsSecretName": "imageregistry-registry-selfsigned-tls",
    },
    "imageregistryaccount": {},
    "imagepushsecret": {"rotation": 3, "registry": {"hostname": "registry.infra.svc.cluster.local"}},
    "imagepullsecret": {"rotation": 7, "registry": {"hostname": "registry.infra.svc.cluster.local"}},
    "imagebuildenv": {"secretRefs": []},
}
EXPECTED_COLUMNS: dict[str, list[str]] = {
    "imageregistry": ["NAME", "READY", "REASON", "HOSTNAME", "AGE"],
    "imageregistryaccount": ["NAME", "READY", "REASON", "TTL", "AGE"],
    "imagepushsecret": ["NAME", "READY", "REASON", "REGISTRY", "ROTATION", "ROTATED", "AGE"],
    "imagepullsecret": ["NAME", "READY", "REASON", "REGISTRY", "ROTATION", "ROTATED", "AGE"],
    "imagebuildenv": ["NAME", "READY", "REASON", "REDIS", "AGE"],
}


@pytest.mark.parametrize(
    ("resource", "short_name", "name", "manifest"), VALID_OBJECTS, ids=[o[0] for o in VALID_OBJECTS]
)
def test_printer_columns_show_readiness(
    cluster: LocalCluster, namespace: str, resource: str, short_name: str, name: str, manifest: str
) -> None:
    apply(cluster, namespace, manifest)
    status = {
        **STATUS_BY_RESOURCE[resource],
        "rotationDate": "2026-01-01T00:00:00Z",
        "conditions": [ready_condition("False", "RegistryUnavailable", "registry is not ready")],
    }
    if resource not in ("imagepushsecret", "imagepullsecret"):
        del status["rotationDate"]
    patch_status(cluster, namespace, resource, name, status)
    lines = cluster.kubectl("get", "-n", namespace, short_name).stdout.splitlines()
    assert lines[0].split() == EXPECTED_COLUMNS[resource]
    row = lines[1].split()
    assert row[:3] == [name, "False", "RegistryUnavailable"]
    if resource == "imageregistry":
        assert row[3] == "registry.ns.svc.cluster.local"
    if resource == "imagepushsecret":
        assert row[3:5] == ["registry.infra.svc.cluster.local", "3"]
    if resource == "imageregistryaccount":
        assert row[3] == "24h0m0s"
    if resource == "imagebuildenv":
        assert row[3] == "true"
    wide = cluster.kubectl("get", "-n", namespace, short_name, "-o", "wide").stdout
    assert "MESSAGE" in wide and "registry is not ready" in wide


def test_category_lists_every_kind_but_all_does_not(cluster: LocalCluster, namespace: str) -> None:
    for _, _, _, manifest in VALID_OBJECTS:
        apply(cluster, namespace, manifest)
    listed = cluster.kubectl("get", "registry-operator", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(entry.split("/")[0].split(".")[0] for entry in listed) == sorted(
        o[0] for o in VALID_OBJECTS
    )
    everything = cluster.kubectl("get", "all", "-n", namespace, "-o", "name").stdout
    assert "registry.mgoltzsche.github.com" not in everything


def _kubectl_wait(
    cluster: LocalCluster, namespace: str, resource: str, name: str, timeout: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(cluster.kubectl_path), "--kubeconfig", str(cluster.kubeconfig), "wait", "-n", namespace,
         "--for=condition=Ready", f"--timeout={timeout}", f"{resource}/{name}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("resource", "short_name", "name", "manifest"), VALID_OBJECTS, ids=[o[0] for o in VALID_OBJECTS]
)
def test_kubectl_wait_for_ready(
    cluster: LocalCluster, namespace: str, resource: str, short_name: str, name: str, manifest: str
) -> None:
    apply(cluster, namespace, manifest)
    patch_status(cluster, namespace, resource, name, {"conditions": [ready_condition("False", "Pending")]})
    not_ready = _kubectl_wait(cluster, namespace, short_name, name, "2s")
    assert not_ready.wait(timeout=30) != 0

    waiting = _kubectl_wait(cluster, namespace, short_name, name, "60s")
    try:
        time.sleep(1)
        assert waiting.poll() is None, waiting.communicate()  # still waiting: Ready is False
        patch_status(
            cluster, namespace, resource, name, {"conditions": [ready_condition("True", "Available")]}
        )
        stdout, stderr = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, stderr
    assert "condition met" in stdout
