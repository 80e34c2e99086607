"""Pydantic base classes shared by all API types: camelCase aliases, RFC 3339 times, object metadata."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel


def _truncate_to_utc_seconds(value: datetime) -> datetime:
    # Kubernetes stores metav1.Time with one-second resolution. Truncating on the way in keeps an
    # in-memory value equal to what the API returns later, so "did the status change?" comparisons
    # do not see a difference that the apiserver would throw away (and write forever).
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a `Z` suffix, as the Kubernetes API writes times."""
    return _truncate_to_utc_seconds(value).strftime("%Y-%m-%dT%H:%M:%SZ")


Time = Annotated[
    datetime,
    AfterValidator(_truncate_to_utc_seconds),
    PlainSerializer(format_time, return_type=str, when_used="json"),
]
"""A metav1.Time: timezone-aware UTC datetime, whole seconds, serialised as `2006-01-02T15:04:05Z`."""


def utc_now() -> datetime:
    return _truncate_to_utc_seconds(datetime.now(UTC))


def is_empty(value: object) -> bool:
    """`exclude_if` predicate: leave a field out of the serialised form when it holds nothing."""
    if isinstance(value, BaseModel):
        return not value.model_dump(mode="json", by_alias=True, exclude_none=True)
    return value is None or value == "" or value == {} or value == []


class ApiModel(BaseModel):
    """Base of every API type.

    * Python attributes are snake_case; the wire format is camelCase (`persistentVolumeClaim`), and
      both are accepted when parsing.
    * Unknown fields are kept and written back unchanged: an operator that is older than the CRD
      installed in the cluster must not erase fields it does not know when it updates an object.
    * Attribute docstrings become the field descriptions in the generated CRDs.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="allow",
        use_attribute_docstrings=True,
        validate_assignment=True,
    )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-compatible camelCase dict the Kubernetes API expects (unset optional fields omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls.model_validate(data)


class OwnerReference(ApiModel):
    """A metav1.OwnerReference."""

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(ApiModel):
    """The parts of metav1.ObjectMeta the operator reads or writes; the rest is kept as extra fields.

    Empty values are left out when serialising, so a freshly built object sends only what was set.
    """

    name: str = Field(default="", exclude_if=is_empty)
    generate_name: str = Field(default="", exclude_if=is_empty)
    namespace: str = Field(default="", exclude_if=is_empty)
    uid: str = Field(default="", exclude_if=is_empty)
    resource_version: str = Field(default="", exclude_if=is_empty)
    generation: int = Field(default=0, exclude_if=lambda value: value == 0)
    creation_timestamp: Time | None = None
    deletion_timestamp: Time | None = None
    labels: dict[str, str] = Field(default_factory=dict, exclude_if=is_empty)
    annotations: dict[str, str] = Field(default_factory=dict, exclude_if=is_empty)
    finalizers: list[str] = Field(default_factory=list, exclude_if=is_empty)
    owner_references: list[OwnerReference] = Field(default_factory=list, exclude_if=is_empty)


class Resource(ApiModel):
    """Base of the five custom resource kinds. Subclasses set KIND/PLURAL and declare spec and status."""

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]

    api_version: str
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace
