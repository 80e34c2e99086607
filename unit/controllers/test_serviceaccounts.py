"""What the ServiceAccount attachment changes, decided by the pure `plan()`."""

from __future__ import annotations

from typing import Any

from registry_operator.controllers.serviceaccounts import ATTACHED_ANNOTATION, Attachment, plan


def service_account(name: str, entries: list[str], recorded: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "team", "resourceVersion": "7"}
    if recorded is not None:
        metadata["annotations"] = {ATTACHED_ANNOTATION: recorded}
    return {"metadata": metadata, "imagePullSecrets": [{"name": entry} for entry in entries]}


def pull_secret(name: str, accounts: list[str], *, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "team"}
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return {"metadata": metadata, "spec": {"serviceAccounts": accounts}}


def test_named_and_star_selections_add_one_entry_each_and_record_them() -> None:
    change = plan(
        service_account("default", ["other"]),
        [pull_secret("a", ["default"]), pull_secret("b", ["*"]), pull_secret("c", ["builder"])],
    )
    assert change == Attachment(
        add=("imagepullsecret-a", "imagepullsecret-b"),
        remove=(),
        recorded=("imagepullsecret-a", "imagepullsecret-b"),
    )
    body = change.applied_to(service_account("default", ["other"]))
    assert body["metadata"]["resourceVersion"] == "7"  # the write is conditional
    assert body["metadata"]["annotations"] == {ATTACHED_ANNOTATION: "imagepullsecret-a,imagepullsecret-b"}
    assert [entry["name"] for entry in body["imagePullSecrets"]] == [
        "other",
        "imagepullsecret-a",
        "imagepullsecret-b",
    ]


def test_nothing_to_do_when_attached_and_recorded() -> None:
    sa = service_account("default", ["other", "imagepullsecret-a"], recorded="imagepullsecret-a")
    assert plan(sa, [pull_secret("a", ["default"])]) is None


def test_deleted_or_deselecting_cr_removes_only_its_recorded_entry() -> None:
    sa = service_account(
        "default",
        ["other", "imagepullsecret-a", "imagepullsecret-b"],
        recorded="imagepullsecret-a,imagepullsecret-b",
    )
    change = plan(sa, [pull_secret("a", ["default"], deleting=True), pull_secret("b", ["builder"])])
    assert change is not None
    assert change.remove == ("imagepullsecret-a", "imagepullsecret-b")
    assert change.add == ()
    body = change.applied_to(sa)
    assert body["imagePullSecrets"] == [{"name": "other"}]
    assert body["metadata"]["annotations"] == {}  # the annotation goes


def test_an_entry_a_user_wrote_is_never_claimed_nor_removed() -> None:
    # The user listed the generated Secret by hand before the CR selected this ServiceAccount.
    sa = service_account("default", ["imagepullsecret-a"])
    assert plan(sa, [pull_secret("a", ["default"])]) is None
    assert plan(sa, []) is None  # CR gone: the user's entry stays
