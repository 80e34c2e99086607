"""Indexed store: keys, indexes kept in step with writes, copies handed out."""

from __future__ import annotations

from typing import Any

import pytest

from registry_operator.kube.cache import (
    CONTROLLER_OWNER_UID_INDEX,
    NAMESPACE_INDEX,
    OWNER_UID_INDEX,
    IndexConflictError,
    Store,
    label_index,
    object_key,
    split_key,
)


def cm(
    name: str,
    namespace: str | None = "ns",
    *,
    labels: dict[str, str] | None = None,
    owners: list[dict[str, Any]] | None = None,
    data: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels or {}}
    if namespace:
        metadata["namespace"] = namespace
    if owners:
        metadata["ownerReferences"] = owners
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data or {}}


def test_keys_for_namespaced_and_cluster_scoped_objects() -> None:
    assert object_key(cm("a", "ns")) == "ns/a"
    assert object_key(cm("node-1", None)) == "node-1"
    assert split_key("ns/a") == ("ns", "a")
    assert split_key("node-1") == ("", "node-1")
    with pytest.raises(ValueError):
        split_key("a/b/c")
    with pytest.raises(ValueError):
        object_key({"metadata": {}})


def test_namespace_index_follows_adds_and_deletes() -> None:
    store = Store()
    store.upsert(cm("a", "one"))
    store.upsert(cm("b", "one"))
    store.upsert(cm("c", "two"))
    assert store.index_keys(NAMESPACE_INDEX, "one") == ["one/a", "one/b"]
    assert [o["metadata"]["name"] for o in store.list("two")] == ["c"]
    store.delete("one/a")
    assert store.index_keys(NAMESPACE_INDEX, "one") == ["one/b"]
    store.delete("one/b")
    assert "one" not in store.index_values(NAMESPACE_INDEX), "empty index values are dropped"


def test_owner_indexes_distinguish_controller_owner() -> None:
    store = Store()
    owners: list[dict[str, Any]] = [
        {"uid": "u-ctrl", "kind": "X", "name": "x", "controller": True},
        {"uid": "u-other", "kind": "Y", "name": "y"},
    ]
    store.upsert(cm("child", owners=owners))
    assert store.index_keys(OWNER_UID_INDEX, "u-ctrl") == ["ns/child"]
    assert store.index_keys(OWNER_UID_INDEX, "u-other") == ["ns/child"]
    assert store.index_keys(CONTROLLER_OWNER_UID_INDEX, "u-ctrl") == ["ns/child"]
    assert store.index_keys(CONTROLLER_OWNER_UID_INDEX, "u-other") == []


def test_update_moves_object_between_index_values() -> None:
    store = Store({"app": label_index("app")})
    store.upsert(cm("a", labels={"app": "web"}))
    assert store.index_keys("app", "web") == ["ns/a"]
    old = store.upsert(cm("a", labels={"app": "db"}))
    assert old is not None and old["metadata"]["labels"] == {"app": "web"}
    assert store.index_keys("app", "web") == []
    assert [o["metadata"]["name"] for o in store.by_index("app", "db")] == ["a"]


def test_custom_multi_value_index_function() -> None:
    def by_data_key(obj: dict[str, Any]) -> list[str]:
        return sorted(obj.get("data") or {})

    store = Store({"data-key": by_data_key})
    store.upsert(cm("a", data={"x": "1", "y": "2"}))
    store.upsert(cm("b", data={"y": "3"}))
    assert store.index_keys("data-key", "y") == ["ns/a", "ns/b"]
    assert store.index_keys("data-key", "x") == ["ns/a"]


def test_indexer_added_later_indexes_existing_objects() -> None:
    store = Store()
    store.upsert(cm("a", labels={"tier": "gold"}))
    index = label_index("tier")
    store.add_indexers({"tier": index})
    assert store.index_keys("tier", "gold") == ["ns/a"]
    store.add_indexers({"tier": index})  # same function again: fine
    with pytest.raises(IndexConflictError):
        store.add_indexers({"tier": label_index("tier")})


def test_unknown_index_is_an_error() -> None:
    with pytest.raises(KeyError):
        Store().by_index("nope", "x")


def test_reads_return_copies_that_cannot_corrupt_the_cache() -> None:
    store = Store({"app": label_index("app")})
    store.upsert(cm("a", labels={"app": "web"}, data={"k": "v"}))
    got = store.get("ns/a")
    assert got is not None
    got["data"]["k"] = "changed"
    got["metadata"]["labels"]["app"] = "changed"
    for listed in (store.list(), store.by_index("app", "web"), store.list("ns")):
        listed[0]["data"]["k"] = "changed too"
    fresh = store.get("ns/a")
    assert fresh is not None and fresh["data"] == {"k": "v"}
    assert store.index_keys("app", "web") == ["ns/a"]
    assert store.get("ns/a", copy=False) is store.get("ns/a", copy=False)


def test_replace_reports_added_updated_and_deleted() -> None:
    store = Store()
    store.upsert(cm("keep", data={"v": "1"}))
    store.upsert(cm("gone"))
    added, updated, deleted = store.replace([cm("keep", data={"v": "2"}), cm("new")])
    assert [o["metadata"]["name"] for o in added] == ["new"]
    assert [(old["data"], new["data"]) for old, new in updated] == [({"v": "1"}, {"v": "2"})]
    assert [o["metadata"]["name"] for o in deleted] == ["gone"]
    assert sorted(store.keys()) == ["ns/keep", "ns/new"]
    assert store.index_keys(NAMESPACE_INDEX, "ns") == ["ns/keep", "ns/new"]


def test_get_by_name_and_membership() -> None:
    store = Store()
    store.upsert(cm("a"))
    store.upsert(cm("cluster-wide", None))
    assert store.get_by_name("ns", "a") is not None
    assert store.get_by_name(None, "cluster-wide") is not None
    assert store.get_by_name("other", "a") is None
    assert "ns/a" in store and "ns/b" not in store
    assert len(store) == 2
