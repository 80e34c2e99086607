"""How every reconciler reports: one problem type and one status writer.

* `Problem` is what a reconcile step raises (or returns) when a user or administrator must act:
  the condition reason and message, when to look again without an event, and which Event to record.
* `update_status()` computes conditions on the kind's status model with metav1.Condition semantics
  (`observedGeneration` = the object's generation, `lastTransitionTime` moves only when the status
  does) and writes the status subresource only when it differs, under the object's resourceVersion.
* `condition_changed()` tells whether a condition would change, which is when reconcilers record
  an Event: a problem is reported once per change, not once per retry.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal, TypeVar

from pydantic import ValidationError

from registry_operator.api import constants as c
from registry_operator.api.common import StatusBase
from registry_operator.api.conditions import Condition, ConditionStatus, set_condition
from registry_operator.controllers.common import FIELD_MANAGER
from registry_operator.kube import objects
from registry_operator.kube.client import Client
from registry_operator.kube.resources import Resource

EventType = Literal["Normal", "Warning"]
WARNING: Final[EventType] = "Warning"

S = TypeVar("S", bound=StatusBase)


class Problem(Exception):
    """Something a user or administrator has to fix; becomes a False condition with this reason.

    `requeue_after`: look again this long after, even without an event (someone may fix the cluster);
    `event_type`: the Event recorded when the condition changes to this problem (None: no Event).
    Messages never contain secret data.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        requeue_after: timedelta | None = None,
        event_type: EventType | None = WARNING,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.requeue_after = requeue_after
        self.event_type = event_type

    def condition(self, condition_type: str = c.CONDITION_READY) -> ConditionValue:
        return ConditionValue(condition_type, "False", self.reason, self.message)


@dataclass(frozen=True)
class ConditionValue:
    """What a condition should say; `update_status()` adds generation and transition time."""

    type: str
    status: ConditionStatus
    reason: str
    message: str

    @classmethod
    def true(cls, reason: str, message: str, condition_type: str = c.CONDITION_READY) -> ConditionValue:
        return cls(condition_type, "True", reason, message)

    @classmethod
    def false(cls, reason: str, message: str, condition_type: str = c.CONDITION_READY) -> ConditionValue:
        return cls(condition_type, "False", reason, message)


def read_status(model: type[S], obj: Mapping[str, Any]) -> S:
    """The object's status as `model`; a status this operator cannot read (e.g. the original
    operator's reason-less conditions) starts afresh instead of failing every reconcile."""
    try:
        return model.model_validate(obj.get("status") or {})
    except ValidationError:
        return model()


def with_conditions(status: S, obj: Mapping[str, Any], now: datetime, *values: ConditionValue) -> S:
    """A copy of `status` with `values` set for the object's current generation."""
    generation = objects.metadata(obj).get("generation")
    updated = status.model_copy(deep=True)
    for value in values:
        set_condition(
            updated.conditions,
            Condition(
                type=value.type,
                status=value.status,
                reason=value.reason,
                message=value.message,
                observed_generation=generation,
            ),
            now,
        )
    updated.observed_generation = generation
    return updated


def condition_changed(obj: Mapping[str, Any], value: ConditionValue) -> bool:
    """Whether the object's condition of `value.type` says something else (or is missing)."""
    current = objects.condition(obj, value.type) or {}
    return (current.get("status"), current.get("reason"), current.get("message")) != (
        value.status,
        value.reason,
        value.message,
    )


def write_status(
    client: Client, resource: Resource, obj: Mapping[str, Any], status: Mapping[str, Any]
) -> dict[str, Any]:
    """PUT `status` on `obj` unless it is already equal; return the object as the API now has it.

    The body carries the object's resourceVersion, so a status computed from a stale cache fails
    with Conflict instead of overwriting newer data; the returned object carries the new
    resourceVersion for a second write in the same pass.
    """
    if (obj.get("status") or {}) == status:
        return dict(obj)
    body = copy.deepcopy(dict(obj))
    body["status"] = dict(status)
    written: dict[str, Any] = client.update_status(resource, body, field_manager=FIELD_MANAGER)
    return written


def update_status(
    client: Client,
    resource: Resource,
    obj: Mapping[str, Any],
    status: S,
    now: datetime,
    *values: ConditionValue,
) -> dict[str, Any]:
    """Set `values` on `status` (see `with_conditions`) and write it if it differs from `obj`'s."""
    return write_status(client, resource, obj, with_conditions(status, obj, now, *values).to_dict())


def requeue_seconds(problems: Sequence[Problem]) -> list[float]:
    return [p.requeue_after.total_seconds() for p in problems if p.requeue_after is not None]
