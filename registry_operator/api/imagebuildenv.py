"""`ImageBuildEnv`: one Secret with everything an in-cluster image build needs."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from registry_operator.api.base import ApiModel, Resource, is_empty
from registry_operator.api.common import DNS1123Subdomain, StatusBase
from registry_operator.api.constants import API_VERSION, KIND_IMAGE_BUILD_ENV, PLURAL_IMAGE_BUILD_ENVS


class BuildEnvSecretRef(ApiModel):
    """An input Secret in the ImageBuildEnv's namespace."""

    secret_name: DNS1123Subdomain
    """A `kubernetes.io/dockerconfigjson` Secret (key `.dockerconfigjson`), or an Opaque Secret with
    `config.json` (or `.dockerconfigjson`). It is only read: the operator never writes to it or adds an
    owner reference to it."""


class ImageBuildEnvSpec(ApiModel):
    """Desired state of an ImageBuildEnv."""

    redis: bool = False
    """Also run a password-protected redis as the build's layer cache: Deployment and Service
    `imagebuildenv-<name>-redis`, password in Secret `imagebuildenv-<name>-redis-conf`; the merged
    Secret then has `redis` (`host:port`) and `redis_password`, and Ready waits for redis. Setting it
    back to false removes all of them."""
    secrets: list[BuildEnvSecretRef] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["secretName"]},
    )
    """Docker config Secrets to merge into Secret `imagebuildenv-<name>-conf`, whose
    `.dockerconfigjson` and `config.json` hold the union of their registries (for a registry host
    several Secrets have, the later one in this list wins) and `makisu.yaml` the same credentials
    for makisu. `registry`, `ca.crt`, `username` and `password` are each copied from the first
    Secret in this list that has the key. The `ca.crt` of the Secret at position i (from 0) is
    also written as `ca-<i>.crt`, and makisu.yaml makes the hosts whose credentials come from that
    Secret trust `/makisu-internal/config/ca-<i>.crt` (so mount the merged Secret at
    `/makisu-internal/config`). A change to any input is merged again within seconds."""


class ImageBuildEnvStatus(StatusBase):
    """Observed state of an ImageBuildEnv."""

    # None (omitted) until first written; an empty list is written explicitly to clear it.
    secret_refs: list[Annotated[str, Field(max_length=253)]] | None = Field(default=None, max_length=64)
    """Written only by the original Go operator: the input Secrets it had added an owner reference
    to. This operator tracks inputs without touching them, removes those references and clears this
    field."""


class ImageBuildEnv(Resource):
    """Merges docker config Secrets into `imagebuildenv-<name>-conf` (docker config, makisu config,
    registry CA) and optionally runs a redis cache for the build."""

    KIND: ClassVar[str] = KIND_IMAGE_BUILD_ENV
    PLURAL: ClassVar[str] = PLURAL_IMAGE_BUILD_ENVS

    api_version: Literal["registry.mgoltzsche.github.com/v1alpha1"] = API_VERSION
    kind: Literal["ImageBuildEnv"] = KIND_IMAGE_BUILD_ENV
    spec: ImageBuildEnvSpec = Field(default_factory=ImageBuildEnvSpec)
    # Omitted while empty: the API has no status until the operator writes one.
    status: ImageBuildEnvStatus = Field(default_factory=ImageBuildEnvStatus, exclude_if=is_empty)
