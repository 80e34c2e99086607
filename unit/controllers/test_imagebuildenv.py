"""The ImageBuildEnv reconciler against in-memory caches and a recording fake API.

What a real apiserver does (server-side apply semantics, garbage collection, watches) is covered by
e2e/controllers/test_imagebuildenv.py; here: which writes a reconcile makes, and which it doesn't.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from registry_operator.controllers.imagebuildenv import (
    INPUT_SECRETS_INDEX,
    ImageBuildEnvReconciler,
    _spec_or_lifecycle_changed,
    back_reference_removal_patch,
    input_secret_keys,
    secret_store_key,
)
from registry_operator.controllers.resources import DEPLOYMENTS, IMAGE_BUILD_ENVS, SECRETS, SERVICES
from registry_operator.kube.cache import Store, json_copy
from registry_operator.kube.client import Client, PatchType
from registry_operator.kube.controller import Request, index_mapper
from registry_operator.kube.errors import AlreadyExists, ApiError, Conflict, Forbidden
from registry_operator.kube.resources import Resource

NS = "team"
HOST = "registry.infra.svc.cluster.local"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
FINALIZER = "registry.mgoltzsche.github.com/inputrefs"

Object = dict[str, Any]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def plain(secret: Mapping[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}


def push_secret(name: str, user: str = "push.team.example.1", password: str = "pw1") -> Object:
    config = json.dumps({"auths": {HOST: {"auth": b64(f"{user}:{password}")}}})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1"},
        "type": "Opaque",
        "data": {
            "config.json": b64(config),
            ".dockerconfigjson": b64(config),
            "registry": b64(HOST),
            "ca.crt": b64("CA"),
            "username": b64(user),
            "password": b64(password),
        },
    }


def build_env(name: str = "example", *, redis: bool = False, secrets: tuple[str, ...] = ()) -> Object:
    return {
        "apiVersion": "registry.mgoltzsche.github.com/v1alpha1",
        "kind": "ImageBuildEnv",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": {"redis": redis, "secrets": [{"secretName": s} for s in secrets]},
    }


class FakeApi:
    """Just enough of `Client` for the reconciler: objects by (plural, namespace, name), every
    write recorded, resourceVersion and uid preconditions enforced."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Object] = {}
        self.writes: list[tuple[str, str, str]] = []
        self.patches: list[list[dict[str, Any]]] = []
        self.deletes: list[tuple[str, str, str | None]] = []
        self.fail_apply_of: str | None = None
        self.fail_apply_details: dict[str, Any] | None = None
        # Data keys server-side apply leaves alone (owned by another field manager).
        self.foreign_data_keys: set[str] = set()
        self._version = 100

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def put(self, resource: Resource, obj: Object) -> Object:
        obj = json_copy(obj)
        obj["metadata"].setdefault("uid", f"uid-{obj['metadata']['name']}")
        obj["metadata"]["resourceVersion"] = self._next_version()
        self.objects[(resource.plural, obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        copied: Object = json_copy(obj)
        return copied

    def get(self, resource: Resource, name: str, namespace: str = NS) -> Object | None:
        return self.objects.get((resource.plural, namespace, name))

    def apply(
        self, resource: Resource, obj: Mapping[str, Any], *, field_manager: str, force: bool = False
    ) -> Object:
        name = obj["metadata"]["name"]
        self.writes.append(("apply", resource.plural, name))
        if self.fail_apply_of == resource.plural:
            raise Forbidden(
                403, "Forbidden", f'{resource.plural} "{name}" is forbidden', details=self.fail_apply_details
            )
        existing = self.get(resource, name, obj["metadata"]["namespace"])
        new = json_copy(dict(obj))
        if existing is not None:
            self._check_version(resource, obj)  # an apply carrying a resourceVersion is conditional
            new["metadata"]["uid"] = existing["metadata"]["uid"]
            if "status" in existing:
                new["status"] = existing["status"]
            for key in self.foreign_data_keys & set(existing.get("data") or {}):
                new["data"][key] = existing["data"][key]
        return self.put(resource, new)

    def create(
        self, resource: Resource, obj: Mapping[str, Any], *, field_manager: str | None = None
    ) -> Object:
        name = obj["metadata"]["name"]
        self.writes.append(("create", resource.plural, name))
        if self.get(resource, name, obj["metadata"]["namespace"]) is not None:
            raise AlreadyExists(409, "AlreadyExists", f'{resource.plural} "{name}" already exists')
        return self.put(resource, dict(obj))

    def _check_version(self, resource: Resource, obj: Mapping[str, Any]) -> Object:
        current = self.get(resource, obj["metadata"]["name"], obj["metadata"]["namespace"])
        assert current is not None
        if obj["metadata"].get("resourceVersion") not in (None, current["metadata"]["resourceVersion"]):
            raise Conflict(409, "Conflict", "the object has been modified")
        return current

    def update(
        self, resource: Resource, obj: Mapping[str, Any], *, field_manager: str | None = None
    ) -> Object:
        self.writes.append(("update", resource.plural, obj["metadata"]["name"]))
        self._check_version(resource, obj)
        return self.put(resource, dict(obj))

    def update_status(
        self, resource: Resource, obj: Mapping[str, Any], *, field_manager: str | None = None
    ) -> Object:
        self.writes.append(("update_status", resource.plural, obj["metadata"]["name"]))
        current = self._check_version(resource, obj)
        return self.put(resource, {**current, "status": obj["status"]})

    def patch(
        self,
        resource: Resource,
        name: str,
        patch: list[dict[str, Any]],
        namespace: str,
        *,
        patch_type: PatchType,
        field_manager: str | None = None,
    ) -> Object:
        assert patch_type is PatchType.JSON
        self.writes.append(("patch", resource.plural, name))
        self.patches.append(patch)
        obj = json_copy(self.objects[(resource.plural, namespace, name)])
        for operation in patch:
            *parents, last = [int(p) if p.isdigit() else p for p in operation["path"].strip("/").split("/")]
            target: Any = obj
            for part in parents:
                target = target[part]
            if operation["op"] == "test":
                if target[last] != operation["value"]:
                    raise ApiError(422, "Invalid", "test failed")
            elif operation["op"] == "remove":
                del target[last]
            else:
                target[last] = operation["value"]
        return self.put(resource, obj)

    def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str,
        *,
        uid: str | None = None,
        missing_ok: bool = False,
    ) -> Object | None:
        self.writes.append(("delete", resource.plural, name))
        self.deletes.append((resource.plural, name, uid))
        current = self.get(resource, name, namespace)
        if current is None:
            return None
        if uid is not None and current["metadata"]["uid"] != uid:
            raise Conflict(409, "Conflict", "uid precondition failed")
        return self.objects.pop((resource.plural, namespace, name))

    # Last in the class: the name shadows the builtin in the annotations that follow it.
    def list(self, resource: Resource, namespace: str = NS) -> Object:
        items = [
            json_copy(o)
            for (plural, ns, _), o in self.objects.items()
            if (plural, ns) == (resource.plural, namespace)
        ]
        return {"metadata": {"resourceVersion": str(self._version)}, "items": items}


class World:
    """The fake API plus the caches the reconciler reads; `sync()` plays the informers' part."""

    def __init__(self, *objects: tuple[Resource, Object]) -> None:
        self.api = FakeApi()
        self.stores = {
            IMAGE_BUILD_ENVS: Store({INPUT_SECRETS_INDEX: input_secret_keys}),
            SECRETS: Store(),
            DEPLOYMENTS: Store(),
            SERVICES: Store(),
        }
        for resource, obj in objects:
            self.api.put(resource, obj)
        self.sync()
        self.reconciler = ImageBuildEnvReconciler(
            cast(Client, self.api),
            envs=self.stores[IMAGE_BUILD_ENVS],
            secrets=self.stores[SECRETS],
            deployments=self.stores[DEPLOYMENTS],
            services=self.stores[SERVICES],
            redis_image="redis:test",
            now=lambda: NOW,
        )

    def sync(self) -> None:
        for resource, store in self.stores.items():
            store.replace(
                [json_copy(o) for (plural, _, _), o in self.api.objects.items() if plural == resource.plural]
            )

    def reconcile(self, name: str = "example") -> float | None:
        """Reconcile with fresh caches; return the requeue delay, and forget the writes made so far."""
        self.sync()
        self.api.writes.clear()
        result = self.reconciler.reconcile(Request(NS, name))
        return result.requeue_after if result else None

    def env(self, name: str = "example") -> Object:
        env = self.api.get(IMAGE_BUILD_ENVS, name)
        assert env is not None
        return env

    def ready(self, name: str = "example") -> dict[str, Any]:
        conditions: list[dict[str, Any]] = self.env(name)["status"]["conditions"]
        (condition,) = [c for c in conditions if c["type"] == "Ready"]
        return condition

    def conf(self, name: str = "example") -> dict[str, str]:
        secret = self.api.get(SECRETS, f"imagebuildenv-{name}-conf")
        assert secret is not None
        return plain(secret)

    def set_deployment_available(self, name: str = "example") -> None:
        deployment = self.api.get(DEPLOYMENTS, f"imagebuildenv-{name}-redis")
        assert deployment is not None
        deployment["metadata"]["generation"] = 1
        deployment["status"] = {
            "observedGeneration": 1,
            "updatedReplicas": 1,
            "availableReplicas": 1,
            "conditions": [{"type": "Available", "status": "True"}],
        }


def test_merges_inputs_into_the_conf_secret_and_becomes_ready() -> None:
    world = World(
        (SECRETS, push_secret("imagepushsecret-example")),
        (IMAGE_BUILD_ENVS, build_env(secrets=("imagepushsecret-example",))),
    )
    assert world.reconcile() is None
    conf = world.conf()
    assert json.loads(conf[".dockerconfigjson"])["auths"][HOST]["auth"] == b64("push.team.example.1:pw1")
    assert conf["config.json"] == conf[".dockerconfigjson"]
    assert (conf["registry"], conf["ca.crt"], conf["username"], conf["password"]) == (
        HOST,
        "CA",
        "push.team.example.1",
        "pw1",
    )
    assert conf["ca-0.crt"] == "CA"
    assert "redis" not in conf
    secret = world.api.get(SECRETS, "imagebuildenv-example-conf")
    assert secret is not None and secret["type"] == "Opaque"
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ImageBuildEnv", "uid-example", True)
    status = world.env()["status"]
    assert status["observedGeneration"] == 1
    ready = world.ready()
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("True", "Available", 1)
    assert ready["lastTransitionTime"] == "2026-03-01T12:00:00Z"
    # Users' secrets are only read.
    input_secret = world.api.get(SECRETS, "imagepushsecret-example")
    assert input_secret is not None and "ownerReferences" not in input_secret["metadata"]


def test_steady_state_makes_no_writes() -> None:
    world = World(
        (SECRETS, push_secret("imagepushsecret-example")),
        (IMAGE_BUILD_ENVS, build_env(redis=True, secrets=("imagepushsecret-example",))),
    )
    world.reconcile()
    world.set_deployment_available()
    world.reconcile()
    assert world.ready()["reason"] == "Available"
    world.reconcile()
    assert world.api.writes == []


def test_a_rotated_input_is_merged_again() -> None:
    world = World(
        (SECRETS, push_secret("imagepushsecret-example")),
        (IMAGE_BUILD_ENVS, build_env(secrets=("imagepushsecret-example",))),
    )
    world.reconcile()
    world.api.put(SECRETS, push_secret("imagepushsecret-example", user="push.team.example.2", password="pw2"))
    world.reconcile()
    assert ("apply", "secrets", "imagebuildenv-example-conf") in world.api.writes
    conf = world.conf()
    assert json.loads(conf["config.json"])["auths"][HOST]["auth"] == b64("push.team.example.2:pw2")
    assert conf["password"] == "pw2"


def test_missing_input_is_reported_and_requeued_and_recovers() -> None:
    world = World((IMAGE_BUILD_ENVS, build_env(secrets=("absent", "also-absent"))))
    assert world.reconcile() == 30.0
    ready = world.ready()
    assert (ready["status"], ready["reason"]) == ("False", "MissingSecret")
    assert ready["message"] == 'secrets "absent", "also-absent" not found'
    assert world.api.get(SECRETS, "imagebuildenv-example-conf") is None
    world.api.put(SECRETS, push_secret("absent"))
    world.api.put(SECRETS, push_secret("also-absent"))
    assert world.reconcile() is None
    assert world.ready()["reason"] == "Available"


def test_invalid_input_is_reported_and_the_last_good_config_is_kept() -> None:
    world = World(
        (SECRETS, push_secret("imagepushsecret-example")),
        (IMAGE_BUILD_ENVS, build_env(secrets=("imagepushsecret-example",))),
    )
    world.reconcile()
    good = world.conf()
    broken = push_secret("imagepushsecret-example")
    broken["type"] = "kubernetes.io/dockerconfigjson"
    del broken["data"][".dockerconfigjson"]
    world.api.put(SECRETS, broken)
    assert world.reconcile() is None  # the secret's next change triggers a reconcile
    ready = world.ready()
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSecret")
    assert ready["message"] == 'secret imagepushsecret-example does not specify key ".dockerconfigjson"'
    assert world.conf() == good


def test_redis_is_created_pending_until_available_and_its_password_is_kept() -> None:
    world = World(
        (SECRETS, push_secret("imagepushsecret-example")),
        (IMAGE_BUILD_ENVS, build_env(redis=True, secrets=("imagepushsecret-example",))),
    )
    world.reconcile()
    ready = world.ready()
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "Pending",
        "waiting for redis to become ready",
    )
    redis_secret = world.api.get(SECRETS, "imagebuildenv-example-redis-conf")
    deployment = world.api.get(DEPLOYMENTS, "imagebuildenv-example-redis")
    service = world.api.get(SERVICES, "imagebuildenv-example-redis")
    assert redis_secret is not None and deployment is not None and service is not None
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "redis:test"
    password = plain(redis_secret)["redis_password"]
    assert len(password) >= 32
    # Written while pending, so credential rotations are not held up by redis.
    conf = world.conf()
    assert (conf["redis"], conf["redis_password"]) == ("imagebuildenv-example-redis:6379", password)

    world.set_deployment_available()
    world.reconcile()
    assert world.ready()["reason"] == "Available"
    # A lost cache entry does not lose the password: the existing secret's one is kept.
    world.stores[SECRETS].delete(f"{NS}/imagebuildenv-example-redis-conf")
    world.reconcile()
    redis_secret = world.api.get(SECRETS, "imagebuildenv-example-redis-conf")
    assert redis_secret is not None and plain(redis_secret)["redis_password"] == password


def test_a_writer_with_older_caches_cannot_put_older_credentials_or_another_redis_password_back() -> None:
    """What a deposed leader would send: its caches are older than what the new leader wrote since."""
    world = World(
        (SECRETS, push_secret("imagepushsecret-example")),
        (IMAGE_BUILD_ENVS, build_env(redis=True, secrets=("imagepushsecret-example",))),
    )
    world.reconcile()
    conf_as_first_written = world.api.get(SECRETS, "imagebuildenv-example-conf")
    redis_secret = world.api.get(SECRETS, "imagebuildenv-example-redis-conf")
    assert conf_as_first_written is not None and redis_secret is not None
    password = plain(redis_secret)["redis_password"]
    # The stale writer saw the push secret's second rotation, not the third the leader merged.
    second = world.api.put(SECRETS, push_secret("imagepushsecret-example", password="pw2"))
    world.api.put(SECRETS, push_secret("imagepushsecret-example", password="pw3"))
    world.reconcile()
    assert world.conf()["password"] == "pw3"

    world.stores[SECRETS].replace([second, json_copy(conf_as_first_written), json_copy(redis_secret)])
    with pytest.raises(Conflict):
        world.reconciler.reconcile(Request(NS, "example"))
    assert world.conf()["password"] == "pw3"
    # A cache without the redis Secret: a fresh password is only ever created, never replaces one.
    world.stores[SECRETS].replace([second])
    with pytest.raises(AlreadyExists):
        world.reconciler.reconcile(Request(NS, "example"))
    redis_secret = world.api.get(SECRETS, "imagebuildenv-example-redis-conf")
    assert redis_secret is not None and plain(redis_secret)["redis_password"] == password
    assert world.conf()["password"] == "pw3"


def test_switching_redis_off_removes_it() -> None:
    world = World(
        (SECRETS, push_secret("imagepushsecret-example")),
        (IMAGE_BUILD_ENVS, build_env(redis=True, secrets=("imagepushsecret-example",))),
    )
    world.reconcile()
    env = world.env()
    env["spec"]["redis"] = False
    env["metadata"]["generation"] = 2
    world.reconcile()
    for resource, name in (
        (DEPLOYMENTS, "imagebuildenv-example-redis"),
        (SERVICES, "imagebuildenv-example-redis"),
        (SECRETS, "imagebuildenv-example-redis-conf"),
    ):
        assert world.api.get(resource, name) is None
        assert (resource.plural, name, f"uid-{name}") in world.api.deletes  # uid precondition
    assert "redis" not in world.conf() and "redis_password" not in world.conf()
    assert (world.ready()["reason"], world.env()["status"]["observedGeneration"]) == ("Available", 2)


def test_redis_objects_someone_else_controls_are_not_deleted() -> None:
    foreign = {
        "metadata": {"name": "imagebuildenv-example-redis", "namespace": NS, "ownerReferences": []},
        "spec": {},
    }
    world = World(
        (SERVICES, foreign),
        (IMAGE_BUILD_ENVS, build_env()),
    )
    world.reconcile()
    assert world.api.get(SERVICES, "imagebuildenv-example-redis") is not None


def test_keys_another_manager_owns_are_removed_from_the_conf_secret() -> None:
    world = World(
        (SECRETS, push_secret("imagepushsecret-example")),
        (IMAGE_BUILD_ENVS, build_env(redis=True, secrets=("imagepushsecret-example",))),
    )
    world.reconcile()
    # As after an upgrade from the original, which wrote the secret with update, not apply.
    world.api.foreign_data_keys = {"redis", "redis_password"}
    env = world.env()
    env["spec"]["redis"] = False
    world.reconcile()
    assert ("update", "secrets", "imagebuildenv-example-conf") in world.api.writes
    assert "redis" not in world.conf()


def test_migration_removes_the_originals_back_references_then_its_finalizer() -> None:
    env = build_env(secrets=("imagepushsecret-example",))
    env["metadata"]["finalizers"] = ["example.com/keep", FINALIZER]
    env["status"] = {
        "secretRefs": ["imagepushsecret-example", "dropped-input"],
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2020-07-22T00:00:00Z"}],
    }
    back_ref = {
        "apiVersion": "registry.mgoltzsche.github.com/v1alpha1",
        "kind": "ImageBuildEnv",
        "name": "example",
        "uid": "uid-example",
        "controller": False,
        "blockOwnerDeletion": False,
    }
    other_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "uid-x"}
    still_listed = push_secret("imagepushsecret-example")
    still_listed["metadata"]["ownerReferences"] = [other_ref, back_ref]
    dropped = push_secret("dropped-input")
    dropped["metadata"]["ownerReferences"] = [back_ref]
    world = World((SECRETS, still_listed), (SECRETS, dropped), (IMAGE_BUILD_ENVS, env))
    world.reconcile()
    listed_after = world.api.get(SECRETS, "imagepushsecret-example")
    dropped_after = world.api.get(SECRETS, "dropped-input")
    assert listed_after is not None and dropped_after is not None
    assert listed_after["metadata"]["ownerReferences"] == [other_ref]
    assert dropped_after["metadata"]["ownerReferences"] == []
    assert world.env()["metadata"]["finalizers"] == ["example.com/keep"]
    assert "secretRefs" not in world.env()["status"]
    assert world.ready()["reason"] == "Available"
    # The finalizer goes only after every reference is gone.
    kinds = [(verb, plural) for verb, plural, _ in world.api.writes]
    assert kinds.index(("patch", "imagebuildenvs")) > max(
        i for i, write in enumerate(kinds) if write == ("patch", "secrets")
    )
    # The own conf secret's controller reference is not a back-reference: it stays.
    world.reconcile()
    assert world.api.writes == []


def test_deleting_a_migrated_env_releases_its_inputs_and_does_nothing_else() -> None:
    env = build_env(secrets=("imagepushsecret-example",))
    env["metadata"]["finalizers"] = [FINALIZER]
    env["metadata"]["deletionTimestamp"] = "2026-03-01T11:00:00Z"
    secret = push_secret("imagepushsecret-example")
    secret["metadata"]["ownerReferences"] = [
        {"kind": "ImageBuildEnv", "name": "example", "uid": "uid-example"}
    ]
    world = World((SECRETS, secret), (IMAGE_BUILD_ENVS, env))
    world.reconcile()
    assert world.api.writes == [
        ("patch", "secrets", "imagepushsecret-example"),
        ("patch", "imagebuildenvs", "example"),
    ]
    assert world.env()["metadata"]["finalizers"] == []


def test_failed_write_is_reported_as_failed_update_and_retried() -> None:
    world = World(
        (SECRETS, push_secret("imagepushsecret-example")),
        (IMAGE_BUILD_ENVS, build_env(secrets=("imagepushsecret-example",))),
    )
    world.api.fail_apply_of = "secrets"
    world.sync()
    with pytest.raises(Forbidden):
        world.reconciler.reconcile(Request(NS, "example"))
    ready = world.ready()
    assert (ready["status"], ready["reason"]) == ("False", "FailedUpdate")
    assert 'secrets "imagebuildenv-example-conf" is forbidden' in ready["message"]


def test_refusals_because_the_namespace_is_terminating_are_not_retried() -> None:
    world = World(
        (SECRETS, push_secret("imagepushsecret-example")),
        (IMAGE_BUILD_ENVS, build_env(secrets=("imagepushsecret-example",))),
    )
    world.api.fail_apply_of = "secrets"
    world.api.fail_apply_details = {
        "causes": [{"reason": "NamespaceTerminating", "message": "namespace team is being terminated"}]
    }
    assert world.reconcile() is None
    assert world.api.writes == [("apply", "secrets", "imagebuildenv-example-conf")]  # no status write


def test_a_deleted_env_is_a_no_op() -> None:
    world = World()
    assert world.reconcile("gone") is None
    assert world.api.writes == []


def test_input_index_maps_a_secret_to_every_env_reading_it() -> None:
    envs = Store({INPUT_SECRETS_INDEX: input_secret_keys})
    envs.upsert(build_env("a", secrets=("shared", "only-a")))
    envs.upsert(build_env("b", secrets=("shared",)))
    other_namespace = build_env("c", secrets=("shared",))
    other_namespace["metadata"]["namespace"] = "elsewhere"
    envs.upsert(other_namespace)
    mapper = index_mapper(envs, INPUT_SECRETS_INDEX, secret_store_key)
    assert sorted(mapper(push_secret("shared"))) == [Request(NS, "a"), Request(NS, "b")]
    assert mapper(push_secret("only-a")) == [Request(NS, "a")]
    assert mapper(push_secret("unrelated")) == []


def test_back_reference_patch_removes_only_non_controller_refs_to_the_env() -> None:
    secret = {
        "metadata": {
            "ownerReferences": [
                {"uid": "env", "controller": False},
                {"uid": "other"},
                {"uid": "env", "controller": True},
                {"uid": "env"},
            ]
        }
    }
    assert back_reference_removal_patch(secret, "env") == [
        {"op": "test", "path": "/metadata/ownerReferences/3/uid", "value": "env"},
        {"op": "remove", "path": "/metadata/ownerReferences/3"},
        {"op": "test", "path": "/metadata/ownerReferences/0/uid", "value": "env"},
        {"op": "remove", "path": "/metadata/ownerReferences/0"},
    ]
    assert back_reference_removal_patch({"metadata": {}}, "env") == []


def test_env_updates_that_only_touch_status_do_not_trigger_a_reconcile() -> None:
    old = build_env()
    status_only = json_copy(old)
    status_only["metadata"]["resourceVersion"] = "2"
    status_only["status"] = {"observedGeneration": 1}
    assert not _spec_or_lifecycle_changed(old, status_only)
    spec_change = json_copy(status_only)
    spec_change["metadata"]["generation"] = 2
    assert _spec_or_lifecycle_changed(old, spec_change)
    deleting = json_copy(status_only)
    deleting["metadata"]["deletionTimestamp"] = "2026-03-01T11:00:00Z"
    assert _spec_or_lifecycle_changed(old, deleting)
    assert _spec_or_lifecycle_changed(old, json_copy(old))  # periodic resync
