"""The status condition type shared by all kinds, and the rules for updating a condition list."""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence
from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from registry_operator.api.base import ApiModel, Time, utc_now
from registry_operator.api.constants import CONDITION_READY

ConditionStatus = Literal["True", "False", "Unknown"]

# The same limits metav1.Condition has, so `kubectl wait` and generic tooling see familiar objects.
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(ApiModel):
    """One aspect of the object's current state, in the shape of metav1.Condition."""

    # `lastTransitionTime` has a Python default (set_condition() overwrites it anyway), but the API
    # always carries one, so the schema still requires it.
    model_config = ConfigDict(
        json_schema_extra={"required": ["type", "status", "reason", "lastTransitionTime"]},
    )

    type: Annotated[str, Field(max_length=316, pattern=CONDITION_TYPE_PATTERN)]
    """Type of condition in CamelCase, e.g. `Ready`."""
    status: ConditionStatus
    """Status of the condition: True, False or Unknown."""
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)]
    """Programmatic identifier of the cause of the last transition, in CamelCase."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Human-readable details about the cause, e.g. the error a user can act on."""
    last_transition_time: Time = Field(default_factory=utc_now)
    """When the status last changed (not when reason or message last changed)."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation the condition was computed from."""


def get_condition(conditions: Sequence[Condition], condition_type: str) -> Condition | None:
    return next((condition for condition in conditions if condition.type == condition_type), None)


def set_condition(conditions: MutableSequence[Condition], new: Condition, now: datetime) -> bool:
    """Insert or update the condition of `new.type` in place; return whether anything changed.

    `lastTransitionTime` becomes `now` when the status changes (or the type is new) and is kept
    otherwise, whatever `new.last_transition_time` says. A change of reason, message or
    observedGeneration alone counts as a change (the status must be written) but is no transition.
    """
    existing = get_condition(conditions, new.type)
    if existing is None:
        added = new.model_copy(deep=True)
        added.last_transition_time = now  # assignment is validated: normalised to UTC seconds
        conditions.append(added)
        return True
    changed = (existing.status, existing.reason, existing.message, existing.observed_generation) != (
        new.status,
        new.reason,
        new.message,
        new.observed_generation,
    )
    if changed:
        if existing.status != new.status:
            existing.last_transition_time = now
        existing.status = new.status
        existing.reason = new.reason
        existing.message = new.message
        existing.observed_generation = new.observed_generation
    return changed


def is_ready(conditions: Sequence[Condition], generation: int | None = None) -> bool:
    """Whether `Ready` is True; with `generation`, also that it was computed for that generation."""
    ready = get_condition(conditions, CONDITION_READY)
    if ready is None or ready.status != "True":
        return False
    return generation is None or ready.observed_generation == generation
