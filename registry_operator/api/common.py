"""Constrained field types shared by several kinds, and the status base class.

The constraints are declared once, here, and apply twice: pydantic enforces them when a model is
built in Python, and the CRD generator (api/crd.py) turns them into the OpenAPI schema the apiserver
enforces.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import Field, WithJsonSchema

from registry_operator.api.base import ApiModel, is_empty
from registry_operator.api.conditions import Condition
from registry_operator.api.names import (
    DNS1035_LABEL_PATTERN,
    DNS1123_LABEL_MAX_LENGTH,
    DNS1123_LABEL_PATTERN,
    DNS1123_SUBDOMAIN_MAX_LENGTH,
    DNS1123_SUBDOMAIN_PATTERN,
    MAX_REGISTRY_NAME_LENGTH,
)
from registry_operator.goduration import GO_DURATION_PATTERN

DNS1123Label = Annotated[str, Field(max_length=DNS1123_LABEL_MAX_LENGTH, pattern=DNS1123_LABEL_PATTERN)]
DNS1123Subdomain = Annotated[
    str, Field(max_length=DNS1123_SUBDOMAIN_MAX_LENGTH, pattern=DNS1123_SUBDOMAIN_PATTERN)
]
RegistryName = Annotated[str, Field(max_length=MAX_REGISTRY_NAME_LENGTH, pattern=DNS1035_LABEL_PATTERN)]
"""The name of an ImageRegistry (see names.MAX_REGISTRY_NAME_LENGTH)."""

GoDuration = Annotated[
    str,
    Field(
        max_length=64,
        pattern=GO_DURATION_PATTERN,
        json_schema_extra={
            # The pattern cannot bound the magnitude; CEL's duration() is Go's ParseDuration, so a
            # value past Go's range (about 2562047h) is refused at admission, not by the operator.
            "x-kubernetes-validations": [
                {
                    "rule": "duration(self) >= duration('0s')",
                    "message": "must be a Go duration up to 2562047h",
                }
            ]
        },
    ),
]
"""A non-negative Go duration such as `24h`, `12h30m` or `90s`."""

# resource.Quantity without a sign: the only quantities here are storage sizes, and a negative size is
# never meant. (Same grammar as the one controller-gen emits for resource.Quantity otherwise.)
QUANTITY_PATTERN: Final = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = Annotated[
    int | Annotated[str, Field(max_length=64, pattern=QUANTITY_PATTERN)],
    # The structural-schema form of an int-or-string (the only `anyOf` Kubernetes accepts here).
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "maxLength": 64,
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity such as `1Gi` or `500M` (or a plain integer number of bytes)."""

LIST_MAP_BY_TYPE: Final[dict[str, Any]] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


class StatusBase(ApiModel):
    """Status fields every kind has."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation the operator last acted on."""
    # Omitted while empty (conditions are never removed, so omitting cannot mean "clear").
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, json_schema_extra=LIST_MAP_BY_TYPE, exclude_if=is_empty
    )
    """Current state: `Ready` on every kind (with a reason and, when not ready, a message saying why)."""
