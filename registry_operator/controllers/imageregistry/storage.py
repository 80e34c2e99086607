"""Where a registry keeps its images (`spec.storage`): the PersistentVolumeClaim mounted at
`STORAGE_DIR` (distribution's `filesystem` driver, the default) or an S3 bucket (its `s3` driver).

The S3 access key pair never enters the rendered config (a ConfigMap): the registry container gets it
as `REGISTRY_STORAGE_S3_ACCESSKEY`/`_SECRETKEY` from the user's Secret (`secretKeyRef`), which
distribution's environment overrides put into `storage.s3`. The operator reads that Secret only to
tell a missing Secret or key apart (Ready=False naming it) and to roll the pods when it changes.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from registry_operator.api import constants as c
from registry_operator.api import names
from registry_operator.api.imageregistry import ImageRegistrySpec, S3StorageSpec
from registry_operator.controllers.common import key_of
from registry_operator.controllers.imageregistry.context import STORAGE_DIR, RegistryContext
from registry_operator.controllers.status import Problem
from registry_operator.kube import objects
from registry_operator.kube.cache import Store

S3_ACCESS_KEY_ENV: Final = "REGISTRY_STORAGE_S3_ACCESSKEY"
S3_SECRET_KEY_ENV: Final = "REGISTRY_STORAGE_S3_SECRETKEY"
IMAGES_VOLUME: Final = "images"
# Index of registries by the S3 credentials Secret they read ("ns/name"), so that its creation or
# change reconciles them.
STORAGE_SECRET_INDEX: Final = "imageregistry-storage-secret"


def s3_of(spec: ImageRegistrySpec) -> S3StorageSpec | None:
    return spec.storage.s3 if spec.storage is not None and spec.uses_s3 else None


def storage_config(spec: ImageRegistrySpec, *, read_only: bool = False) -> dict[str, Any]:
    """distribution's `storage:` section. `read_only` (garbage collection) refuses every write."""
    s3 = s3_of(spec)
    section: dict[str, Any]
    if s3 is None:
        section = {"filesystem": {"rootdirectory": STORAGE_DIR}}
    else:
        driver: dict[str, Any] = {
            "bucket": s3.bucket,
            "region": s3.region,
            "forcepathstyle": s3.force_path_style,
        }
        if s3.region_endpoint is not None:
            driver["regionendpoint"] = s3.region_endpoint
        if s3.root_directory:
            driver["rootdirectory"] = s3.root_directory
        # Blobs go through the registry, not a redirect to a pre-signed bucket URL: clients then
        # need to reach (and trust) only the registry, and an in-cluster endpoint works from nodes.
        section = {"s3": driver, "redirect": {"disable": True}}
    # Manifest deletes (and so garbage collection of what they free) need it.
    section["delete"] = {"enabled": True}
    if read_only:
        section["maintenance"] = {"readonly": {"enabled": True}}
    return section


def storage_env(spec: ImageRegistrySpec) -> list[dict[str, Any]]:
    """The registry container's (and the collector's) environment for the storage driver."""
    s3 = s3_of(spec)
    if s3 is None or s3.credentials_secret_ref is None:
        return []
    ref = s3.credentials_secret_ref
    keys = ((S3_ACCESS_KEY_ENV, ref.access_key_id_key), (S3_SECRET_KEY_ENV, ref.secret_access_key_key))
    return [{"name": env, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": key}}} for env, key in keys]


def storage_volumes(ctx: RegistryContext) -> list[dict[str, Any]]:
    if ctx.spec.uses_s3:
        return []
    claim = {"claimName": names.registry_pvc_name(ctx.name)}
    return [{"name": IMAGES_VOLUME, "persistentVolumeClaim": claim}]


def storage_mounts(spec: ImageRegistrySpec) -> list[dict[str, Any]]:
    return [] if spec.uses_s3 else [{"name": IMAGES_VOLUME, "mountPath": STORAGE_DIR}]


def index_storage_secret(registry: dict[str, Any]) -> list[str]:
    """ "ns/name" of the S3 credentials Secret a registry reads (from the raw object: it may not parse)."""
    storage = (registry.get("spec") or {}).get("storage") or {}
    ref = (storage.get("s3") or {}).get("credentialsSecretRef") or {}
    if storage.get("type") != "S3" or not ref.get("name"):
        return []
    return [key_of(objects.namespace(registry), ref["name"])]


def credentials_fingerprint(ctx: RegistryContext, secrets: Store) -> str | None:
    """A digest of the S3 credentials (None without S3 credentials), for the pod-template hash: the
    pods read them from the environment at start, so a changed key must roll them.

    Raises a Problem naming the Secret or key when it is missing or empty."""
    s3 = s3_of(ctx.spec)
    if s3 is None or s3.credentials_secret_ref is None:
        return None
    ref = s3.credentials_secret_ref
    field = "spec.storage.s3.credentialsSecretRef"
    secret = secrets.get_by_name(ctx.namespace, ref.name)
    if secret is None:
        raise Problem(
            c.REASON_MISSING_SECRET,
            f"the S3 credentials Secret {ref.name} ({field}) does not exist in namespace {ctx.namespace}; "
            f"create it with the keys {ref.access_key_id_key} and {ref.secret_access_key_key}",
        )
    data = secret.get("data") or {}
    digest = hashlib.sha256()
    for key in (ref.access_key_id_key, ref.secret_access_key_key):
        value = data.get(key)
        if not value:
            raise Problem(
                c.REASON_INVALID_SECRET,
                f"the S3 credentials Secret {ref.name} ({field}) has no key {key}"
                if value is None
                else f"the S3 credentials Secret {ref.name} ({field}) has an empty {key}",
            )
        digest.update(key.encode() + b"\0" + str(value).encode() + b"\0")
    return digest.hexdigest()
