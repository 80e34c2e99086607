"""Condition updates: transition times move only when the status does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from registry_operator.api import (
    CONDITION_READY,
    CONDITION_SYNCED,
    REASON_AVAILABLE,
    REASON_FAILED_SYNC,
    REASON_UPDATING,
    Condition,
    get_condition,
    is_ready,
    set_condition,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def ready(status: str, reason: str, message: str = "", generation: int | None = None) -> Condition:
    return Condition.model_validate(
        {
            "type": CONDITION_READY,
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
        }
    )


def test_new_condition_is_added_with_now_as_transition_time() -> None:
    conditions: list[Condition] = []
    assert set_condition(conditions, ready("True", REASON_AVAILABLE), T0)
    assert len(conditions) == 1
    assert conditions[0].last_transition_time == T0
    assert conditions[0].status == "True"


def test_unchanged_condition_reports_no_change() -> None:
    conditions: list[Condition] = []
    set_condition(conditions, ready("True", REASON_AVAILABLE, generation=2), T0)
    assert not set_condition(conditions, ready("True", REASON_AVAILABLE, generation=2), T1)
    assert conditions[0].last_transition_time == T0


def test_message_change_is_a_change_but_not_a_transition() -> None:
    conditions: list[Condition] = []
    set_condition(conditions, ready("False", REASON_UPDATING, "0/1 pods updating"), T0)
    assert set_condition(conditions, ready("False", REASON_UPDATING, "1/2 pods updating"), T1)
    assert conditions[0].message == "1/2 pods updating"
    assert conditions[0].last_transition_time == T0


def test_observed_generation_change_is_a_change_but_not_a_transition() -> None:
    conditions: list[Condition] = []
    set_condition(conditions, ready("True", REASON_AVAILABLE, generation=1), T0)
    assert set_condition(conditions, ready("True", REASON_AVAILABLE, generation=2), T1)
    assert conditions[0].observed_generation == 2
    assert conditions[0].last_transition_time == T0


def test_status_change_moves_the_transition_time() -> None:
    conditions: list[Condition] = []
    set_condition(conditions, ready("True", REASON_AVAILABLE), T0)
    assert set_condition(conditions, ready("False", REASON_FAILED_SYNC, "boom"), T1)
    assert (conditions[0].status, conditions[0].reason, conditions[0].message) == (
        "False",
        "FailedSync",
        "boom",
    )
    assert conditions[0].last_transition_time == T1


def test_other_condition_types_are_left_alone_and_order_is_kept() -> None:
    conditions: list[Condition] = []
    synced = Condition(type=CONDITION_SYNCED, status="True", reason="Synced")
    set_condition(conditions, synced, T0)
    set_condition(conditions, ready("True", REASON_AVAILABLE), T0)
    set_condition(conditions, ready("False", REASON_UPDATING), T1)
    assert [c.type for c in conditions] == [CONDITION_SYNCED, CONDITION_READY]
    assert conditions[0].last_transition_time == T0


def test_transition_time_is_whole_seconds_utc_as_the_api_stores_it() -> None:
    conditions: list[Condition] = []
    local = datetime(2026, 1, 1, 13, 0, 0, 999_999, tzinfo=UTC).astimezone(
        tz=datetime.now().astimezone().tzinfo
    )
    set_condition(conditions, ready("True", REASON_AVAILABLE), local)
    assert conditions[0].last_transition_time == datetime(2026, 1, 1, 13, 0, 0, tzinfo=UTC)
    assert conditions[0].to_dict()["lastTransitionTime"] == "2026-01-01T13:00:00Z"


def test_new_condition_is_copied_not_aliased() -> None:
    conditions: list[Condition] = []
    new = ready("True", REASON_AVAILABLE)
    set_condition(conditions, new, T0)
    set_condition(conditions, ready("False", REASON_UPDATING), T1)
    assert new.status == "True"


def test_get_condition_and_is_ready() -> None:
    conditions: list[Condition] = []
    assert get_condition(conditions, CONDITION_READY) is None
    assert not is_ready(conditions)
    set_condition(conditions, ready("False", REASON_UPDATING), T0)
    assert not is_ready(conditions)
    set_condition(conditions, ready("True", REASON_AVAILABLE, generation=3), T1)
    assert get_condition(conditions, CONDITION_READY) is conditions[0]
    assert is_ready(conditions)
    assert is_ready(conditions, generation=3)
    assert not is_ready(conditions, generation=4)  # Ready, but for an older spec


@pytest.mark.parametrize("reason", ["", "has space", "1Digit", "trailing-"])
def test_reason_must_be_camel_case_like_metav1(reason: str) -> None:
    with pytest.raises(ValidationError):
        ready("True", reason)


def test_parses_and_dumps_the_api_form() -> None:
    wire = {
        "type": "Ready",
        "status": "False",
        "reason": "RegistryUnavailable",
        "message": 'imageregistries.registry.mgoltzsche.github.com "registry" not found',
        "lastTransitionTime": "2026-03-04T05:06:07Z",
        "observedGeneration": 7,
    }
    condition = Condition.model_validate(wire)
    assert condition.last_transition_time == datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert condition.to_dict() == wire
