"""The imageregistry reconciler's decisions, against an in-memory API and caches (no cluster).

The fake API answers like the real one where the reconciler depends on it: NotFound/AlreadyExists,
resourceVersion preconditions on status writes, server-side apply merging into what exists.
"""

from __future__ import annotations

import base64
import copy
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.config import Settings, load_settings
from registry_operator.controllers.imageregistry import (
    PERSISTENT_ERROR_RECHECK,
    ImageRegistryReconciler,
    RegistryStores,
    index_tls_secret,
    index_uses_root_ca,
)
from registry_operator.controllers.imageregistry.garbagecollection import parse_report
from registry_operator.controllers.imageregistry.storage import index_storage_secret
from registry_operator.controllers.resources import IMAGE_REGISTRIES, PODS, SECRETS
from registry_operator.controllers.trust import retire_grace
from registry_operator.kube.cache import Store
from registry_operator.kube.client import Client
from registry_operator.kube.controller import Request
from registry_operator.kube.errors import AlreadyExists, ApiError, Conflict, Invalid, NotFound, ServerError
from registry_operator.kube.resources import Resource

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NAMESPACE = "team"
OPERATOR_NAMESPACE = "registry-operator"
KEY_SIZE = 1024  # fast; the real sizes are pki's defaults
REQUEST = Request(NAMESPACE, "registry")


class FakeApi:
    """Objects by (plural, namespace, name); every request is recorded as (verb, kind, name)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.kinds: dict[str, Resource] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.failures: dict[tuple[str, str], ApiError] = {}
        self.apply_preconditions: list[tuple[str, str, str | None]] = []  # (kind, name, resourceVersion)
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)

    def writes(self) -> list[tuple[str, str, str]]:
        return [call for call in self.calls if call[0] != "get"]

    def _key(self, resource: Resource, namespace: str | None, name: str) -> tuple[str, str, str]:
        self.kinds[resource.plural] = resource
        return resource.plural, namespace or "", name

    def _record(self, verb: str, resource: Resource, name: str) -> None:
        self.calls.append((verb, resource.kind, name))
        failure = self.failures.get((verb, resource.kind))
        if failure is not None:
            raise failure

    def _store(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy({"apiVersion": resource.api_version, "kind": resource.kind, **obj})
        metadata = stored.setdefault("metadata", {})
        metadata.setdefault("uid", f"uid-{next(self._uids)}")
        metadata["resourceVersion"] = str(next(self._versions))
        self.objects[self._key(resource, metadata.get("namespace"), metadata["name"])] = stored
        return copy.deepcopy(stored)

    def put(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        """Test setup: store an object without recording a call."""
        return self._store(resource, obj)

    def get(self, resource: Resource, name: str, namespace: str | None = None, **_: Any) -> dict[str, Any]:
        self._record("get", resource, name)
        obj = self.objects.get(self._key(resource, namespace, name))
        if obj is None:
            raise NotFound(404, "NotFound", f'{resource.plural} "{name}" not found')
        return copy.deepcopy(obj)

    def create(self, resource: Resource, obj: dict[str, Any], namespace: str | None = None, **_: Any) -> Any:
        name = obj["metadata"]["name"]
        self._record("create", resource, name)
        if self._key(resource, obj["metadata"].get("namespace"), name) in self.objects:
            raise AlreadyExists(409, "AlreadyExists", f'{resource.plural} "{name}" already exists')
        return self._store(resource, obj)

    def apply(self, resource: Resource, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        metadata = obj["metadata"]
        self._record("apply", resource, metadata["name"])
        self.apply_preconditions.append((resource.kind, metadata["name"], metadata.get("resourceVersion")))
        existing = self.objects.get(self._key(resource, metadata.get("namespace"), metadata["name"]))
        merged = copy.deepcopy(existing) if existing else {}
        for key, value in obj.items():
            if key == "metadata":
                target = merged.setdefault("metadata", {})
                for meta_key, meta_value in value.items():
                    if isinstance(meta_value, dict):
                        target[meta_key] = {**(target.get(meta_key) or {}), **meta_value}
                    else:
                        target[meta_key] = copy.deepcopy(meta_value)
                if "ownerReferences" not in value:
                    target.pop("ownerReferences", None)  # the only owner reference is the operator's
            else:
                merged[key] = copy.deepcopy(value)
        if existing and "generation" in existing["metadata"] and existing.get("spec") != merged.get("spec"):
            merged["metadata"]["generation"] += 1
        return self._store(resource, merged)

    def update(self, resource: Resource, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        metadata = obj["metadata"]
        self._record("update", resource, metadata["name"])
        stored = self.objects[self._key(resource, metadata.get("namespace"), metadata["name"])]
        if metadata.get("resourceVersion") != stored["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "the object has been modified")
        return self._store(resource, obj)

    def update_status(self, resource: Resource, obj: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("status", resource.kind, obj["metadata"]["name"]))
        failure = self.failures.get(("status", resource.kind))
        if failure is not None:
            raise failure
        stored = self.objects[self._key(resource, obj["metadata"].get("namespace"), obj["metadata"]["name"])]
        if obj["metadata"].get("resourceVersion") != stored["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "the object has been modified")
        return self._store(resource, {**stored, "status": obj["status"]})

    def delete(self, resource: Resource, name: str, namespace: str | None = None, **_: Any) -> None:
        self._record("delete", resource, name)
        self.objects.pop(self._key(resource, namespace, name), None)


class Harness:
    """The reconciler, the fake API and caches filled from the fake API (as informers would)."""

    def __init__(self, settings: Settings) -> None:
        self.api = FakeApi()
        self.now = NOW
        self.stores = RegistryStores(
            registries=Store({"tls": index_tls_secret, "ca": index_uses_root_ca}),
            statefulsets=Store(),
            services=Store(),
            managed_secrets=Store(),
            referenced_secrets=Store(),
            root_ca=Store(),
            config_maps=Store(),
            service_accounts=Store(),
            roles=Store(),
            role_bindings=Store(),
            pvcs=Store(),
        )
        self.events: list[tuple[str, str, str]] = []
        self.reconciler = ImageRegistryReconciler(
            cast(Client, self.api),
            self.stores,
            settings,
            recorder=cast(Any, self),
            now=lambda: self.now,
            server_key_size=KEY_SIZE,
            token_key_size=KEY_SIZE,
        )

    def event(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        self.events.append((event_type, reason, message))

    def sync_caches(self) -> None:
        """Copy the API's state into the caches, like the informers' watches do."""
        by_plural = {
            "imageregistries": [self.stores.registries],
            "statefulsets": [self.stores.statefulsets],
            "services": [self.stores.services],
            "configmaps": [self.stores.config_maps],
            "serviceaccounts": [self.stores.service_accounts],
            "roles": [self.stores.roles],
            "rolebindings": [self.stores.role_bindings],
            "persistentvolumeclaims": [self.stores.pvcs],
            "jobs": [self.stores.jobs],
            "pods": [self.stores.gc_pods],
        }
        stores = [self.stores.registries, *(s[0] for s in by_plural.values())]
        stores += [self.stores.managed_secrets, self.stores.referenced_secrets, self.stores.root_ca]
        for store in {id(s): s for s in stores}.values():
            store.replace([])
        for (plural, namespace, name), obj in self.api.objects.items():
            for store in by_plural.get(plural, []):
                store.upsert(copy.deepcopy(obj))
            if plural == "secrets":
                if namespace == OPERATOR_NAMESPACE and name == c.ROOT_CA_SECRET_NAME:
                    self.stores.root_ca.upsert(copy.deepcopy(obj))
                if namespace == NAMESPACE:
                    self.stores.referenced_secrets.upsert(copy.deepcopy(obj))
                    labels = obj["metadata"].get("labels") or {}
                    if labels.get(c.LABEL_MANAGED_BY) == c.MANAGED_BY_VALUE:
                        self.stores.managed_secrets.upsert(copy.deepcopy(obj))

    def reconcile(self) -> Any:
        self.sync_caches()
        self.api.calls.clear()
        return self.reconciler.reconcile(REQUEST)

    # --- objects ------------------------------------------------------------------------------
    def registry(self, **spec: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"persistentVolumeClaim": {"resources": {"requests": {"storage": "1Gi"}}}}
        body.update(spec)
        return self.api.put(
            IMAGE_REGISTRIES,
            {
                "metadata": {"name": "registry", "namespace": NAMESPACE, "generation": 1},
                "spec": body,
            },
        )

    def edit_registry(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Change the stored registry's spec as a user would (the generation goes up)."""
        registry = self.get("imageregistries", "registry")
        assert registry is not None
        change(registry["spec"])
        registry["metadata"]["generation"] += 1

    def get(self, plural: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        return self.api.objects.get((plural, namespace, name))

    def status(self) -> dict[str, Any]:
        registry = self.get("imageregistries", "registry")
        assert registry is not None
        return dict(registry.get("status") or {})

    def condition(self, condition_type: str) -> dict[str, Any]:
        for item in self.status().get("conditions", []):
            if item["type"] == condition_type:
                return dict(item)
        raise AssertionError(f"no {condition_type} condition in {self.status()}")

    def mark_statefulset_rolled_out(self) -> None:
        sts = self.get("statefulsets", "registry")
        assert sts is not None
        replicas = sts["spec"]["replicas"]
        sts["metadata"].setdefault("generation", 1)
        sts["status"] = {
            "observedGeneration": sts["metadata"]["generation"],
            "replicas": replicas,
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
        }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tls_data(bundle: pki.TLSBundle) -> dict[str, str]:
    return {key: b64(value) for key, value in bundle.to_secret_data().items()}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"POD_NAMESPACE": OPERATOR_NAMESPACE}, namespace_file=tmp_path / "none")


@pytest.fixture
def harness(settings: Settings) -> Harness:
    return Harness(settings)


@pytest.fixture
def root_ca() -> pki.ParsedBundle:
    parsed = pki.parse_bundle(
        pki.create_ca(c.ROOT_CA_COMMON_NAME, NOW - timedelta(days=1), key_size=KEY_SIZE)
    )
    assert not isinstance(parsed, pki.PkiError)
    return parsed


def put_root_ca(harness: Harness, bundle: pki.TLSBundle) -> None:
    harness.api.put(
        SECRETS,
        {
            "metadata": {
                "name": c.ROOT_CA_SECRET_NAME,
                "namespace": OPERATOR_NAMESPACE,
                "labels": {c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE},
            },
            "type": c.SECRET_TYPE_TLS,
            "data": tls_data(bundle),
        },
    )


@pytest.fixture
def ready_harness(harness: Harness, root_ca: pki.ParsedBundle) -> Harness:
    """A registry with the root CA in place, reconciled once, its StatefulSet rolled out."""
    put_root_ca(harness, root_ca.bundle)
    harness.registry()
    harness.reconcile()
    harness.mark_statefulset_rolled_out()
    harness.reconcile()
    return harness


def secret_cert(harness: Harness, name: str) -> pki.ParsedBundle:
    secret = harness.get("secrets", name)
    assert secret is not None
    parsed = pki.parse_tls_secret_data(secret["data"], require_ca=False)
    assert not isinstance(parsed, pki.PkiError)
    return parsed


# --- the happy path -------------------------------------------------------------------------------


def test_first_reconcile_creates_every_child_and_reports_the_rollout(
    harness: Harness, root_ca: pki.ParsedBundle
) -> None:
    put_root_ca(harness, root_ca.bundle)
    harness.registry()
    result = harness.reconcile()

    written = {(verb, kind) for verb, kind, _ in harness.api.writes()}
    assert ("create", "Secret") in written  # TLS, token key, HTTP secret
    for kind in (
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Service",
        "PersistentVolumeClaim",
        "StatefulSet",
    ):
        assert ("apply", kind) in written, kind
    created = sorted(name for verb, kind, name in harness.api.writes() if verb == "create")
    assert created == [
        "imageregistry-registry-auth-token",
        "imageregistry-registry-http-secret",
        "imageregistry-registry-selfsigned-tls",
    ]

    server = secret_cert(harness, "imageregistry-registry-selfsigned-tls")
    assert pki.dns_names(server.cert) == ["registry.team.svc.cluster.local", "registry.team.svc"]
    assert pki.verify_signed_by(server.cert, root_ca.cert)
    assert server.ca_certs == (root_ca.cert,)

    status = harness.status()
    assert status["hostname"] == "registry.team.svc.cluster.local"
    assert status["tlsSecretName"] == "imageregistry-registry-selfsigned-tls"
    assert status["observedGeneration"] == 1
    assert harness.condition("Synced")["status"] == "True"
    ready = harness.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Updating")
    assert ready["message"] == "0/1 pods updated, 0/1 ready"
    # No pod runs this sidecar yet: secrets get bcrypt-hashed accounts until it does.
    assert "passwordSchemes" not in status

    # Requeued at the earliest renewal: the server certificate (75 % of 90 days).
    renewal = pki.renewal_time(server.cert)
    assert result.requeue_after == pytest.approx((renewal - NOW).total_seconds() + 2, abs=1)
    assert ("Normal", "IssuedCertificate") in {(t, r) for t, r, _ in harness.events}


def test_ready_once_the_statefulset_has_rolled_out(ready_harness: Harness) -> None:
    ready = ready_harness.condition("Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("True", "Available", "1/1 pods ready")
    # Every pod runs the current template, so this operator's sidecar: the fast hash may be used.
    assert ready_harness.status()["passwordSchemes"] == ["bcrypt", "sha256-salted-v1"]
    assert ready["observedGeneration"] == 1
    assert ("Normal", "Available", "1/1 pods ready") in ready_harness.events


def test_steady_state_makes_no_writes(ready_harness: Harness) -> None:
    ready_harness.reconcile()
    assert ready_harness.api.writes() == []
    # ... and reads only the cache (no GET either).
    assert ready_harness.api.calls == []


def test_pod_template_hash_changes_with_the_acl_but_not_with_replicas(ready_harness: Harness) -> None:
    def config_hash() -> str:
        sts = ready_harness.get("statefulsets", "registry")
        assert sts is not None
        return str(sts["spec"]["template"]["metadata"]["annotations"][c.ANNOTATION_CONFIG_HASH])

    before = config_hash()

    def scale(spec: dict[str, Any]) -> None:
        spec["replicas"] = 2
        spec["persistentVolumeClaim"]["accessModes"] = ["ReadWriteMany"]

    ready_harness.edit_registry(scale)
    ready_harness.reconcile()
    assert config_hash() == before
    assert ready_harness.condition("Ready")["reason"] == "Updating"

    ready_harness.edit_registry(
        lambda spec: spec.update(auth={"acl": [{"match": {"account": "admin"}, "actions": ["*"]}]})
    )
    ready_harness.reconcile()
    assert config_hash() != before
    config_map = ready_harness.get("configmaps", "imageregistry-registry-auth-config")
    assert config_map is not None
    assert yaml.safe_load(config_map["data"]["auth_config.yml"])["acl"] == [
        {"match": {"account": "admin"}, "actions": ["*"]}
    ]


def test_a_new_root_ca_reissues_the_server_certificate(ready_harness: Harness) -> None:
    old = secret_cert(ready_harness, "imageregistry-registry-selfsigned-tls")
    new_ca = pki.parse_bundle(pki.create_ca(c.ROOT_CA_COMMON_NAME, NOW, key_size=KEY_SIZE))
    assert not isinstance(new_ca, pki.PkiError)
    put_root_ca(ready_harness, new_ca.bundle)
    ready_harness.reconcile()
    assert ("update", "Secret", "imageregistry-registry-selfsigned-tls") in ready_harness.api.writes()
    new = secret_cert(ready_harness, "imageregistry-registry-selfsigned-tls")
    assert new.cert != old.cert
    assert pki.verify_signed_by(new.cert, new_ca.cert)
    # A CA the clients were never given: published beside the served one, the pods wait for the overlap.
    assert ("apply", "StatefulSet", "registry") not in ready_harness.api.writes()
    trust = ready_harness.status()["trust"]
    assert trust["phase"] == "Distributing"
    published = pki.bundle_certs(ready_harness.status()["caBundle"].encode())
    assert {pki.cert_fingerprint(cert) for cert in published} == {
        pki.cert_fingerprint(new_ca.cert),
        trust["served"]["authorities"][0],
    }
    ready_harness.now = NOW + ready_harness.reconciler._settings.trust_overlap + timedelta(seconds=1)
    ready_harness.reconcile()
    assert ("apply", "StatefulSet", "registry") in ready_harness.api.writes()  # the pods roll
    assert ready_harness.status()["trust"]["phase"] == "Rolling"
    ready_harness.mark_statefulset_rolled_out()
    result = ready_harness.reconcile()
    assert ready_harness.status()["trust"]["phase"] == "Stable"
    # The old CA stays for the retire grace after the pods serve the new certificate (pods draining).
    grace = retire_grace(ready_harness.reconciler._settings.trust_overlap)
    assert len(pki.bundle_certs(ready_harness.status()["caBundle"].encode())) == 2
    assert ready_harness.status()["trust"]["served"]["since"] is not None
    assert result is not None and result.requeue_after is not None
    assert result.requeue_after <= grace.total_seconds() + 3
    ready_harness.now += grace
    ready_harness.reconcile()
    assert pki.bundle_certs(ready_harness.status()["caBundle"].encode()) == [new_ca.cert]  # old CA gone


def test_token_key_rollover_from_rsa_4096_trusts_both_keys_before_switching(
    settings: Settings, tmp_path: Path
) -> None:
    harness = Harness(settings)
    old = pki.create_token_signing_pair("legacy", NOW, key_size=4096)
    harness.api.put(
        SECRETS,
        {
            "metadata": {
                "name": "imageregistry-registry-auth-token",
                "namespace": NAMESPACE,
                "labels": {c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE},
            },
            "type": c.SECRET_TYPE_TLS,
            "data": tls_data(old),
        },
    )

    def token_secret() -> dict[str, Any] | None:
        return harness.get("secrets", "imageregistry-registry-auth-token")

    def data(key: str) -> bytes:
        secret = token_secret()
        assert secret is not None
        return base64.b64decode(secret["data"][key])

    put_root_ca(harness, pki.create_ca(c.ROOT_CA_COMMON_NAME, NOW, key_size=KEY_SIZE))
    harness.registry()
    harness.reconcile()
    assert harness.status()["tokenKey"]["phase"] == "Distributing"
    assert data("tls.crt") == old.cert_pem  # docker_auth still signs with the old key
    assert pki.bundle_certs(data("bundle.crt"))[0] == pki.bundle_certs(old.cert_pem)[0]
    assert len(pki.bundle_certs(data("bundle.crt"))) == 2
    next_cert = data("next.crt")
    harness.reconcile()
    assert data("tls.crt") == old.cert_pem  # not before every replica trusts both
    harness.mark_statefulset_rolled_out()
    harness.reconcile()
    assert harness.status()["tokenKey"]["phase"] == "Switching"
    assert data("tls.crt") == next_cert and data("previous.crt") == old.cert_pem
    assert len(pki.bundle_certs(data("bundle.crt"))) == 2
    assert ("apply", "StatefulSet", "registry") in harness.api.writes()  # docker_auth moves to the new key
    harness.mark_statefulset_rolled_out()
    harness.reconcile()
    assert harness.status()["tokenKey"]["phase"] == "Retiring"
    harness.now = NOW + settings.token_key_retirement - timedelta(seconds=5)
    harness.reconcile()
    assert len(pki.bundle_certs(data("bundle.crt"))) == 2  # tokens of the old key may still be alive
    harness.now = NOW + settings.token_key_retirement + timedelta(seconds=5)
    harness.reconcile()
    assert harness.status()["tokenKey"]["phase"] == "Stable"
    assert pki.bundle_certs(data("bundle.crt")) == pki.bundle_certs(next_cert)
    assert "previous.crt" not in (token_secret() or {})["data"]
    key = pki.parse_private_key_pem(data("tls.key"))
    assert not isinstance(key, pki.PkiError) and getattr(key, "key_size", None) == KEY_SIZE


def test_server_certificate_is_renewed_at_its_renewal_time(ready_harness: Harness) -> None:
    old = secret_cert(ready_harness, "imageregistry-registry-selfsigned-tls")
    ready_harness.now = pki.renewal_time(old.cert) - timedelta(seconds=1)
    ready_harness.reconcile()
    assert ready_harness.api.writes() == []
    ready_harness.now = pki.renewal_time(old.cert) + timedelta(seconds=1)
    ready_harness.reconcile()
    assert secret_cert(ready_harness, "imageregistry-registry-selfsigned-tls").cert != old.cert


def test_generated_secrets_are_kept_across_reconciles(ready_harness: Harness) -> None:
    names = ("imageregistry-registry-auth-token", "imageregistry-registry-http-secret")
    before = {name: (ready_harness.get("secrets", name) or {})["data"] for name in names}
    # A lost cache entry (e.g. a relist) must not regenerate anything: the live object is read.
    ready_harness.sync_caches()
    ready_harness.stores.managed_secrets.replace([])
    ready_harness.api.calls.clear()
    ready_harness.reconciler.reconcile(REQUEST)
    assert {("get", "Secret", name) for name in names} <= set(ready_harness.api.calls)
    assert not [call for call in ready_harness.api.writes() if call[1] == "Secret"]
    assert {name: (ready_harness.get("secrets", name) or {})["data"] for name in names} == before


# --- user problems ----------------------------------------------------------------------------------


def test_malformed_user_tls_secret_sets_ready_false_and_leaves_the_pods_alone(ready_harness: Harness) -> None:
    """Regression (B4): a malformed PEM crashed the original operator."""
    ready_harness.api.put(
        SECRETS,
        {
            "metadata": {"name": "mine", "namespace": NAMESPACE},
            "type": "Opaque",
            "data": {
                "tls.crt": b64(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"),
                "tls.key": b64(b"x"),
            },
        },
    )
    ready_harness.edit_registry(lambda spec: spec.update(tls={"secretName": "mine"}))
    sts_before = copy.deepcopy(ready_harness.get("statefulsets", "registry"))

    result = ready_harness.reconcile()  # must not raise

    ready = ready_harness.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSecret")
    assert "Secret team/mine named in spec.tls.secretName is unusable: tls.crt" in ready["message"]
    assert ready_harness.condition("Synced")["status"] == "False"
    assert ready_harness.status()["tlsSecretName"] == "mine"
    assert ready_harness.get("statefulsets", "registry") == sts_before
    assert result is not None  # renewals of the other material are still scheduled
    assert ("Warning", "InvalidSecret") in {(t, r) for t, r, _ in ready_harness.events}


def test_missing_user_tls_secret_is_reported(harness: Harness) -> None:
    harness.registry(tls={"secretName": "absent"})
    harness.reconcile()
    ready = harness.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "MissingSecret")
    assert "Secret team/absent named in spec.tls.secretName does not exist" in ready["message"]
    assert harness.get("statefulsets", "registry") is None
    assert harness.get("services", "registry") is not None  # independent children are still written


def test_a_valid_user_tls_secret_is_used_as_is(harness: Harness) -> None:
    ca = pki.parse_bundle(pki.create_ca("user CA", NOW, key_size=KEY_SIZE))
    assert not isinstance(ca, pki.PkiError)
    bundle = pki.create_server_cert(ca, ["registry.example.org"], NOW, key_size=KEY_SIZE)
    harness.api.put(
        SECRETS,
        {
            "metadata": {"name": "mine", "namespace": NAMESPACE},
            "type": c.SECRET_TYPE_TLS,
            "data": tls_data(bundle),
        },
    )
    harness.registry(tls={"secretName": "mine"})
    harness.reconcile()
    assert harness.get("secrets", "mine") is not None
    assert not [call for call in harness.api.writes() if call[2] == "mine"]
    sts = harness.get("statefulsets", "registry")
    assert sts is not None
    tls_volume = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
    assert tls_volume["secret"]["secretName"] == "mine"
    assert harness.condition("Synced")["status"] == "True"


def test_missing_root_ca_waits_for_the_caroot_controller(harness: Harness) -> None:
    harness.registry()
    harness.reconcile()
    ready = harness.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Pending")
    assert "root CA Secret registry-operator/image-registry-root-ca" in ready["message"]
    assert harness.get("statefulsets", "registry") is None


def test_an_acl_change_is_applied_under_the_cached_resource_version(ready_harness: Harness) -> None:
    """A writer with an older cache of the spec (a deposed leader) cannot put an older ACL back."""
    cached = ready_harness.get("configmaps", "imageregistry-registry-auth-config")
    assert cached is not None
    acl = [{"match": {"account": "/.+/"}, "actions": ["pull"]}]
    ready_harness.edit_registry(lambda spec: spec.update(auth={"acl": acl}))
    ready_harness.api.apply_preconditions.clear()
    ready_harness.reconcile()
    applied = [rv for kind, name, rv in ready_harness.api.apply_preconditions if kind == "ConfigMap"]
    assert applied == [cached["metadata"]["resourceVersion"]]


def test_invalid_acl_is_an_invalid_spec_and_keeps_the_running_config(ready_harness: Harness) -> None:
    config_before = copy.deepcopy(ready_harness.get("configmaps", "imageregistry-registry-auth-config"))
    ready_harness.edit_registry(
        lambda spec: spec.update(auth={"acl": [{"match": {"name": "/[unclosed/"}, "actions": ["pull"]}]})
    )
    ready_harness.reconcile()
    ready = ready_harness.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith("spec.auth.acl[0].match.name: invalid regular expression")
    assert ready_harness.get("configmaps", "imageregistry-registry-auth-config") == config_before
    assert not [call for call in ready_harness.api.writes() if call[1] == "StatefulSet"]


def test_status_shows_which_namespaces_may_get_credentials(ready_harness: Harness) -> None:
    assert ready_harness.status()["allowedNamespaces"] == "any namespace the operator watches"
    ready_harness.edit_registry(lambda spec: spec.update(auth={"namespaces": {"names": ["team-a"]}}))
    ready_harness.reconcile()
    assert ready_harness.status()["allowedNamespaces"] == f"namespace {NAMESPACE} or namespaces team-a"


def test_a_rendered_config_docker_auth_would_refuse_keeps_the_running_config(
    ready_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever produced it (a renderer bug, a future option): docker_auth would exit on this config.
    from registry_operator.controllers.imageregistry import config

    config_before = copy.deepcopy(ready_harness.get("configmaps", "imageregistry-registry-auth-config"))
    monkeypatch.setattr(config, "render_auth_config", lambda ctx: "server: {addr: ':5001'}\n")
    ready_harness.edit_registry(lambda spec: spec.update(replicas=1))
    ready_harness.reconcile()
    ready = ready_harness.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidAuthConfig")
    assert (
        "would be refused by docker_auth: docker_auth config: token section is required" in ready["message"]
    )
    assert ready_harness.get("configmaps", "imageregistry-registry-auth-config") == config_before
    assert not [call for call in ready_harness.api.writes() if call[1] == "StatefulSet"]


def test_a_foreign_secret_with_a_generated_name_is_never_overwritten(
    harness: Harness, root_ca: pki.ParsedBundle
) -> None:
    put_root_ca(harness, root_ca.bundle)
    foreign = harness.api.put(
        SECRETS,
        {
            "metadata": {"name": "imageregistry-registry-http-secret", "namespace": NAMESPACE},
            "data": {"a": b64(b"b")},
        },
    )
    harness.registry()
    result = harness.reconcile()
    assert harness.get("secrets", "imageregistry-registry-http-secret") == foreign
    ready = harness.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "FailedSync")
    assert (
        "Secret team/imageregistry-registry-http-secret already exists and is not managed" in ready["message"]
    )
    assert result.requeue_after <= PERSISTENT_ERROR_RECHECK.total_seconds()
    assert harness.get("statefulsets", "registry") is None


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"replicas": -1}, "spec.replicas"),
        ({"replicas": 1}, "persistentVolumeClaim is required"),
        ({"storage": {"type": "S3"}, "persistentVolumeClaim": {}}, "s3 must be set exactly when type is S3"),
    ],
)
def test_invalid_spec_that_bypassed_the_schema_is_reported(
    harness: Harness, spec: dict[str, Any], named: str
) -> None:
    harness.api.put(
        IMAGE_REGISTRIES,
        {"metadata": {"name": "registry", "namespace": NAMESPACE, "generation": 4}, "spec": spec},
    )
    assert harness.reconcile() is None
    ready = harness.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert named in ready["message"]
    assert harness.status()["observedGeneration"] == 4


# --- API errors ----------------------------------------------------------------------------------------


def test_an_api_error_retrying_cannot_fix_is_reported_and_rechecked(ready_harness: Harness) -> None:
    ready_harness.edit_registry(
        lambda spec: spec["persistentVolumeClaim"]["resources"]["requests"].update(storage="500Mi")
    )
    ready_harness.api.failures[("apply", "PersistentVolumeClaim")] = Invalid(
        422,
        "Invalid",
        "spec.resources.requests.storage: Forbidden: field can not be less than previous value",
    )
    result = ready_harness.reconcile()
    ready = ready_harness.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "FailedSync")
    assert ready["message"].startswith(
        "apply PersistentVolumeClaim imageregistry-registry-pvc: Invalid: spec.resources"
    )
    assert result.requeue_after == PERSISTENT_ERROR_RECHECK.total_seconds()


def test_a_transient_api_error_is_reported_and_retried_with_backoff(ready_harness: Harness) -> None:
    ready_harness.edit_registry(lambda spec: spec.update(replicas=0))
    ready_harness.api.failures[("apply", "StatefulSet")] = ServerError(
        503, "ServiceUnavailable", "etcd is down"
    )
    with pytest.raises(ServerError):
        ready_harness.reconcile()
    assert ready_harness.condition("Ready")["reason"] == "FailedSync"
    assert "etcd is down" in ready_harness.condition("Ready")["message"]


def test_a_stale_cache_conflict_is_retried_without_a_status_change(ready_harness: Harness) -> None:
    ready_harness.sync_caches()
    registry = ready_harness.get("imageregistries", "registry")
    assert registry is not None
    registry["metadata"]["resourceVersion"] = "999"  # someone wrote after our cache was filled
    registry["metadata"]["generation"] = 2
    cached = ready_harness.stores.registries.get_by_name(NAMESPACE, "registry")
    assert cached is not None
    cached["metadata"]["generation"] = 2
    ready_harness.stores.registries.upsert(cached)
    with pytest.raises(Conflict):
        ready_harness.reconciler.reconcile(REQUEST)


# --- PVC and cert-manager ------------------------------------------------------------------------------


def test_turning_delete_claim_off_removes_the_owner_reference(
    harness: Harness, root_ca: pki.ParsedBundle
) -> None:
    put_root_ca(harness, root_ca.bundle)
    harness.registry(
        persistentVolumeClaim={"resources": {"requests": {"storage": "1Gi"}}, "deleteClaim": True}
    )
    harness.reconcile()
    pvc = harness.get("persistentvolumeclaims", "imageregistry-registry-pvc")
    assert pvc is not None and pvc["metadata"]["ownerReferences"]
    pvc["metadata"]["labels"]["team"] = "a"  # a user's label
    harness.edit_registry(lambda spec: spec["persistentVolumeClaim"].update(deleteClaim=False))
    harness.reconcile()
    assert ("apply", "PersistentVolumeClaim", "imageregistry-registry-pvc") in harness.api.writes()
    pvc = harness.get("persistentvolumeclaims", "imageregistry-registry-pvc")
    assert pvc is not None
    assert "ownerReferences" not in pvc["metadata"]
    assert pvc["metadata"]["labels"]["team"] == "a"
    harness.reconcile()
    assert not [call for call in harness.api.writes() if call[1] == "PersistentVolumeClaim"]


def test_issuer_ref_creates_a_certificate_and_waits_for_its_secret(harness: Harness) -> None:
    harness.registry(tls={"issuerRef": {"name": "le", "kind": "ClusterIssuer"}})
    harness.reconcile()
    assert ("apply", "Certificate", "imageregistry-registry-tls") in harness.api.writes()
    certificate = harness.get("certificates", "imageregistry-registry-tls")
    assert certificate is not None
    assert certificate["spec"]["secretName"] == "imageregistry-registry-cm-tls"
    ready = harness.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Pending")
    assert "waiting for cert-manager to issue Certificate imageregistry-registry-tls" in ready["message"]

    # Steady: the Certificate is read (no cache for it) but not written again.
    harness.reconcile()
    assert ("get", "Certificate", "imageregistry-registry-tls") in harness.api.calls
    assert not [call for call in harness.api.writes() if call[1] == "Certificate"]


def test_issuer_ref_without_cert_manager_says_so(harness: Harness) -> None:
    harness.registry(tls={"issuerRef": {"name": "le"}})
    harness.api.failures[("apply", "Certificate")] = NotFound(
        404, "NotFound", "the server could not find the requested resource"
    )
    harness.reconcile()
    ready = harness.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "FailedSync")
    assert "is cert-manager installed?" in ready["message"]


# --- indexes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tls", "secret_index", "uses_root_ca"),
    [
        ({}, [], ["root-ca"]),
        ({"secretName": "mine"}, ["team/mine"], []),
        ({"issuerRef": {"name": "le"}}, ["team/imageregistry-r-cm-tls"], []),
        ({"issuerRef": {"name": "le"}, "secretName": "mine"}, ["team/mine"], []),
    ],
)
def test_registry_indexes(tls: dict[str, Any], secret_index: list[str], uses_root_ca: list[str]) -> None:
    registry = {"metadata": {"name": "r", "namespace": "team"}, "spec": {"tls": tls}}
    assert index_tls_secret(registry) == secret_index
    assert index_uses_root_ca(registry) == uses_root_ca


def test_gone_or_deleting_registries_are_left_to_the_garbage_collector(harness: Harness) -> None:
    assert harness.reconcile() is None
    registry = harness.registry()
    registry["metadata"]["deletionTimestamp"] = "2026-03-01T12:00:00Z"
    harness.api.put(IMAGE_REGISTRIES, registry)
    assert harness.reconcile() is None
    assert harness.api.writes() == []


# --- object storage (spec.storage) ---------------------------------------------------------------------

S3_STORAGE: dict[str, Any] = {
    "type": "S3",
    "s3": {
        "bucket": "images",
        "region": "eu-west-1",
        "regionEndpoint": "http://127.0.0.1:9000",
        "forcePathStyle": True,
        "rootDirectory": "/registry",
        "credentialsSecretRef": {"name": "s3-credentials"},
    },
}


def s3_registry(harness: Harness, **spec: Any) -> None:
    harness.api.put(
        IMAGE_REGISTRIES,
        {
            "metadata": {"name": "registry", "namespace": NAMESPACE, "generation": 1},
            "spec": {"storage": S3_STORAGE, "replicas": 3, **spec},
        },
    )


def put_s3_credentials(harness: Harness, **data: str) -> None:
    harness.api.put(
        SECRETS,
        {
            "metadata": {"name": "s3-credentials", "namespace": NAMESPACE},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
        },
    )


def test_s3_storage_renders_the_s3_driver_and_keeps_the_keys_out_of_the_config(
    harness: Harness, root_ca: pki.ParsedBundle
) -> None:
    put_root_ca(harness, root_ca.bundle)
    put_s3_credentials(harness, accessKeyId="AKIAEXAMPLE", secretAccessKey="very-secret-key")
    s3_registry(harness)
    harness.reconcile()
    config_map = harness.get("configmaps", "imageregistry-registry-auth-config")
    assert config_map is not None
    rendered = config_map["data"]["registry.yml"]
    assert "AKIAEXAMPLE" not in rendered and "very-secret-key" not in rendered
    assert yaml.safe_load(rendered)["storage"] == {
        "s3": {
            "bucket": "images",
            "region": "eu-west-1",
            "regionendpoint": "http://127.0.0.1:9000",
            "forcepathstyle": True,
            "rootdirectory": "/registry",
        },
        "redirect": {"disable": True},
        "delete": {"enabled": True},
    }
    sts = harness.get("statefulsets", "registry")
    assert sts is not None
    assert sts["spec"]["replicas"] == 3
    pod = sts["spec"]["template"]["spec"]
    registry = next(container for container in pod["containers"] if container["name"] == "registry")
    env = {item["name"]: item.get("valueFrom") for item in registry["env"]}
    assert env["REGISTRY_STORAGE_S3_ACCESSKEY"] == {
        "secretKeyRef": {"name": "s3-credentials", "key": "accessKeyId"}
    }
    assert env["REGISTRY_STORAGE_S3_SECRETKEY"] == {
        "secretKeyRef": {"name": "s3-credentials", "key": "secretAccessKey"}
    }
    assert "AKIAEXAMPLE" not in yaml.safe_dump(sts)
    assert all("persistentVolumeClaim" not in volume for volume in pod["volumes"])
    assert all(mount["name"] != "images" for mount in registry["volumeMounts"])
    assert harness.get("persistentvolumeclaims", "imageregistry-registry-pvc") is None

    # A rotated key rolls the pods (they read it from the environment at start).
    before = sts["spec"]["template"]["metadata"]["annotations"][c.ANNOTATION_CONFIG_HASH]
    put_s3_credentials(harness, accessKeyId="AKIAEXAMPLE", secretAccessKey="rotated-secret-key")
    harness.reconcile()
    sts = harness.get("statefulsets", "registry")
    assert sts is not None
    assert sts["spec"]["template"]["metadata"]["annotations"][c.ANNOTATION_CONFIG_HASH] != before


@pytest.mark.parametrize(
    ("data", "reason", "named"),
    [
        (None, "MissingSecret", "the S3 credentials Secret s3-credentials"),
        ({"accessKeyId": "AKIAEXAMPLE"}, "InvalidSecret", "has no key secretAccessKey"),
        ({"accessKeyId": "", "secretAccessKey": "x"}, "InvalidSecret", "has an empty accessKeyId"),
    ],
)
def test_missing_s3_credentials_are_named_and_keep_the_pods_unchanged(
    harness: Harness,
    root_ca: pki.ParsedBundle,
    data: dict[str, str] | None,
    reason: str,
    named: str,
) -> None:
    put_root_ca(harness, root_ca.bundle)
    if data is not None:
        put_s3_credentials(harness, **data)
    s3_registry(harness)
    harness.reconcile()
    ready = harness.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert named in ready["message"] and "spec.storage.s3.credentialsSecretRef" in ready["message"]
    assert harness.get("statefulsets", "registry") is None

    put_s3_credentials(harness, accessKeyId="AKIAEXAMPLE", secretAccessKey="very-secret-key")
    harness.reconcile()
    assert harness.get("statefulsets", "registry") is not None
    assert harness.condition("Ready")["reason"] != reason


def test_storage_secret_index_names_the_credentials_secret_of_s3_registries_only() -> None:
    s3 = {"metadata": {"name": "r", "namespace": NAMESPACE}, "spec": {"storage": S3_STORAGE}}
    assert index_storage_secret(s3) == [f"{NAMESPACE}/s3-credentials"]
    pvc = {"metadata": {"name": "r", "namespace": NAMESPACE}, "spec": {"persistentVolumeClaim": {}}}
    assert index_storage_secret(pvc) == []


# --- garbage collection (spec.garbageCollection) -----------------------------------------------------

GC_JOB = "imageregistry-registry-gc-202603011201"


def gc_status(harness: Harness) -> dict[str, Any]:
    return dict(harness.status().get("garbageCollection") or {})


def registry_storage(harness: Harness) -> dict[str, Any]:
    config_map = harness.get("configmaps", "imageregistry-registry-auth-config")
    assert config_map is not None
    storage: dict[str, Any] = yaml.safe_load(config_map["data"]["registry.yml"])["storage"]
    return storage


def finish_gc_job(harness: Harness, message: str, *, failed: bool = False) -> None:
    """Play the Job controller and kubelet: the Job's pod terminated with `message`."""
    job = harness.get("jobs", GC_JOB)
    assert job is not None
    condition = "Failed" if failed else "Complete"
    job["status"] = {"conditions": [{"type": condition, "status": "True"}]}
    labels = {**job["spec"]["template"]["metadata"]["labels"], "batch.kubernetes.io/job-name": GC_JOB}
    harness.api.put(
        PODS,
        {
            "metadata": {"name": f"{GC_JOB}-abcde", "namespace": NAMESPACE, "labels": labels},
            "status": {
                "containerStatuses": [
                    {
                        "name": "garbage-collect",
                        "state": {"terminated": {"exitCode": 1 if failed else 0, "message": message}},
                    }
                ]
            },
        },
    )


def gc_registry(harness: Harness, root_ca: pki.ParsedBundle, **gc: Any) -> None:
    put_root_ca(harness, root_ca.bundle)
    registry = harness.registry(garbageCollection={"schedule": "* * * * *", "deleteUntagged": True, **gc})
    registry["metadata"]["creationTimestamp"] = "2026-03-01T12:00:00Z"
    harness.api.put(IMAGE_REGISTRIES, registry)
    harness.reconcile()
    harness.mark_statefulset_rolled_out()
    harness.reconcile()


def test_gc_waits_for_the_schedule_then_runs_read_only_and_records_the_report(
    harness: Harness, root_ca: pki.ParsedBundle
) -> None:
    gc_registry(harness, root_ca)
    assert gc_status(harness).get("phase", "Idle") == "Idle"
    assert "maintenance" not in registry_storage(harness)
    assert harness.get("jobs", GC_JOB) is None

    # The schedule fires: the registry goes read-only first, and no Job runs before the pods did.
    harness.now = NOW + timedelta(minutes=1, seconds=5)
    result = harness.reconcile()
    assert gc_status(harness)["phase"] == "ReadOnly"
    assert gc_status(harness)["jobName"] == GC_JOB
    assert registry_storage(harness)["maintenance"] == {"readonly": {"enabled": True}}
    assert harness.get("jobs", GC_JOB) is None
    assert result.requeue_after <= 10

    harness.mark_statefulset_rolled_out()
    harness.reconcile()
    assert gc_status(harness)["phase"] == "Collecting"
    job = harness.get("jobs", GC_JOB)
    assert job is not None
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:2] == ["/bin/sh", "-c"]
    assert "registry garbage-collect --delete-untagged " in container["command"][2]
    config, root = "/etc/distribution/config.yml", "/var/lib/registry"
    assert container["command"][3:] == ["garbage-collect", config, root]
    assert {v["name"] for v in pod["volumes"]} >= {"images", "registry-config"}
    assert c.LABEL_APP not in job["spec"]["template"]["metadata"]["labels"]  # not behind the Service
    assert registry_storage(harness)["maintenance"] == {"readonly": {"enabled": True}}

    finish_gc_job(
        harness,
        "exit-code: 0\nkib-before: 120\nkib-after: 100\n"
        "summary: 3 blobs marked, 3 blobs and 1 manifests eligible for deletion\n",
    )
    harness.reconcile()
    status = gc_status(harness)
    assert status["phase"] == "Idle"
    run = status["lastRun"]
    assert run["result"] == "Succeeded"
    assert (run["blobsDeleted"], run["manifestsDeleted"], run["bytesFreed"]) == (3, 1, 20 * 1024)
    assert run["jobName"] == GC_JOB
    harness.reconcile()
    assert "maintenance" not in registry_storage(harness)  # read-write again

    # Not again before the next fire time.
    harness.reconcile()
    assert gc_status(harness)["phase"] == "Idle"


def test_gc_failure_is_recorded_and_the_registry_goes_back_to_read_write(
    harness: Harness, root_ca: pki.ParsedBundle
) -> None:
    gc_registry(harness, root_ca, dryRun=True)
    harness.now = NOW + timedelta(minutes=1, seconds=5)
    harness.reconcile()
    harness.mark_statefulset_rolled_out()
    harness.reconcile()
    job = harness.get("jobs", GC_JOB)
    assert job is not None
    assert "--dry-run" in job["spec"]["template"]["spec"]["containers"][0]["command"][2]
    finish_gc_job(harness, "exit-code: 1\nerror: failed to mark: boom\n", failed=True)
    harness.reconcile()
    run = gc_status(harness)["lastRun"]
    assert run["result"] == "Failed" and "failed to mark: boom" in run["message"]
    harness.reconcile()
    assert "maintenance" not in registry_storage(harness)


def test_gc_gives_up_when_the_pods_do_not_become_read_only(
    harness: Harness, root_ca: pki.ParsedBundle
) -> None:
    gc_registry(harness, root_ca)
    harness.now = NOW + timedelta(minutes=1, seconds=5)
    harness.reconcile()
    assert gc_status(harness)["phase"] == "ReadOnly"
    harness.now += timedelta(minutes=16)  # the pods never rolled
    harness.reconcile()
    run = gc_status(harness)["lastRun"]
    assert run["result"] == "Failed" and "did not become read-only" in run["message"]
    assert harness.get("jobs", GC_JOB) is None
    harness.reconcile()
    assert "maintenance" not in registry_storage(harness)


def test_gc_report_parsing() -> None:
    report = parse_report(
        "exit-code: 0\nsummary: 5 blobs marked, 2 blobs and 0 manifests eligible for deletion\n"
    )
    assert (report.exit_code, report.blobs_deleted, report.manifests_deleted, report.bytes_freed) == (
        0,
        2,
        0,
        None,
    )
    assert parse_report("").exit_code is None


def test_gc_waiting_for_read_only_times_out_also_while_the_registry_has_a_problem(
    harness: Harness, root_ca: pki.ParsedBundle
) -> None:
    gc_registry(harness, root_ca)
    harness.now = NOW + timedelta(minutes=1, seconds=5)
    harness.reconcile()
    assert gc_status(harness)["phase"] == "ReadOnly"
    # Now the registry cannot roll at all (its HTTP secret was replaced by a foreign one).
    harness.api.put(
        SECRETS,
        {"metadata": {"name": "imageregistry-registry-http-secret", "namespace": NAMESPACE}, "data": {}},
    )
    harness.now += timedelta(minutes=16)
    harness.reconcile()
    assert harness.condition("Ready")["status"] == "False"
    run = gc_status(harness)["lastRun"]
    assert run["result"] == "Failed" and "did not become read-only" in run["message"]
