"""Lookup from kind to API type, for code that handles objects of several kinds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from registry_operator.api.base import Resource
from registry_operator.api.constants import API_VERSION
from registry_operator.api.imagebuildenv import ImageBuildEnv
from registry_operator.api.imageregistry import ImageRegistry
from registry_operator.api.imageregistryaccount import ImageRegistryAccount
from registry_operator.api.imagesecret import ImagePullSecret, ImagePushSecret

RESOURCE_TYPES: Final[Mapping[str, type[Resource]]] = {
    model.KIND: model
    for model in (ImageRegistry, ImageRegistryAccount, ImagePushSecret, ImagePullSecret, ImageBuildEnv)
}


def parse_resource(obj: Mapping[str, Any]) -> Resource:
    """Parse an object dict of any of the five kinds into its model; ValueError for anything else."""
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") not in RESOURCE_TYPES:
        raise ValueError(f"not a {API_VERSION} custom resource: {obj.get('apiVersion')}/{obj.get('kind')}")
    return RESOURCE_TYPES[obj["kind"]].model_validate(obj)
