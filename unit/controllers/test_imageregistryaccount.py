"""The ImageRegistryAccount expiry reconciler: requeue until the TTL ends, then delete (by uid)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from registry_operator.api import constants as c
from registry_operator.controllers.imageregistryaccount import EXPIRY_SLACK_SECONDS, AccountExpiryReconciler
from registry_operator.kube.cache import Store
from registry_operator.kube.client import Client
from registry_operator.kube.controller import Request
from registry_operator.kube.errors import Conflict
from registry_operator.kube.resources import Resource

CREATED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class DeletingApi(Client):
    """Records deletes; a uid precondition that does not match fails like the apiserver's."""

    def __init__(self, current_uids: dict[str, str]) -> None:  # no server behind it
        self.current_uids = current_uids
        self.deleted: list[tuple[str, str, str | None]] = []
        self.statuses: list[dict[str, Any]] = []

    def update_status(self, resource: Resource, obj: Mapping[str, Any], **_: Any) -> dict[str, Any]:
        self.statuses.append(dict(obj["status"]))
        return dict(obj)

    def delete(
        self, resource: Resource, name: str, namespace: str | None = None, *, uid: str | None = None, **_: Any
    ) -> None:
        if uid is not None and self.current_uids.get(name) != uid:
            raise Conflict(409, "Conflict", "Precondition failed: UID in precondition")
        self.deleted.append((namespace or "", name, uid))


@dataclass
class Events:
    recorded: list[tuple[str, str, str]] = field(default_factory=list)

    def normal(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.recorded.append((obj["metadata"]["name"], reason, message))

    def warning(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.recorded.append((obj["metadata"]["name"], reason, message))


def account(name: str, ttl: str | None, *, uid: str = "uid-1") -> dict[str, Any]:
    spec: dict[str, Any] = {"password": "$2b$04$" + "x" * 53}
    if ttl is not None:
        spec["ttl"] = ttl
    return {
        "apiVersion": "registry.mgoltzsche.github.com/v1alpha1",
        "kind": "ImageRegistryAccount",
        "metadata": {
            "name": name,
            "namespace": "infra",
            "uid": uid,
            "creationTimestamp": CREATED.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": spec,
    }


def reconcile_at(
    now: datetime, obj: dict[str, Any], current_uid: str | None = None
) -> tuple[float | None, DeletingApi, Events]:
    store = Store()
    store.upsert(obj)
    api = DeletingApi({obj["metadata"]["name"]: current_uid or obj["metadata"]["uid"]})
    events = Events()
    result = AccountExpiryReconciler(api, store, events, now=lambda: now).reconcile(
        Request("infra", obj["metadata"]["name"])
    )
    return (None if result is None else result.requeue_after), api, events


def test_an_account_before_its_expiry_is_requeued_for_exactly_then_plus_slack() -> None:
    requeue, api, _ = reconcile_at(CREATED + timedelta(hours=1), account("push.a.b.1", "24h0m0s"))
    assert requeue == pytest.approx(23 * 3600 + EXPIRY_SLACK_SECONDS)
    assert api.deleted == []


def test_an_account_exactly_at_its_expiry_is_not_expired_yet() -> None:
    requeue, api, _ = reconcile_at(CREATED + timedelta(seconds=20), account("push.a.b.1", "20s"))
    assert requeue == pytest.approx(EXPIRY_SLACK_SECONDS)
    assert api.deleted == []


def test_an_expired_account_is_deleted_with_a_uid_precondition_and_an_event() -> None:
    requeue, api, events = reconcile_at(CREATED + timedelta(seconds=20.5), account("push.a.b.1", "20s"))
    assert requeue is None
    assert api.deleted == [("infra", "push.a.b.1", "uid-1")]
    assert events.recorded == [
        ("push.a.b.1", "Expired", "Deleted: its TTL 20s ended at 2026-03-01T12:00:20+00:00")
    ]


def test_an_account_replaced_under_the_same_name_is_not_deleted() -> None:
    requeue, api, events = reconcile_at(
        CREATED + timedelta(days=2), account("push.a.b.1", "24h"), current_uid="uid-of-the-new-one"
    )
    assert requeue is None
    assert api.deleted == []
    assert events.recorded == []


@pytest.mark.parametrize("ttl", [None, ""], ids=["no-ttl", "empty-ttl"])
def test_accounts_without_a_ttl_are_left_alone(ttl: str | None) -> None:
    requeue, api, _ = reconcile_at(CREATED + timedelta(days=3650), account("static-user", ttl))
    assert requeue is None
    assert api.deleted == []


def test_an_unreadable_ttl_never_deletes() -> None:
    requeue, api, _ = reconcile_at(CREATED + timedelta(days=3650), account("odd", "one day"))
    assert requeue is None
    assert api.deleted == []


def test_missing_or_terminating_accounts_are_ignored() -> None:
    store = Store()
    terminating = account("push.a.b.1", "1s")
    terminating["metadata"]["deletionTimestamp"] = CREATED.strftime("%Y-%m-%dT%H:%M:%SZ")
    store.upsert(terminating)
    api = DeletingApi({})
    reconciler = AccountExpiryReconciler(api, store, Events(), now=lambda: CREATED + timedelta(days=1))
    assert reconciler.reconcile(Request("infra", "push.a.b.1")) is None
    assert reconciler.reconcile(Request("infra", "gone")) is None
    assert api.deleted == []


def ready(api: DeletingApi) -> dict[str, Any]:
    assert len(api.statuses) == 1, api.statuses
    conditions: list[dict[str, Any]] = api.statuses[0]["conditions"]
    (condition,) = [c for c in conditions if c["type"] == "Ready"]
    return condition


def test_a_valid_account_is_ready_and_says_until_when() -> None:
    _, api, _ = reconcile_at(CREATED + timedelta(hours=1), account("push.a.b.1", "24h0m0s"))
    condition = ready(api)
    assert (condition["status"], condition["reason"]) == ("True", "Available")
    assert condition["message"] == "valid until 2026-03-02T12:00:00+00:00"


def test_a_static_account_is_ready_without_expiry() -> None:
    _, api, _ = reconcile_at(CREATED + timedelta(days=3650), account("static-user", None))
    assert ready(api)["message"] == "no spec.ttl: valid until deleted"


def test_an_unreadable_ttl_is_reported() -> None:
    _, api, _ = reconcile_at(CREATED, account("odd", "one day"))
    condition = ready(api)
    assert (condition["status"], condition["reason"]) == ("False", "InvalidSpec")
    assert "spec.ttl" in condition["message"]


def test_an_unchanged_ready_condition_is_not_written_again() -> None:
    obj = account("push.a.b.1", "24h")
    _, first, _ = reconcile_at(CREATED + timedelta(hours=1), obj)
    obj["status"] = first.statuses[0]
    _, second, _ = reconcile_at(CREATED + timedelta(hours=2), obj)
    assert second.statuses == []


def test_an_issued_account_gets_no_status_but_still_expires() -> None:
    # The owner labels of an ImagePullSecret's account: its TTL and Age columns say what a status would.
    issued = account("pull.team.app.1", "24h0m0s")
    issued["metadata"]["labels"] = {
        c.LABEL_IMAGE_PULL_SECRET: "app",
        c.LABEL_SECRET_NAMESPACE: "team",
    }
    requeue, api, _ = reconcile_at(CREATED + timedelta(hours=1), issued)
    assert requeue == pytest.approx(23 * 3600 + EXPIRY_SLACK_SECONDS)
    assert api.statuses == []
    _, expired, events = reconcile_at(CREATED + timedelta(hours=25), issued)
    assert expired.deleted == [("infra", "pull.team.app.1", "uid-1")]
    assert [reason for _, reason, _ in events.recorded] == ["Expired"]
