"""Thread-safe, indexed object store (the informer's cache).

Objects are plain JSON dicts as the API server sent them. Keys are "namespace/name", or "name" for
cluster-scoped objects.

Immutability contract: the store never hands out its own dicts through `get`, `list` and
`by_index` — they return deep copies by default, so a reconciler may mutate what it reads without
corrupting the cache. Hot paths that only read may pass `copy=False` and must then treat the
result as read-only. Event handlers (see informer.py) receive the cached dicts themselves and must
not mutate them either.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Object = dict[str, Any]
IndexFunc = Callable[[Object], Iterable[str]]

NAMESPACE_INDEX = "namespace"
OWNER_UID_INDEX = "owner-uid"
CONTROLLER_OWNER_UID_INDEX = "controller-owner-uid"


def object_key(obj: Mapping[str, Any]) -> str:
    """The store key of an object: "namespace/name", or "name" when it has no namespace."""
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace") or ""
    name = metadata.get("name")
    if not name:
        raise ValueError("object has no metadata.name")
    return f"{namespace}/{name}" if namespace else str(name)


def split_key(key: str) -> tuple[str, str]:
    """Inverse of `object_key`: ("namespace", "name"); namespace is "" for cluster-scoped keys."""
    namespace, sep, name = key.partition("/")
    if not sep:
        return "", key
    if not namespace or not name or "/" in name:
        raise ValueError(f"invalid object key {key!r}")
    return namespace, name


def json_copy(value: Any) -> Any:
    """Deep copy of a JSON-shaped value (dicts, lists, scalars); much faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: json_copy(v) if isinstance(v, dict | list) else v for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) if isinstance(v, dict | list) else v for v in value]
    return value


def index_by_namespace(obj: Object) -> list[str]:
    namespace = (obj.get("metadata") or {}).get("namespace")
    return [namespace] if namespace else []


def index_by_owner_uid(obj: Object) -> list[str]:
    """Every ownerReference UID (controller or not)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [ref["uid"] for ref in refs if ref.get("uid")]


def index_by_controller_owner_uid(obj: Object) -> list[str]:
    """The UID of the ownerReference with controller=true, if any."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [ref["uid"] for ref in refs if ref.get("controller") and ref.get("uid")][:1]


def label_index(label: str) -> IndexFunc:
    """An index function keyed by the value of one label."""

    def index(obj: Object) -> list[str]:
        value = ((obj.get("metadata") or {}).get("labels") or {}).get(label)
        return [value] if value is not None else []

    return index


DEFAULT_INDEXERS: dict[str, IndexFunc] = {
    NAMESPACE_INDEX: index_by_namespace,
    OWNER_UID_INDEX: index_by_owner_uid,
    CONTROLLER_OWNER_UID_INDEX: index_by_controller_owner_uid,
}


class IndexConflictError(ValueError):
    pass


class Store:
    """Objects by key, plus secondary indexes {index name: {index value: {keys}}}.

    Every method is atomic with respect to the others.
    """

    def __init__(self, indexers: Mapping[str, IndexFunc] | None = None) -> None:
        self._lock = threading.RLock()
        self._items: dict[str, Object] = {}
        self._indexers: dict[str, IndexFunc] = dict(DEFAULT_INDEXERS)
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}
        if indexers:
            self.add_indexers(indexers)

    # --- indexes -----------------------------------------------------------------------------
    def add_indexers(self, indexers: Mapping[str, IndexFunc]) -> None:
        """Register more index functions; existing objects are indexed at once.

        Re-registering the same function under the same name is a no-op; a different function under
        an existing name is an error (two controllers would silently read each other's index).
        """
        with self._lock:
            for name, func in indexers.items():
                existing = self._indexers.get(name)
                if existing is func:
                    continue
                if existing is not None:
                    raise IndexConflictError(f"indexer {name!r} already registered")
                self._indexers[name] = func
                index: dict[str, set[str]] = {}
                for key, obj in self._items.items():
                    for value in func(obj):
                        index.setdefault(value, set()).add(key)
                self._indices[name] = index

    def _index_locked(self, key: str, old: Object | None, new: Object | None) -> None:
        for name, func in self._indexers.items():
            index = self._indices[name]
            old_values = set(func(old)) if old is not None else set()
            new_values = set(func(new)) if new is not None else set()
            if old_values == new_values:
                continue
            for value in old_values - new_values:
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
            for value in new_values - old_values:
                index.setdefault(value, set()).add(key)

    # --- writes (used by the informer) ---------------------------------------------------------
    def upsert(self, obj: Object) -> Object | None:
        """Store `obj` (taking ownership of it) and return the object it replaced, if any."""
        key = object_key(obj)
        with self._lock:
            old = self._items.get(key)
            self._items[key] = obj
            self._index_locked(key, old, obj)
            return old

    def delete(self, key: str) -> Object | None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._index_locked(key, old, None)
            return old

    def replace(
        self, objects: Iterable[Object]
    ) -> tuple[list[Object], list[tuple[Object, Object]], list[Object]]:
        """Make the store hold exactly `objects`; return (added, [(old, new) updated], deleted)."""
        added: list[Object] = []
        updated: list[tuple[Object, Object]] = []
        with self._lock:
            seen: set[str] = set()
            for obj in objects:
                key = object_key(obj)
                seen.add(key)
                old = self._items.get(key)
                self._items[key] = obj
                self._index_locked(key, old, obj)
                if old is None:
                    added.append(obj)
                else:
                    updated.append((old, obj))
            gone = [key for key in self._items if key not in seen]
            deleted: list[Object] = []
            for key in gone:
                old = self.delete(key)
                if old is not None:
                    deleted.append(old)
        return added, updated, deleted

    # --- reads ---------------------------------------------------------------------------------
    def get(self, key: str, *, copy: bool = True) -> Object | None:
        with self._lock:
            obj = self._items.get(key)
        if obj is None:
            return None
        return json_copy(obj) if copy else obj

    def get_by_name(self, namespace: str | None, name: str, *, copy: bool = True) -> Object | None:
        return self.get(f"{namespace}/{name}" if namespace else name, copy=copy)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def list(self, namespace: str | None = None, *, copy: bool = True) -> builtins.list[Object]:
        """All objects, or those of one namespace (via the namespace index)."""
        if namespace:
            return self.by_index(NAMESPACE_INDEX, namespace, copy=copy)
        with self._lock:
            objects = list(self._items.values())
        return [json_copy(obj) for obj in objects] if copy else objects

    def index_keys(self, index_name: str, value: str) -> builtins.list[str]:
        with self._lock:
            if index_name not in self._indices:
                raise KeyError(f"no indexer {index_name!r}")
            return sorted(self._indices[index_name].get(value, ()))

    def by_index(self, index_name: str, value: str, *, copy: bool = True) -> builtins.list[Object]:
        with self._lock:
            if index_name not in self._indices:
                raise KeyError(f"no indexer {index_name!r}")
            keys = sorted(self._indices[index_name].get(value, ()))
            objects = [self._items[key] for key in keys]
        return [json_copy(obj) for obj in objects] if copy else objects

    def index_values(self, index_name: str) -> builtins.list[str]:
        with self._lock:
            if index_name not in self._indices:
                raise KeyError(f"no indexer {index_name!r}")
            return sorted(self._indices[index_name])
