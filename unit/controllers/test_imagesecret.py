"""The ImagePushSecret / ImagePullSecret reconciler against in-memory caches and a fake API server.

The fake keeps resourceVersions, uids and creation times like the apiserver and enforces the same
preconditions (resourceVersion on PUT and apply, uid on DELETE, AlreadyExists on POST). The caches
are plain `Store`s the tests fill from the fake — or deliberately leave stale, which is how the
"exactly one rotation per trigger" guarantee is tested. Real apiserver behaviour is covered by
e2e/controllers/test_imagesecret*.py.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog

from registry_operator.api import constants as c
from registry_operator.api.names import is_label_value, label_value
from registry_operator.config import Settings, load_settings
from registry_operator.controllers.imagesecret import (
    CR_OWNER_INDEX,
    CR_REGISTRY_INDEX,
    REGISTRY_TLS_SECRET_INDEX,
    ImageSecretReconciler,
    account_mapper,
    registry_mapper,
    tls_secret_mapper,
)
from registry_operator.controllers.imagesecret_desired import (
    PULL,
    PUSH,
    ImageSecretKind,
    account_owner_labels,
    cr_owner_index,
    registry_index,
    registry_tls_secret_index,
)
from registry_operator.controllers.resources import (
    IMAGE_PULL_SECRETS,
    IMAGE_PUSH_SECRETS,
    IMAGE_REGISTRIES,
    IMAGE_REGISTRY_ACCOUNTS,
    SECRETS,
)
from registry_operator.dockerconfig import parse_docker_config
from registry_operator.kube.cache import Store, json_copy
from registry_operator.kube.client import Client
from registry_operator.kube.controller import ReconcileError, Request
from registry_operator.kube.errors import AlreadyExists, ApiError, Conflict, NotFound
from registry_operator.kube.metrics import REGISTRY, sample_value
from registry_operator.kube.resources import Resource
from registry_operator.passwords import HashScheme, hash_scheme, verify_password

Object = dict[str, Any]
NS = "team"
REGISTRY_NS = "infra"
START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
CA1 = "-----BEGIN CERTIFICATE-----\nCA-ONE\n-----END CERTIFICATE-----\n"
CA2 = "-----BEGIN CERTIFICATE-----\nCA-TWO\n-----END CERTIFICATE-----\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def plain(secret: Mapping[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(current: Any, desired: Any) -> Any:
    """Server-side apply, simplified: maps merge, owner references merge by uid, other lists replace."""
    if isinstance(current, dict) and isinstance(desired, dict):
        merged = dict(current)
        for key, value in desired.items():
            if key == "ownerReferences" and isinstance(value, list):
                by_uid = {ref["uid"]: ref for ref in current.get(key) or []}
                by_uid.update({ref["uid"]: ref for ref in value})
                merged[key] = list(by_uid.values())
            else:
                merged[key] = _merge(current.get(key), value)
        return merged
    return copy.deepcopy(desired)


@dataclass
class Call:
    method: str
    plural: str
    namespace: str
    name: str
    subresource: str | None = None


class FakeApi(Client):
    """An in-memory apiserver for the few verbs the reconciler uses."""

    def __init__(self, clock: Clock) -> None:  # no super().__init__: there is no server
        self.clock = clock
        self.objects: dict[tuple[str, str, str], Object] = {}
        self.calls: list[Call] = []
        self.fail: dict[tuple[str, str], ApiError] = {}
        # What the Kubernetes 1.16 libraries did with an invalid selector (bug B1): match everything.
        self.selectors_match_everything = False
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)

    # --- helpers for tests -----------------------------------------------------------------------
    def put(self, resource: Resource, obj: Object) -> Object:
        """Create an object directly (as a user or another controller would)."""
        return self._store_new(resource, copy.deepcopy(obj))

    def items(self, resource: Resource, namespace: str | None = None) -> list[Object]:
        return [
            copy.deepcopy(obj)
            for (plural, ns, _), obj in sorted(self.objects.items())
            if plural == resource.plural and (namespace is None or ns == namespace)
        ]

    def obj(self, resource: Resource, namespace: str, name: str) -> Object:
        return copy.deepcopy(self.objects[(resource.plural, namespace, name)])

    def writes(self) -> list[Call]:
        return [call for call in self.calls if call.method not in ("GET", "LIST")]

    def _check_fail(self, method: str, resource: Resource) -> None:
        error = self.fail.pop((method, resource.plural), None)
        if error is not None:
            raise error

    def _store_new(self, resource: Resource, obj: Object) -> Object:
        metadata = obj.setdefault("metadata", {})
        key = (resource.plural, metadata.get("namespace", ""), metadata["name"])
        if key in self.objects:
            raise AlreadyExists(
                409, "AlreadyExists", f'{resource.plural} "{metadata["name"]}" already exists'
            )
        obj.setdefault("apiVersion", resource.api_version)
        obj.setdefault("kind", resource.kind)
        metadata["uid"] = f"uid-{next(self._uids)}"
        metadata["resourceVersion"] = str(next(self._versions))
        metadata["creationTimestamp"] = _time(self.clock.now)
        metadata["generation"] = 1
        metadata.pop("deletionTimestamp", None)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def _existing(self, resource: Resource, namespace: str, name: str) -> Object:
        try:
            return self.objects[(resource.plural, namespace, name)]
        except KeyError:
            raise NotFound(404, "NotFound", f'{resource.plural} "{name}" not found') from None

    def _check_version(self, existing: Object, body: Mapping[str, Any]) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != existing["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "the object has been modified")

    def _bump(self, obj: Object) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._versions))

    # --- Client API ------------------------------------------------------------------------------
    def get(self, resource: Resource, name: str, namespace: str | None = None, **_: Any) -> Object:
        self.calls.append(Call("GET", resource.plural, namespace or "", name))
        return copy.deepcopy(self._existing(resource, namespace or "", name))

    def list(self, resource: Resource, namespace: str | None = None, **kwargs: Any) -> Object:
        self.calls.append(Call("LIST", resource.plural, namespace or "", ""))
        selector = kwargs.get("label_selector") or ""
        wanted = dict(part.split("=", 1) for part in selector.split(",") if part)
        if self.selectors_match_everything:
            wanted = {}
        items = [
            obj
            for obj in self.items(resource, namespace)
            if all((obj["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]
        return {"items": items, "metadata": {"resourceVersion": "0"}}

    def create(
        self, resource: Resource, obj: Mapping[str, Any], namespace: str | None = None, **_: Any
    ) -> Object:
        body = copy.deepcopy(dict(obj))
        if namespace:
            body.setdefault("metadata", {})["namespace"] = namespace
        self.calls.append(
            Call("POST", resource.plural, body["metadata"].get("namespace", ""), body["metadata"]["name"])
        )
        self._check_fail("POST", resource)
        return self._store_new(resource, body)

    def update(
        self, resource: Resource, obj: Mapping[str, Any], *, subresource: str | None = None, **_: Any
    ) -> Object:
        metadata = obj["metadata"]
        self.calls.append(
            Call("PUT", resource.plural, metadata.get("namespace", ""), metadata["name"], subresource)
        )
        self._check_fail("PUT" if subresource is None else f"PUT/{subresource}", resource)
        existing = self._existing(resource, metadata.get("namespace", ""), metadata["name"])
        self._check_version(existing, obj)
        if subresource == "status":
            existing["status"] = copy.deepcopy(obj.get("status"))
        else:
            if existing.get("spec") != obj.get("spec"):
                existing["metadata"]["generation"] += 1
            for key in ("labels", "annotations", "finalizers", "ownerReferences"):
                if key in metadata:
                    existing["metadata"][key] = copy.deepcopy(metadata[key])
                else:
                    existing["metadata"].pop(key, None)
            existing["spec"] = copy.deepcopy(obj.get("spec"))
            if existing["metadata"].get("deletionTimestamp") and not existing["metadata"].get("finalizers"):
                del self.objects[(resource.plural, metadata.get("namespace", ""), metadata["name"])]
                return copy.deepcopy(existing)
        self._bump(existing)
        return copy.deepcopy(existing)

    def update_status(self, resource: Resource, obj: Mapping[str, Any], **kwargs: Any) -> Object:
        return self.update(resource, obj, subresource="status")

    def apply(self, resource: Resource, obj: Mapping[str, Any], **_: Any) -> Object:
        metadata = obj["metadata"]
        self.calls.append(Call("APPLY", resource.plural, metadata["namespace"], metadata["name"]))
        self._check_fail("APPLY", resource)
        key = (resource.plural, metadata["namespace"], metadata["name"])
        if key not in self.objects:
            if metadata.get("resourceVersion"):
                raise NotFound(404, "NotFound", "not found")
            return self._store_new(resource, copy.deepcopy(dict(obj)))
        existing = self.objects[key]
        self._check_version(existing, obj)
        desired = copy.deepcopy(dict(obj))
        desired["metadata"].pop("resourceVersion", None)
        if existing.get("type") is not None and desired.get("type") not in (None, existing.get("type")):
            raise ApiError(422, "Invalid", "type: field is immutable")
        merged = _merge(existing, desired)
        if merged != existing:
            self.objects[key] = merged
            self._bump(merged)
        return copy.deepcopy(self.objects[key])

    def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        uid: str | None = None,
        missing_ok: bool = False,
        **_: Any,
    ) -> Object | None:
        self.calls.append(Call("DELETE", resource.plural, namespace or "", name))
        key = (resource.plural, namespace or "", name)
        existing = self.objects.get(key)
        if existing is None:
            if missing_ok:
                return None
            raise NotFound(404, "NotFound", "not found")
        if uid and existing["metadata"]["uid"] != uid:
            raise Conflict(409, "Conflict", "Precondition failed: UID in precondition")
        if existing["metadata"].get("finalizers"):
            existing["metadata"]["deletionTimestamp"] = _time(self.clock.now)
            self._bump(existing)
        else:
            del self.objects[key]
        return copy.deepcopy(existing)


@dataclass
class Clock:
    now: datetime = START

    def advance(self, **kwargs: float) -> None:
        self.now = self.now + timedelta(**kwargs)


@dataclass
class Events:
    recorded: list[tuple[str, str, str, str]] = field(default_factory=list)

    def normal(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.recorded.append(("Normal", obj["metadata"]["name"], reason, message))

    def warning(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.recorded.append(("Warning", obj["metadata"]["name"], reason, message))

    def reasons(self) -> list[str]:
        return [reason for _, _, reason, _ in self.recorded]


def settings(**env: str) -> Settings:
    return load_settings({"POD_NAMESPACE": "registry-operator", **env})


class Harness:
    """A fake API, caches for every informer the reconciler reads, and one reconciler per kind."""

    def __init__(self, config: Settings | None = None) -> None:
        self.settings = config or settings()
        self.clock = Clock()
        self.api = FakeApi(self.clock)
        self.events = Events()
        index = registry_index(self.settings)
        self.stores: dict[str, Store] = {
            IMAGE_PUSH_SECRETS.plural: Store({CR_REGISTRY_INDEX: index, CR_OWNER_INDEX: cr_owner_index}),
            IMAGE_PULL_SECRETS.plural: Store({CR_REGISTRY_INDEX: index, CR_OWNER_INDEX: cr_owner_index}),
            IMAGE_REGISTRIES.plural: Store({REGISTRY_TLS_SECRET_INDEX: registry_tls_secret_index}),
            SECRETS.plural: Store(),
            IMAGE_REGISTRY_ACCOUNTS.plural: Store(),
        }
        self.reconcilers = {kind.kind: self._reconciler(kind) for kind in (PUSH, PULL)}

    def _reconciler(self, kind: ImageSecretKind) -> ImageSecretReconciler:
        return ImageSecretReconciler(
            kind,
            self.api,
            self.settings,
            crs=self.stores[kind.resource.plural],
            registries=self.stores[IMAGE_REGISTRIES.plural],
            secrets=self.stores[SECRETS.plural],
            accounts=self.stores[IMAGE_REGISTRY_ACCOUNTS.plural],
            events=self.events,
            now=lambda: self.clock.now,
        )

    def sync(self, *resources: Resource) -> None:
        """Let the caches catch up with the API (all of them, or only those named)."""
        for resource in resources or (
            IMAGE_PUSH_SECRETS,
            IMAGE_PULL_SECRETS,
            IMAGE_REGISTRIES,
            SECRETS,
            IMAGE_REGISTRY_ACCOUNTS,
        ):
            self.stores[resource.plural].replace(self.api.items(resource))

    def reconcile(self, kind: ImageSecretKind, name: str = "example", namespace: str = NS) -> float | None:
        result = self.reconcilers[kind.kind].reconcile(Request(namespace, name))
        return None if result is None else result.requeue_after

    def converge(
        self, kind: ImageSecretKind, name: str = "example", namespace: str = NS, passes: int = 4
    ) -> None:
        """Reconcile with synced caches until nothing is written any more."""
        for _ in range(passes):
            self.sync()
            before = len(self.api.writes())
            self.reconcile(kind, name, namespace)
            if len(self.api.writes()) == before:
                return
        raise AssertionError("the reconciler kept writing")

    # --- objects ---------------------------------------------------------------------------------
    def add_registry(
        self,
        name: str = "registry",
        namespace: str = REGISTRY_NS,
        *,
        ready: bool = True,
        reason: str = "Available",
        ca: str = CA1,
        tls_secret: bool = True,
        hostname: str | None = None,
        password_schemes: tuple[str, ...] = ("bcrypt", "sha256-salted-v1"),
    ) -> None:
        tls_name = f"imageregistry-{name}-selfsigned-tls"
        self.api.put(
            IMAGE_REGISTRIES,
            {
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"persistentVolumeClaim": {}},
                "status": {
                    "hostname": hostname or f"{name}.{namespace}.svc.cluster.local",
                    "tlsSecretName": tls_name,
                    "passwordSchemes": list(password_schemes),
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True" if ready else "False",
                            "reason": reason,
                            "message": "" if ready else "pods are rolling out",
                            "lastTransitionTime": _time(START),
                        }
                    ],
                },
            },
        )
        if tls_secret:
            self.api.put(
                SECRETS,
                {
                    "metadata": {"name": tls_name, "namespace": namespace},
                    "type": "kubernetes.io/tls",
                    "data": {"ca.crt": b64(ca), "tls.crt": b64("CRT"), "tls.key": b64("KEY")},
                },
            )

    def add_cr(
        self,
        kind: ImageSecretKind,
        name: str = "example",
        namespace: str = NS,
        *,
        registry_ref: Object | None = None,
        annotations: dict[str, str] | None = None,
    ) -> Object:
        ref = {"name": "registry", "namespace": REGISTRY_NS} if registry_ref is None else registry_ref
        metadata: Object = {"name": name, "namespace": namespace}
        if annotations:
            metadata["annotations"] = annotations
        return self.api.put(
            kind.resource, {"metadata": metadata, "spec": {"registryRef": ref} if ref else {}}
        )

    def cr(self, kind: ImageSecretKind, name: str = "example", namespace: str = NS) -> Object:
        return self.api.obj(kind.resource, namespace, name)

    def secret(self, kind: ImageSecretKind, name: str = "example", namespace: str = NS) -> Object:
        return self.api.obj(SECRETS, namespace, kind.secret_name(name))

    def accounts(self, namespace: str = REGISTRY_NS) -> list[str]:
        return [obj["metadata"]["name"] for obj in self.api.items(IMAGE_REGISTRY_ACCOUNTS, namespace)]

    def ready(self, kind: ImageSecretKind, name: str = "example") -> Object:
        conditions = self.cr(kind, name).get("status", {}).get("conditions") or []
        return next(cond for cond in conditions if cond["type"] == "Ready")


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.add_registry()
    return harness


def kinds() -> list[Any]:
    return [pytest.param(kind, id=kind.mode) for kind in (PUSH, PULL)]


# --- the first credential --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", kinds())
def test_first_pass_adds_the_finalizer_then_issues_with_one_status_write(
    h: Harness, kind: ImageSecretKind
) -> None:
    h.add_cr(kind)
    h.sync()
    rotations_before = sample_value("registry_operator_rotations_total", {"kind": kind.kind})

    requeue = h.reconcile(kind)

    writes = [(call.method, call.plural, call.subresource) for call in h.api.writes()]
    assert writes == [
        # The conditional finalizer PUT proves the CR current, so rotation 1 needs no claim of its own.
        ("PUT", kind.resource.plural, None),
        ("POST", "imageregistryaccounts", None),
        ("APPLY", "secrets", None),
        ("PUT", kind.resource.plural, "status"),  # rotation 1, Ready, exact expiry
    ]
    cr = h.cr(kind)
    assert cr["metadata"]["finalizers"] == [c.FINALIZER_ACCOUNTS]
    status = cr["status"]
    assert status["rotation"] == 1
    assert status["rotationDate"] == _time(START)
    assert status["registry"] == {
        "name": "registry",
        "namespace": REGISTRY_NS,
        "hostname": "registry.infra.svc.cluster.local",
    }
    assert status["currentExpiryTime"] == _time(START + timedelta(hours=24))
    assert "previousExpiryTime" not in status
    assert h.ready(kind)["status"] == "True"
    assert h.ready(kind)["reason"] == c.REASON_AVAILABLE
    assert status["observedGeneration"] == cr["metadata"]["generation"]
    # Rotation at half the TTL (plus a little slack).
    assert requeue == pytest.approx(12 * 3600 + 0.5)
    assert sample_value("registry_operator_rotations_total", {"kind": kind.kind}) == rotations_before + 1
    assert (
        sample_value(
            "registry_operator_credential_expiry_timestamp_seconds",
            {"namespace": NS, "name": "example", "kind": kind.kind},
        )
        == (START + timedelta(hours=24)).timestamp()
    )
    assert h.events.reasons() == ["Rotated"]


@pytest.mark.parametrize("kind", kinds())
def test_first_credential_of_a_cr_that_already_has_the_finalizer_is_claimed_first(
    kind: ImageSecretKind,
) -> None:
    h = Harness()
    h.add_registry(ready=False)
    h.add_cr(kind)
    h.converge(kind)  # finalizer added, Ready=False: no credential yet
    registry = h.api.obj(IMAGE_REGISTRIES, REGISTRY_NS, "registry")
    registry["status"]["conditions"][0].update(status="True", reason="Available", message="")
    h.api.objects[(IMAGE_REGISTRIES.plural, REGISTRY_NS, "registry")] = registry
    h.sync()
    writes = len(h.api.writes())

    h.reconcile(kind)

    assert [(call.method, call.plural, call.subresource) for call in h.api.writes()[writes:]] == [
        ("PUT", kind.resource.plural, "status"),  # rotation 1 claimed: this pass did not write the CR
        ("POST", "imageregistryaccounts", None),
        ("APPLY", "secrets", None),
        ("PUT", kind.resource.plural, "status"),
    ]
    assert h.accounts() == [f"{kind.mode}.{NS}.example.1"]


@pytest.mark.parametrize("kind", kinds())
def test_a_pass_with_the_cr_as_the_finalizer_write_left_it_issues_nothing(
    h: Harness, kind: ImageSecretKind
) -> None:
    h.add_cr(kind)
    h.sync()
    h.reconcile(kind)
    h.sync()
    # The CR cache still holds the CR as the finalizer PUT returned it: finalizer, no status yet.
    stale = json_copy(h.api.obj(kind.resource, NS, "example"))
    del stale["status"]
    stale["metadata"]["resourceVersion"] = "1"
    h.stores[kind.resource.plural].upsert(stale)
    writes = len(h.api.writes())

    with pytest.raises(Conflict):
        h.reconcile(kind)

    assert [(w.method, w.subresource) for w in h.api.writes()[writes:]] == [("PUT", "status")]
    assert h.accounts() == [f"{kind.mode}.{NS}.example.1"]
    assert h.cr(kind)["status"]["rotation"] == 1


@pytest.mark.parametrize("kind", kinds())
def test_account_carries_owner_labels_acl_labels_ttl_and_a_fast_salted_hash_of_the_secret_password(
    h: Harness, kind: ImageSecretKind
) -> None:
    h.add_cr(kind)
    h.sync()
    h.reconcile(kind)

    account_name = f"{kind.mode}.{NS}.example.1"
    assert h.accounts() == [account_name]
    account = h.api.obj(IMAGE_REGISTRY_ACCOUNTS, REGISTRY_NS, account_name)
    assert account["metadata"]["labels"] == {kind.account_label_key: "example", c.LABEL_SECRET_NAMESPACE: NS}
    assert account["spec"]["labels"] == {"namespace": [NS], "name": ["example"], "accessMode": [kind.mode]}
    assert account["spec"]["ttl"] == "24h0m0s"
    data = plain(h.secret(kind))
    assert data["username"] == account_name
    assert verify_password(data["password"], account["spec"]["password"])
    assert hash_scheme(account["spec"]["password"]) is HashScheme.SALTED_SHA256_V1
    assert len(data["password"]) >= 22  # >= 128 bits from a 62-character alphabet


def test_bcrypt_while_some_registry_pod_may_run_a_sidecar_without_the_fast_hash() -> None:
    """An upgrade: the registry's pods have not all rolled to this sidecar (no passwordSchemes yet)."""
    h = Harness()
    h.add_registry(password_schemes=())
    kind = PULL
    h.add_cr(kind)
    h.sync()
    h.reconcile(kind)
    account = h.api.obj(IMAGE_REGISTRY_ACCOUNTS, REGISTRY_NS, f"{kind.mode}.{NS}.example.1")
    assert hash_scheme(account["spec"]["password"]) is HashScheme.BCRYPT
    assert verify_password(plain(h.secret(kind))["password"], account["spec"]["password"])


@pytest.mark.parametrize("kind", kinds())
def test_secret_format(h: Harness, kind: ImageSecretKind) -> None:
    h.add_cr(kind)
    h.sync()
    h.reconcile(kind)

    secret = h.secret(kind)
    data = plain(secret)
    assert secret["type"] == ("Opaque" if kind is PUSH else "kubernetes.io/dockerconfigjson")
    assert secret["metadata"]["annotations"] == {c.ANNOTATION_ROTATION: "1"}
    cr = h.cr(kind)
    assert secret["metadata"]["ownerReferences"] == [
        {
            "apiVersion": cr["apiVersion"],
            "kind": kind.kind,
            "name": "example",
            "uid": cr["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert data["registry"] == "registry.infra.svc.cluster.local"
    assert data["ca.crt"] == CA1
    auths = parse_docker_config(data[".dockerconfigjson"])
    assert list(auths) == ["registry.infra.svc.cluster.local"]
    assert auths["registry.infra.svc.cluster.local"] == (data["username"], data["password"])
    if kind is PUSH:
        assert data["config.json"] == data[".dockerconfigjson"]
        assert set(data) == {"registry", "ca.crt", "username", "password", ".dockerconfigjson", "config.json"}
    else:
        assert set(data) == {"registry", "ca.crt", "username", "password", ".dockerconfigjson"}


@pytest.mark.parametrize("kind", kinds())
def test_steady_state_writes_nothing_and_requeues_for_the_rotation_time(
    h: Harness, kind: ImageSecretKind
) -> None:
    h.add_cr(kind)
    h.converge(kind)
    h.sync()
    h.clock.advance(hours=3)
    before = list(h.api.calls)

    requeue = h.reconcile(kind)

    assert h.api.calls == before  # not even a GET: everything came from the caches
    assert requeue == pytest.approx(9 * 3600 + 0.5)


# --- exactly one rotation per trigger ----------------------------------------------------------------


@pytest.mark.parametrize("kind", kinds())
def test_a_pass_working_from_a_stale_cr_cannot_rotate_a_second_time(
    h: Harness, kind: ImageSecretKind
) -> None:
    h.add_cr(kind)
    h.sync()
    h.reconcile(kind)
    # Everything but the CR cache has caught up: the CR still looks brand new (no status, no finalizer).
    h.sync(IMAGE_REGISTRIES, SECRETS, IMAGE_REGISTRY_ACCOUNTS)

    with pytest.raises(Conflict):
        h.reconcile(kind)

    assert h.accounts() == [f"{kind.mode}.{NS}.example.1"]
    assert h.cr(kind)["status"]["rotation"] == 1


@pytest.mark.parametrize("kind", kinds())
def test_a_pass_with_a_stale_status_fails_at_the_status_write_before_creating_anything(
    h: Harness, kind: ImageSecretKind
) -> None:
    h.add_cr(kind)
    h.converge(kind)
    stale_cr = json_copy(h.stores[kind.resource.plural].get_by_name(NS, "example"))
    h.clock.advance(hours=12, seconds=1)  # rotation due
    h.reconcile(kind)
    assert h.accounts() == [f"{kind.mode}.{NS}.example.1", f"{kind.mode}.{NS}.example.2"]
    # A second pass with the CR as it was before the rotation (the watch event is still on its way).
    h.sync()
    h.stores[kind.resource.plural].upsert(stale_cr)
    writes = len(h.api.writes())

    with pytest.raises(Conflict):
        h.reconcile(kind)

    assert [(w.method, w.subresource) for w in h.api.writes()[writes:]] == [("PUT", "status")]
    assert h.accounts() == [f"{kind.mode}.{NS}.example.1", f"{kind.mode}.{NS}.example.2"]


@pytest.mark.parametrize("kind", kinds())
def test_account_and_secret_missing_from_a_lagging_cache_are_looked_up_not_reissued(
    h: Harness, kind: ImageSecretKind
) -> None:
    h.add_cr(kind)
    h.sync()
    h.reconcile(kind)
    # The CR cache saw the last status write, the account and secret caches saw nothing yet.
    h.sync(kind.resource)
    writes = len(h.api.writes())

    h.reconcile(kind)

    assert len(h.api.writes()) == writes
    gets = [(call.plural, call.name) for call in h.api.calls if call.method == "GET"]
    assert gets == [
        ("imageregistryaccounts", f"{kind.mode}.{NS}.example.1"),
        ("secrets", kind.secret_name("example")),
    ]
    assert h.accounts() == [f"{kind.mode}.{NS}.example.1"]


@pytest.mark.parametrize("kind", kinds())
def test_rotation_at_half_the_ttl_issues_exactly_one_new_credential(
    h: Harness, kind: ImageSecretKind
) -> None:
    h.add_cr(kind)
    h.converge(kind)
    first = plain(h.secret(kind))
    h.clock.advance(hours=11, minutes=59)
    h.converge(kind)
    assert h.cr(kind)["status"]["rotation"] == 1

    h.clock.advance(minutes=1)
    h.converge(kind)

    status = h.cr(kind)["status"]
    assert status["rotation"] == 2
    assert status["rotationDate"] == _time(START + timedelta(hours=12))
    assert status["previousExpiryTime"] == _time(START + timedelta(hours=24))
    assert status["currentExpiryTime"] == _time(START + timedelta(hours=36))
    assert h.accounts() == [f"{kind.mode}.{NS}.example.1", f"{kind.mode}.{NS}.example.2"]
    second = plain(h.secret(kind))
    assert second["username"] == f"{kind.mode}.{NS}.example.2"
    assert second["password"] != first["password"]
    assert h.secret(kind)["metadata"]["annotations"][c.ANNOTATION_ROTATION] == "2"


@pytest.mark.parametrize("kind", kinds())
def test_rotate_now_annotation_rotates_once_per_new_value(h: Harness, kind: ImageSecretKind) -> None:
    h.add_cr(kind)
    h.converge(kind)

    def request_rotation(value: str) -> None:
        cr = h.cr(kind)
        cr["metadata"].setdefault("annotations", {})[c.ANNOTATION_ROTATE] = value
        h.api.update(kind.resource, cr)

    request_rotation("2026-03-01T12:00")
    h.converge(kind)
    assert h.cr(kind)["status"]["rotation"] == 2
    assert h.cr(kind)["status"]["rotateRequest"] == "2026-03-01T12:00"
    h.converge(kind)  # the same value again: handled already
    assert h.cr(kind)["status"]["rotation"] == 2

    request_rotation("again")
    h.converge(kind)
    assert h.cr(kind)["status"]["rotation"] == 3
    assert len(h.accounts()) == 3


def cut_rotate_now(h: Harness, kind: ImageSecretKind, cut: tuple[str, str]) -> None:
    """A converged CR gets a rotate-now; the pass that claims rotation #2 loses the `cut` request."""
    h.add_cr(kind)
    h.converge(kind)
    cr = h.cr(kind)
    cr["metadata"].setdefault("annotations", {})[c.ANNOTATION_ROTATE] = "now"
    h.api.update(kind.resource, cr)
    h.sync()
    h.api.fail[cut] = ApiError(503, "ServiceUnavailable", "cut")
    with pytest.raises(ReconcileError):
        h.reconcile(kind)


@pytest.mark.parametrize("kind", kinds())
def test_a_rotation_cut_before_its_account_was_created_is_finished_not_repeated(
    h: Harness, kind: ImageSecretKind
) -> None:
    cut_rotate_now(h, kind, ("POST", IMAGE_REGISTRY_ACCOUNTS.plural))
    assert h.cr(kind)["status"]["rotation"] == 2  # claimed, but no account #2 yet

    h.converge(kind)

    assert h.cr(kind)["status"]["rotation"] == 2
    assert h.accounts() == [f"{kind.mode}.{NS}.example.1", f"{kind.mode}.{NS}.example.2"]
    secret = plain(h.secret(kind))
    assert secret["username"] == f"{kind.mode}.{NS}.example.2"
    assert h.ready(kind)["status"] == "True"


@pytest.mark.parametrize("kind", kinds())
def test_a_rotation_cut_before_its_secret_was_written_is_finished_with_the_same_account(
    h: Harness, kind: ImageSecretKind
) -> None:
    cut_rotate_now(h, kind, ("APPLY", SECRETS.plural))
    assert plain(h.secret(kind))["username"] == f"{kind.mode}.{NS}.example.1"  # account #2 exists

    h.converge(kind)

    assert h.cr(kind)["status"]["rotation"] == 2
    assert h.accounts() == [f"{kind.mode}.{NS}.example.1", f"{kind.mode}.{NS}.example.2"]
    secret = plain(h.secret(kind))
    assert secret["username"] == f"{kind.mode}.{NS}.example.2"
    account = h.api.obj(IMAGE_REGISTRY_ACCOUNTS, REGISTRY_NS, f"{kind.mode}.{NS}.example.2")
    assert verify_password(secret["password"], account["spec"]["password"])


@pytest.mark.parametrize("kind", kinds())
def test_a_first_rotation_cut_before_its_secret_was_written_is_finished_with_the_same_account(
    h: Harness, kind: ImageSecretKind
) -> None:
    """Found by the fault suite (a kube-apiserver restart): account #1 exists, no Secret was ever
    written, the CR was never Ready. Finished as #1, not rotated to #2."""
    h.add_cr(kind)
    h.api.fail[("APPLY", SECRETS.plural)] = ApiError(503, "ServiceUnavailable", "cut")
    with pytest.raises(ReconcileError):
        for _ in range(4):
            h.sync()
            h.reconcile(kind)
    assert h.accounts() == [f"{kind.mode}.{NS}.example.1"]

    h.converge(kind)

    assert h.cr(kind)["status"]["rotation"] == 1
    assert h.accounts() == [f"{kind.mode}.{NS}.example.1"]
    secret = plain(h.secret(kind))
    account = h.api.obj(IMAGE_REGISTRY_ACCOUNTS, REGISTRY_NS, f"{kind.mode}.{NS}.example.1")
    assert secret["username"] == f"{kind.mode}.{NS}.example.1"
    assert verify_password(secret["password"], account["spec"]["password"])
    assert h.ready(kind)["status"] == "True"


def test_an_annotation_present_at_creation_is_handled_by_the_first_credential(h: Harness) -> None:
    h.add_cr(PUSH, annotations={c.ANNOTATION_ROTATE: "x"})
    h.converge(PUSH)
    assert h.cr(PUSH)["status"]["rotation"] == 1
    assert h.cr(PUSH)["status"]["rotateRequest"] == "x"


@pytest.mark.parametrize("kind", kinds())
def test_secret_without_the_rotation_annotation_gets_exactly_one_new_credential(
    h: Harness, kind: ImageSecretKind
) -> None:
    h.add_cr(kind)
    h.converge(kind)
    secret = h.secret(kind)
    secret["metadata"]["annotations"] = {"someannotation": "someval"}
    h.api.objects[(SECRETS.plural, NS, kind.secret_name("example"))] = secret

    h.converge(kind)
    h.converge(kind)

    assert h.cr(kind)["status"]["rotation"] == 2
    assert len(h.accounts()) == 2


@pytest.mark.parametrize("kind", kinds())
def test_unrelated_secret_change_does_not_rotate(h: Harness, kind: ImageSecretKind) -> None:
    h.add_cr(kind)
    h.converge(kind)
    secret = h.secret(kind)
    secret["metadata"]["annotations"]["someannotation"] = "someval"
    h.api.objects[(SECRETS.plural, NS, kind.secret_name("example"))] = secret
    h.sync()
    writes = len(h.api.writes())

    h.reconcile(kind)

    assert len(h.api.writes()) == writes
    assert h.cr(kind)["status"]["rotation"] == 1


@pytest.mark.parametrize("kind", kinds())
def test_deleted_secret_or_account_gets_exactly_one_new_credential(h: Harness, kind: ImageSecretKind) -> None:
    h.add_cr(kind)
    h.converge(kind)
    h.api.delete(SECRETS, kind.secret_name("example"), NS)
    h.converge(kind)
    assert h.cr(kind)["status"]["rotation"] == 2

    h.api.delete(IMAGE_REGISTRY_ACCOUNTS, f"{kind.mode}.{NS}.example.2", REGISTRY_NS)
    h.converge(kind)
    assert h.cr(kind)["status"]["rotation"] == 3
    assert h.accounts() == [f"{kind.mode}.{NS}.example.1", f"{kind.mode}.{NS}.example.3"]


# --- registry changes --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", kinds())
def test_new_ca_and_hostname_reach_the_secret_without_a_new_credential(
    h: Harness, kind: ImageSecretKind
) -> None:
    h.add_cr(kind)
    h.converge(kind)
    password = plain(h.secret(kind))["password"]
    tls = h.api.obj(SECRETS, REGISTRY_NS, "imageregistry-registry-selfsigned-tls")
    tls["data"]["ca.crt"] = b64(CA2)
    h.api.objects[(SECRETS.plural, REGISTRY_NS, tls["metadata"]["name"])] = tls
    registry = h.api.obj(IMAGE_REGISTRIES, REGISTRY_NS, "registry")
    registry["status"]["hostname"] = "registry.example.org"
    h.api.objects[(IMAGE_REGISTRIES.plural, REGISTRY_NS, "registry")] = registry
    h.sync()
    writes = len(h.api.writes())

    h.reconcile(kind)

    applies = [call for call in h.api.writes()[writes:] if call.method == "APPLY"]
    assert len(applies) == 1
    data = plain(h.secret(kind))
    assert data["ca.crt"] == CA2
    assert data["registry"] == "registry.example.org"
    assert list(parse_docker_config(data[".dockerconfigjson"])) == ["registry.example.org"]
    assert data["password"] == password
    assert h.cr(kind)["status"]["rotation"] == 1
    assert h.cr(kind)["status"]["registry"]["hostname"] == "registry.example.org"
    assert len(h.accounts()) == 1


def test_secret_rewrite_is_conditional_on_the_cached_resource_version(h: Harness) -> None:
    h.add_cr(PUSH)
    h.converge(PUSH)
    tls = h.api.obj(SECRETS, REGISTRY_NS, "imageregistry-registry-selfsigned-tls")
    tls["data"]["ca.crt"] = b64(CA2)
    h.api.objects[(SECRETS.plural, REGISTRY_NS, tls["metadata"]["name"])] = tls
    h.sync()
    # Someone changes the Secret after the cache saw it.
    secret = h.secret(PUSH)
    secret["metadata"]["labels"] = {"touched": "yes"}
    h.api.update(SECRETS, secret)

    with pytest.raises(Conflict):
        h.reconcile(PUSH)
    h.converge(PUSH)
    assert plain(h.secret(PUSH))["ca.crt"] == CA2
    assert h.cr(PUSH)["status"]["rotation"] == 1


def test_a_password_the_account_rejects_is_replaced_by_a_new_credential(h: Harness) -> None:
    h.add_cr(PUSH)
    h.converge(PUSH)
    secret = h.secret(PUSH)
    secret["data"]["password"] = b64("edited-by-hand")
    h.api.objects[(SECRETS.plural, NS, PUSH.secret_name("example"))] = secret

    h.converge(PUSH)

    assert h.cr(PUSH)["status"]["rotation"] == 2
    data = plain(h.secret(PUSH))
    account = h.api.obj(IMAGE_REGISTRY_ACCOUNTS, REGISTRY_NS, data["username"])
    assert verify_password(data["password"], account["spec"]["password"])


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        pytest.param(lambda h: None, "ImageRegistry infra/registry not found", id="missing"),
        pytest.param(
            lambda h: h.add_registry(ready=False, reason="Updating"),
            "ImageRegistry infra/registry is not Ready: Updating: pods are rolling out",
            id="not-ready",
        ),
        pytest.param(
            lambda h: h.add_registry(tls_secret=False),
            "TLS secret infra/imageregistry-registry-selfsigned-tls"
            " of ImageRegistry infra/registry not found",
            id="no-tls-secret",
        ),
    ],
)
def test_unusable_registry_makes_the_cr_not_ready_with_a_message_saying_why(setup: Any, message: str) -> None:
    h = Harness()
    setup(h)
    h.add_cr(PULL)
    h.sync()

    assert h.reconcile(PULL) is None

    ready = h.ready(PULL)
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "RegistryUnavailable", message)
    assert h.events.recorded == [("Warning", "example", "RegistryUnavailable", message)]
    assert h.accounts() == []
    # Nothing changed: no second write, no second event.
    h.sync()
    writes = len(h.api.writes())
    h.reconcile(PULL)
    assert len(h.api.writes()) == writes
    assert len(h.events.recorded) == 1


def test_registry_outside_the_watched_namespace_is_reported_as_such() -> None:
    h = Harness(settings(WATCH_NAMESPACE=NS))
    h.add_registry()
    h.add_cr(PULL)
    h.sync()
    h.reconcile(PULL)
    assert h.ready(PULL)["message"] == (
        "ImageRegistry infra/registry is outside the namespace the operator watches (team)"
    )


def test_registry_becoming_usable_brings_the_cr_to_ready() -> None:
    h = Harness()
    h.add_registry(ready=False)
    h.add_cr(PULL)
    h.converge(PULL)
    assert h.ready(PULL)["status"] == "False"
    registry = h.api.obj(IMAGE_REGISTRIES, REGISTRY_NS, "registry")
    registry["status"]["conditions"][0].update(status="True", reason="Available", message="")
    h.api.objects[(IMAGE_REGISTRIES.plural, REGISTRY_NS, "registry")] = registry

    h.converge(PULL)

    assert h.ready(PULL)["status"] == "True"
    assert h.cr(PULL)["status"]["rotation"] == 1


def test_default_registry_and_namespace_defaulting() -> None:
    h = Harness(
        settings(OPERATOR_DEFAULT_REGISTRY_NAME="shared", OPERATOR_DEFAULT_REGISTRY_NAMESPACE="infra")
    )
    h.add_registry("shared")
    h.add_registry("local", NS)
    h.add_cr(PUSH, "uses-default", registry_ref={})
    h.add_cr(PUSH, "uses-own-namespace", registry_ref={"name": "local"})
    h.converge(PUSH, "uses-default")
    h.converge(PUSH, "uses-own-namespace")

    assert h.accounts("infra") == [f"push.{NS}.uses-default.1"]
    assert h.accounts(NS) == [f"push.{NS}.uses-own-namespace.1"]
    assert plain(h.secret(PUSH, "uses-default"))["registry"] == "shared.infra.svc.cluster.local"
    assert plain(h.secret(PUSH, "uses-own-namespace"))["registry"] == f"local.{NS}.svc.cluster.local"


@pytest.mark.parametrize("kind", kinds())
def test_moving_to_a_registry_in_another_namespace_revokes_the_old_accounts(
    h: Harness, kind: ImageSecretKind
) -> None:
    h.add_registry("registry", "other")
    h.add_cr(kind)
    h.converge(kind)
    h.clock.advance(hours=12, seconds=1)
    h.converge(kind)
    assert len(h.accounts(REGISTRY_NS)) == 2
    cr = h.cr(kind)
    cr["spec"]["registryRef"]["namespace"] = "other"
    h.api.update(kind.resource, cr)

    h.converge(kind)

    assert h.accounts(REGISTRY_NS) == []
    assert h.accounts("other") == [f"{kind.mode}.{NS}.example.3"]
    status = h.cr(kind)["status"]
    assert (status["rotation"], status["registry"]["namespace"]) == (3, "other")
    assert "previousExpiryTime" not in status
    assert plain(h.secret(kind))["registry"] == "registry.other.svc.cluster.local"
    revoked = [message for _, _, reason, message in h.events.recorded if reason == "Revoked"]
    assert len(revoked) == 1
    assert f"infra/{kind.mode}.{NS}.example.1" in revoked[0]


# --- failures --------------------------------------------------------------------------------------


def test_a_taken_account_name_fails_the_pass_and_the_next_pass_moves_on(h: Harness) -> None:
    taken = f"push.{NS}.example.1"
    h.api.put(
        IMAGE_REGISTRY_ACCOUNTS,
        {"metadata": {"name": taken, "namespace": REGISTRY_NS}, "spec": {"password": "$2b$04$" + "x" * 53}},
    )
    h.add_cr(PUSH)
    h.sync()
    errors_before = sample_value("registry_operator_rotation_errors_total", {"kind": "ImagePushSecret"})

    with pytest.raises(ReconcileError):
        h.reconcile(PUSH)

    ready = h.ready(PUSH)
    assert (ready["status"], ready["reason"]) == ("False", "FailedSync")
    assert ready["message"] == f"Issuing credentials #1 failed: account infra/{taken} already exists"
    assert (
        sample_value("registry_operator_rotation_errors_total", {"kind": "ImagePushSecret"})
        == errors_before + 1
    )
    assert ("Warning", "example", "FailedSync", ready["message"]) in h.events.recorded

    h.converge(PUSH)

    assert h.cr(PUSH)["status"]["rotation"] == 2
    assert plain(h.secret(PUSH))["username"] == f"push.{NS}.example.2"
    assert h.ready(PUSH)["status"] == "True"


def test_a_failed_secret_write_is_reported_without_the_api_message(h: Harness) -> None:
    h.add_cr(PUSH)
    h.sync()
    h.api.fail[("APPLY", "secrets")] = ApiError(422, "Invalid", 'data: Invalid value: "c2VjcmV0"')

    with pytest.raises(ReconcileError):
        h.reconcile(PUSH)

    message = h.ready(PUSH)["message"]
    assert (
        message == "Issuing credentials #1 failed: writing Secret imagepushsecret-example failed: 422 Invalid"
    )
    assert "c2VjcmV0" not in json.dumps(h.events.recorded)


def test_a_secret_controlled_by_something_else_is_not_taken_over(h: Harness) -> None:
    h.api.put(
        SECRETS,
        {
            "metadata": {
                "name": "imagepullsecret-example",
                "namespace": NS,
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "other", "controller": True}
                ],
            },
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": b64("{}")},
        },
    )
    h.add_cr(PULL)
    h.sync()

    with pytest.raises(ReconcileError, match="managed by ConfigMap x"):
        h.reconcile(PULL)

    assert plain(h.secret(PULL)) == {".dockerconfigjson": "{}"}
    assert h.accounts() == []  # refused before any account was issued
    assert "rotation" not in h.cr(PULL).get("status", {})
    assert h.ready(PULL)["reason"] == "FailedSync"


def test_a_push_secret_of_the_original_operator_type_is_replaced(h: Harness) -> None:
    h.add_cr(PUSH)
    h.sync()
    h.reconcile(PUSH)
    # Pretend the original operator wrote it: kubernetes.io/dockerconfigjson, which cannot be changed.
    secret = h.secret(PUSH)
    secret["type"] = "kubernetes.io/dockerconfigjson"
    secret["metadata"]["annotations"] = {}
    h.api.objects[(SECRETS.plural, NS, "imagepushsecret-example")] = secret

    h.converge(PUSH)

    assert h.secret(PUSH)["type"] == "Opaque"
    assert h.secret(PUSH)["metadata"]["uid"] != secret["metadata"]["uid"]
    assert h.cr(PUSH)["status"]["rotation"] == 2


# --- deletion --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "selectors_match_everything", [False, True], ids=["exact-selector", "broken-selector"]
)
def test_deletion_removes_exactly_this_crs_accounts_and_then_the_finalizer(
    selectors_match_everything: bool,
) -> None:
    """Regression for B1: the original's cleanup deleted every account in the registry namespace.
    Even a LIST answering with every account (as B1's broken selector did) deletes only the CR's own."""
    h = Harness()
    h.add_registry()
    h.add_cr(PUSH, "example")
    h.add_cr(PUSH, "example-2")
    h.add_cr(PULL, "example")  # same name, other kind
    h.add_cr(PUSH, "example", "other-team")  # same name, other namespace
    for kind, name, namespace in (
        (PUSH, "example", NS),
        (PUSH, "example-2", NS),
        (PULL, "example", NS),
        (PUSH, "example", "other-team"),
    ):
        h.converge(kind, name, namespace)
    h.clock.advance(hours=12, seconds=1)
    h.converge(PUSH)
    static = {
        "metadata": {"name": "static-user", "namespace": REGISTRY_NS},
        "spec": {"password": "$2b$04$" + "y" * 53},
    }
    h.api.put(IMAGE_REGISTRY_ACCOUNTS, static)
    # An account with only one of the two owner labels is not the CR's either.
    half = {
        "metadata": {
            "name": "half-labelled",
            "namespace": REGISTRY_NS,
            "labels": {PUSH.account_label_key: "example"},
        },
        "spec": {"password": "$2b$04$" + "z" * 53},
    }
    h.api.put(IMAGE_REGISTRY_ACCOUNTS, half)
    survivors = sorted(set(h.accounts()) - {f"push.{NS}.example.1", f"push.{NS}.example.2"})
    h.api.delete(IMAGE_PUSH_SECRETS, "example", NS)  # the finalizer holds it
    h.sync()
    h.api.selectors_match_everything = selectors_match_everything

    assert h.reconcile(PUSH) is None

    assert h.accounts() == survivors
    assert survivors == [
        "half-labelled",
        f"pull.{NS}.example.1",
        "push.other-team.example.1",
        f"push.{NS}.example-2.1",
        "static-user",
    ]
    assert (IMAGE_PUSH_SECRETS.plural, NS, "example") not in h.api.objects
    assert h.events.recorded[-1][2] == "Revoked"
    assert "Deleted 2 account(s)" in h.events.recorded[-1][3]
    assert (
        REGISTRY.get_sample_value(
            "registry_operator_credential_expiry_timestamp_seconds",
            {"namespace": NS, "name": "example", "kind": "ImagePushSecret"},
        )
        is None
    )


def test_deletion_without_finalizer_writes_nothing(h: Harness) -> None:
    cr = h.add_cr(PULL)
    cr["metadata"]["deletionTimestamp"] = _time(START)
    h.stores[PULL.resource.plural].upsert(cr)
    h.reconcile(PULL)
    assert h.api.writes() == []


# --- names -----------------------------------------------------------------------------------------


def test_long_names_keep_labels_valid() -> None:
    h = Harness()
    h.add_registry()
    name = "n" * 63
    namespace = "s" * 63
    h.add_cr(PUSH, name, namespace)
    h.converge(PUSH, name, namespace)

    (account,) = h.api.items(IMAGE_REGISTRY_ACCOUNTS)
    assert account["metadata"]["name"] == f"push.{namespace}.{name}.1"
    assert all(is_label_value(value) for value in account["metadata"]["labels"].values())
    assert account["metadata"]["labels"][PUSH.account_label_key] == name


def test_label_values_that_cannot_be_labels_are_hashed_stably() -> None:
    long_name = "x" * 64
    hashed = label_value(long_name)
    assert is_label_value(hashed)
    assert len(hashed) == 63
    assert hashed == label_value(long_name)
    assert hashed != label_value("y" * 64)
    assert hashed.startswith("sha256.")  # can never be a CR name: those have no dots
    assert label_value("example") == "example"


def test_accounts_map_to_their_own_cr_even_with_dots_in_names() -> None:
    """The original joined `<name>.<namespace>` and split at the first dot: `a.b` in `c` and `a` in
    `b.c` were the same. Separate labels and an index keep them apart."""
    store = Store({CR_OWNER_INDEX: cr_owner_index})
    for name, namespace in (("a.b", "c"), ("a", "b.c"), ("x" * 70, "c")):
        store.upsert({"metadata": {"name": name, "namespace": namespace}})
    mapper = account_mapper(PUSH, store)

    def account(name: str, namespace: str, kind: ImageSecretKind = PUSH) -> Object:
        return {
            "metadata": {
                "name": "acc",
                "namespace": "infra",
                "labels": account_owner_labels(kind, namespace, name),
            }
        }

    assert [str(r) for r in mapper(account("a.b", "c"))] == ["c/a.b"]
    assert [str(r) for r in mapper(account("a", "b.c"))] == ["b.c/a"]
    assert [str(r) for r in mapper(account("x" * 70, "c"))] == ["c/" + "x" * 70]
    assert mapper(account("a.b", "c", PULL)) == []  # a pull account never wakes a push CR
    assert mapper({"metadata": {"name": "static", "namespace": "infra"}}) == []


def test_registry_and_tls_secret_changes_map_to_the_crs_using_that_registry() -> None:
    config = settings(OPERATOR_DEFAULT_REGISTRY_NAME="registry", OPERATOR_DEFAULT_REGISTRY_NAMESPACE="infra")
    crs = Store({CR_REGISTRY_INDEX: registry_index(config)})
    crs.upsert(
        {
            "metadata": {"name": "explicit", "namespace": "team"},
            "spec": {"registryRef": {"name": "registry", "namespace": "infra"}},
        }
    )
    crs.upsert({"metadata": {"name": "default", "namespace": "team"}, "spec": {}})
    crs.upsert(
        {"metadata": {"name": "local", "namespace": "infra"}, "spec": {"registryRef": {"name": "registry"}}}
    )
    crs.upsert(
        {
            "metadata": {"name": "elsewhere", "namespace": "team"},
            "spec": {"registryRef": {"name": "registry"}},
        }
    )
    registries = Store({REGISTRY_TLS_SECRET_INDEX: registry_tls_secret_index})
    registry = {"metadata": {"name": "registry", "namespace": "infra"}, "status": {"tlsSecretName": "tls"}}
    registries.upsert(registry)

    expected = ["infra/local", "team/default", "team/explicit"]
    assert sorted(str(r) for r in registry_mapper(crs)(registry)) == expected
    tls_mapper = tls_secret_mapper(registries, crs)
    assert sorted(str(r) for r in tls_mapper({"metadata": {"name": "tls", "namespace": "infra"}})) == expected
    assert tls_mapper({"metadata": {"name": "tls", "namespace": "team"}}) == []
    assert tls_mapper({"metadata": {"name": "other", "namespace": "infra"}}) == []


# --- no credentials anywhere but the Secret -----------------------------------------------------------


def test_passwords_and_hashes_never_reach_events_conditions_or_logs(h: Harness) -> None:
    h.add_cr(PUSH)
    secrets: set[str] = set()

    def remember_credentials() -> None:
        for account in h.api.items(IMAGE_REGISTRY_ACCOUNTS):
            secrets.add(account["spec"]["password"])
        data = plain(h.secret(PUSH))
        secrets.add(data["password"])
        secrets.add(base64.b64encode(f"{data['username']}:{data['password']}".encode()).decode())

    with structlog.testing.capture_logs() as logs:
        h.converge(PUSH)
        remember_credentials()
        h.clock.advance(hours=12, seconds=1)
        h.converge(PUSH)
        remember_credentials()
        statuses = h.api.items(IMAGE_PUSH_SECRETS)
        h.api.delete(IMAGE_PUSH_SECRETS, "example", NS)
        h.sync()
        h.reconcile(PUSH)

    assert len(secrets) == 6
    visible = json.dumps([h.events.recorded, logs, statuses], default=str)
    assert logs  # something was logged
    for value in secrets:
        assert value not in visible
