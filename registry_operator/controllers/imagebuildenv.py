"""ImageBuildEnv controller: merges docker config Secrets into `imagebuildenv-<name>-conf` and runs
an optional redis layer cache (REFERENCE-BEHAVIOUR §3.5; merge rule in imagebuildenv_config.py,
redis objects in imagebuildenv_redis.py).

Input Secrets are users' objects, so they are tracked through an index on the envs' `spec.secrets`
(secret key → envs), watched one by one by name (a ByNameInformer: no cache of every Secret) and
only ever read. The original instead put an ownerReference to the env on
each input and a finalizer on the env to take it off again; had the finalizer been bypassed, garbage
collection would have deleted the user's Secret with the env. Envs the original created are
migrated: their references on Secrets are removed first, then the finalizer (in that order, so an
interrupted migration never leaves a Secret the garbage collector could take).

Ready condition: MissingSecret (requeued, and the Secret's creation triggers a reconcile at once) >
InvalidSecret > FailedUpdate > Pending (redis not Available yet) > Available. On MissingSecret and
InvalidSecret the merged Secret keeps its last good content, so running builds are not broken by a
typo; while redis is merely Pending it is written, so credential rotations still arrive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import structlog

from registry_operator.api import constants as c
from registry_operator.api.imagebuildenv import ImageBuildEnvStatus
from registry_operator.api.names import (
    build_env_redis_name,
    build_env_redis_secret_name,
    build_env_secret_name,
)
from registry_operator.config import Settings
from registry_operator.controllers.common import (
    FIELD_MANAGER,
    MANAGED_LABEL_SELECTOR,
    MANAGED_LABELS,
    Object,
    contains,
    controller_ref,
    decode_secret_data,
    ensure,
    ensure_conditionally,
    is_controlled_by,
    key_of,
    now_utc,
    secret_data,
)
from registry_operator.controllers.imagebuildenv_config import merged_config, missing_inputs_message
from registry_operator.controllers.imagebuildenv_redis import (
    deployment_available,
    desired_redis_deployment,
    desired_redis_secret,
    desired_redis_service,
    keepable_password,
    redis_address,
)
from registry_operator.controllers.resources import DEPLOYMENTS, IMAGE_BUILD_ENVS, SECRETS, SERVICES
from registry_operator.controllers.status import (
    ConditionValue,
    Problem,
    condition_changed,
    read_status,
    update_status,
)
from registry_operator.dockerconfig import DockerConfigError
from registry_operator.kube import objects
from registry_operator.kube.cache import Store
from registry_operator.kube.client import Client, PatchType
from registry_operator.kube.controller import (
    Controller,
    FuncPredicate,
    Request,
    ResourceVersionChangedPredicate,
    Result,
    index_mapper,
)
from registry_operator.kube.errors import AlreadyExists, ApiError, Conflict, Forbidden
from registry_operator.kube.events import EventRecorder
from registry_operator.kube.manager import Manager
from registry_operator.kube.resources import Resource
from registry_operator.passwords import generate_password

log = structlog.get_logger(__name__)

CONTROLLER_NAME: Final = "imagebuildenv"
EVENT_COMPONENT: Final = "imagebuildenv-controller"
# Index on ImageBuildEnvs: "namespace/secretName" of every input Secret → the envs that read it.
INPUT_SECRETS_INDEX: Final = "imagebuildenv-input-secrets"
# A missing input's creation triggers a reconcile through the index; this is only a safety net.
MISSING_INPUT_REQUEUE: Final = timedelta(seconds=30)
MESSAGE_REDIS_PENDING: Final = "waiting for redis to become ready"
# Event reasons (conditions use the API's reasons).
EVENT_SECRET_UPDATED: Final = "SecretUpdated"
EVENT_BACK_REFERENCE_REMOVED: Final = "BackReferenceRemoved"
# Status cause the NamespaceLifecycle admission plugin gives when refusing a create.
NAMESPACE_TERMINATING_CAUSE: Final = "NamespaceTerminating"


def input_secret_keys(env: Object) -> list[str]:
    """Index function: the store keys of the env's input Secrets."""
    namespace = objects.namespace(env)
    refs = (env.get("spec") or {}).get("secrets") or []
    return [key_of(namespace, ref["secretName"]) for ref in refs if ref.get("secretName")]


def secret_store_key(secret: Object) -> str | None:
    metadata = objects.metadata(secret)
    name, namespace = metadata.get("name"), metadata.get("namespace")
    return key_of(namespace, name) if name and namespace else None


def back_reference_removal_patch(secret: Mapping[str, Any], env_uid: str) -> list[dict[str, Any]]:
    """JSON patch removing the original operator's (non-controller) ownerReferences to the env.

    Each removal is guarded by a `test` of the entry's uid, so a concurrently changed list makes the
    patch fail (and the reconcile retry) instead of removing someone else's reference. Highest index
    first, so the lower indexes stay valid.
    """
    refs = objects.owner_references(secret)
    operations: list[dict[str, Any]] = []
    for index in reversed(range(len(refs))):
        ref = refs[index]
        if ref.get("uid") == env_uid and not ref.get("controller"):
            path = f"/metadata/ownerReferences/{index}"
            operations.append({"op": "test", "path": f"{path}/uid", "value": env_uid})
            operations.append({"op": "remove", "path": path})
    return operations


def namespace_terminating(error: ApiError) -> bool:
    """Whether the apiserver refused a create because the namespace is being deleted."""
    return isinstance(error, Forbidden) and any(
        cause.reason == NAMESPACE_TERMINATING_CAUSE for cause in error.causes
    )


def _spec_or_lifecycle_changed(old: Object, new: Object) -> bool:
    """Env updates worth a reconcile: spec, finalizers, deletion, and periodic resyncs (equal
    resourceVersions) as a safety net; not the controller's own status writes."""
    old_meta, new_meta = objects.metadata(old), objects.metadata(new)
    return (
        old_meta.get("resourceVersion") == new_meta.get("resourceVersion")
        or old_meta.get("generation") != new_meta.get("generation")
        or old_meta.get("finalizers") != new_meta.get("finalizers")
        or old_meta.get("deletionTimestamp") != new_meta.get("deletionTimestamp")
    )


class ImageBuildEnvReconciler:
    def __init__(
        self,
        client: Client,
        *,
        envs: Store,
        secrets: Store,
        deployments: Store,
        services: Store,
        redis_image: str,
        inputs: Store | None = None,
        recorder: EventRecorder | None = None,
        now: Callable[[], datetime] = now_utc,
    ) -> None:
        self._client = client
        self._envs = envs
        self._secrets = secrets  # the env's own Secrets (label-selected)
        self._inputs = inputs if inputs is not None else secrets  # the input Secrets (by name)
        self._deployments = deployments
        self._services = services
        self._redis_image = redis_image
        self._recorder = recorder
        self._now = now

    # --- reconcile ---------------------------------------------------------------------------
    def reconcile(self, request: Request) -> Result | None:
        env = self._envs.get_by_name(request.namespace, request.name)
        if env is None:
            return None  # deleted: its own Secrets, Deployment and Service go with it (owner refs)
        env = self._migrate_from_original(env)
        if objects.is_deleting(env):
            return None
        problem: Problem | None = None
        try:
            ready = self._sync(env)
        except Problem as found:
            problem, ready = found, found.condition()
        except (Conflict, AlreadyExists):
            raise  # stale cache (or a newer writer was first): retry with fresh data, nothing to tell
        except ApiError as error:
            if namespace_terminating(error):
                # The namespace is going away and the env with it: recreating its children is futile.
                log.debug("namespace is terminating, not retrying", error=str(error))
                return None
            failed = Problem(c.REASON_FAILED_UPDATE, f"writing the build configuration failed: {error}")
            try:
                self._set_ready(env, failed.condition(), failed)
            except ApiError as status_error:
                log.warning("writing the failure status failed", error=str(status_error))
            raise
        self._set_ready(env, ready, problem)
        if problem is not None and problem.requeue_after is not None:
            return Result(requeue_after=problem.requeue_after.total_seconds())
        return None

    def _sync(self, env: Object) -> ConditionValue:
        """Write the env's objects; the Ready condition when done, a Problem when not."""
        namespace, name = objects.namespace(env), objects.name(env)
        spec = env.get("spec") or {}
        redis_ready: bool | None = None  # None: no redis wanted
        redis_data: dict[str, bytes] = {}
        if spec.get("redis"):
            password, redis_ready = self._ensure_redis(env)
            redis_data = {
                c.SECRET_KEY_REDIS: redis_address(name).encode(),
                c.SECRET_KEY_REDIS_PASSWORD: password.encode(),
            }
        else:
            self._remove_redis(env)

        inputs: list[Object] = []
        missing: list[str] = []
        for ref in spec.get("secrets") or []:
            secret = self._inputs.get_by_name(namespace, ref["secretName"], copy=False)
            if secret is None:
                missing.append(ref["secretName"])
            else:
                inputs.append(secret)
        if missing:
            raise Problem(
                c.REASON_MISSING_SECRET, missing_inputs_message(missing), requeue_after=MISSING_INPUT_REQUEUE
            )
        try:
            data = merged_config(inputs)
        except DockerConfigError as error:
            raise Problem(c.REASON_INVALID_SECRET, str(error)) from error
        self._ensure_config_secret(env, {**data, **redis_data})
        if redis_ready is False:
            raise Problem(c.REASON_PENDING, MESSAGE_REDIS_PENDING, event_type=None)
        return ConditionValue.true(
            c.REASON_AVAILABLE, f"build configuration in secret {build_env_secret_name(name)}"
        )

    # --- merged secret -----------------------------------------------------------------------
    def _ensure_config_secret(self, env: Object, data: Mapping[str, bytes]) -> None:
        namespace, name = objects.namespace(env), objects.name(env)
        secret_name = build_env_secret_name(name)
        desired: Object = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret_name,
                "namespace": namespace,
                "labels": dict(MANAGED_LABELS),
                "ownerReferences": [controller_ref(env)],
            },
            "type": c.SECRET_TYPE_OPAQUE,
            "data": secret_data(data),
        }
        current = self._secrets.get_by_name(namespace, secret_name, copy=False)
        # Exact data, not just "contains": keys that are no longer wanted (redis switched off, an
        # input's CA gone) must disappear.
        if current is not None and contains(current, desired) and current.get("data") == desired["data"]:
            return
        # Conditional: the data is other Secrets' content as cached (push credentials rotate), and a
        # writer with an older cache, such as a deposed leader, would put older credentials back.
        applied = ensure_conditionally(self._client, SECRETS, desired, current)
        if (applied.get("data") or {}) != desired["data"]:
            # Server-side apply keeps keys another field manager owns (e.g. the original operator,
            # which wrote with update); the merged secret's data is the operator's alone.
            body = {**applied, "data": desired["data"]}
            body["metadata"] = {k: v for k, v in objects.metadata(applied).items() if k != "managedFields"}
            self._client.update(SECRETS, body, field_manager=FIELD_MANAGER)
        self._event(
            env,
            "Normal",
            EVENT_SECRET_UPDATED,
            f"wrote the merged build configuration to secret {secret_name}",
        )

    # --- redis -------------------------------------------------------------------------------
    def _ensure_redis(self, env: Object) -> tuple[str, bool]:
        """Apply the redis Secret, Deployment and Service; return (password, Deployment available)."""
        namespace, name = objects.namespace(env), objects.name(env)
        secret_name = build_env_redis_secret_name(name)
        current_secret = self._secrets.get_by_name(namespace, secret_name, copy=False)
        # Keep the password: running builds hold it, and a new one would restart redis.
        existing = decode_secret_data(current_secret).get(c.SECRET_KEY_REDIS_PASSWORD)
        password = keepable_password(existing) or generate_password()
        if current_secret is None:
            # A fresh password is this writer's own: create-if-absent, so two writers (a deposed
            # leader among them) cannot replace each other's; AlreadyExists retries with the cache.
            self._client.create(SECRETS, desired_redis_secret(env, password), field_manager=FIELD_MANAGER)
        else:
            ensure_conditionally(self._client, SECRETS, desired_redis_secret(env, password), current_secret)
        redis_name = build_env_redis_name(name)
        # The Deployment and Service are pure functions of the env's name and uid, the redis image
        # setting and the password the Secret holds (which changes only through the conditional
        # writes above): applying them has the same outcome whoever writes.
        deployment = ensure(
            self._client,
            DEPLOYMENTS,
            desired_redis_deployment(env, self._redis_image, password),
            self._deployments.get_by_name(namespace, redis_name, copy=False),
        )
        ensure(
            self._client,
            SERVICES,
            desired_redis_service(env),
            self._services.get_by_name(namespace, redis_name, copy=False),
        )
        return password, deployment_available(deployment)

    def _remove_redis(self, env: Object) -> None:
        namespace, name = objects.namespace(env), objects.name(env)
        redis_name = build_env_redis_name(name)
        owned: Sequence[tuple[Resource, Store, str]] = (
            (DEPLOYMENTS, self._deployments, redis_name),
            (SERVICES, self._services, redis_name),
            (SECRETS, self._secrets, build_env_redis_secret_name(name)),
        )
        for resource, store, object_name in owned:
            obj = store.get_by_name(namespace, object_name, copy=False)
            if obj is not None and is_controlled_by(obj, env):
                # The uid precondition: never delete a same-named object created meanwhile.
                self._client.delete(resource, object_name, namespace, uid=objects.uid(obj), missing_ok=True)

    # --- migration from the original operator ------------------------------------------------
    def _migrate_from_original(self, env: Object) -> Object:
        """Remove the original's back-references from Secrets, then its finalizer; return the env."""
        namespace, uid = objects.namespace(env), objects.uid(env)
        finalizers = list(objects.finalizers(env))
        if c.FINALIZER_INPUT_REFS not in finalizers:
            return env
        # Once per env the original left: its references may sit on Secrets no longer in the spec,
        # which no cache holds (only inputs and the operator's own Secrets are watched).
        listed = self._client.list(SECRETS, namespace)["items"]
        for secret in listed:
            patch = back_reference_removal_patch(secret, uid)
            if patch:
                secret_name = objects.name(secret)
                self._client.patch(
                    SECRETS,
                    secret_name,
                    patch,
                    namespace,
                    patch_type=PatchType.JSON,
                    field_manager=FIELD_MANAGER,
                )
                self._event(
                    env,
                    "Normal",
                    EVENT_BACK_REFERENCE_REMOVED,
                    f"removed the original operator's owner reference from secret {secret_name}",
                )
        remaining = [finalizer for finalizer in finalizers if finalizer != c.FINALIZER_INPUT_REFS]
        patch = [
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {"op": "replace", "path": "/metadata/finalizers", "value": remaining},
        ]
        updated: Object = self._client.patch(
            IMAGE_BUILD_ENVS,
            objects.name(env),
            patch,
            namespace,
            patch_type=PatchType.JSON,
            field_manager=FIELD_MANAGER,
        )
        return updated

    # --- status ------------------------------------------------------------------------------
    def _set_ready(self, env: Object, ready: ConditionValue, problem: Problem | None) -> None:
        status = read_status(ImageBuildEnvStatus, env)
        status.secret_refs = None  # the original's back-reference list: nothing carries one any more
        changed = condition_changed(env, ready)
        update_status(self._client, IMAGE_BUILD_ENVS, env, status, self._now(), ready)
        if problem is not None and problem.event_type is not None and changed:
            self._event(env, problem.event_type, problem.reason, problem.message)

    def _event(self, env: Object, event_type: str, reason: str, message: str) -> None:
        if self._recorder is not None:
            self._recorder.event(env, event_type, reason, message)


def setup(manager: Manager, settings: Settings) -> None:
    namespace = settings.watch_namespace or None
    informers = manager.informers
    envs = informers.informer(
        IMAGE_BUILD_ENVS, namespace=namespace, indexers={INPUT_SECRETS_INDEX: input_secret_keys}
    )
    # The env's own Secrets (merged config, redis password) carry the managed-by label; inputs are
    # arbitrary user Secrets, watched by the names the envs give.
    secrets = informers.informer(SECRETS, namespace=namespace, label_selector=MANAGED_LABEL_SELECTOR)
    inputs = informers.by_name(SECRETS)
    inputs.track_references(envs, input_secret_keys)
    deployments = informers.informer(DEPLOYMENTS, namespace=namespace, label_selector=MANAGED_LABEL_SELECTOR)
    services = informers.informer(SERVICES, namespace=namespace, label_selector=MANAGED_LABEL_SELECTOR)
    reconciler = ImageBuildEnvReconciler(
        manager.client,
        envs=envs.store,
        secrets=secrets.store,
        deployments=deployments.store,
        services=services.store,
        redis_image=settings.image_redis,
        inputs=inputs.store,
        recorder=manager.event_recorder(EVENT_COMPONENT),
    )
    controller = Controller(CONTROLLER_NAME, reconciler)
    controller.watch_for(envs, FuncPredicate(on_update=_spec_or_lifecycle_changed))
    changed = ResourceVersionChangedPredicate()
    controller.watch_owned(secrets, IMAGE_BUILD_ENVS, changed)
    controller.watch_mapped(inputs, index_mapper(envs.store, INPUT_SECRETS_INDEX, secret_store_key), changed)
    controller.watch_owned(deployments, IMAGE_BUILD_ENVS, changed)
    controller.watch_owned(services, IMAGE_BUILD_ENVS, changed)
    manager.add_controller(controller)
