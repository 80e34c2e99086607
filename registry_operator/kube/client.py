"""The REST verbs (client-go's typed clients, for any resource): get, list, watch, create, update,
patch, apply, delete, on plain JSON dicts and `Resource` descriptors.

This module owns what each verb sends: paths, query parameters, bodies, content types, list
paging and its fallback, delete preconditions. How a request travels (timeouts, deadlines, retries,
errors) is `rest.py`; every verb takes its `timeout` and `deadline` through to it. An open watch is
a `watch.WatchStream`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from registry_operator.kube import objects
from registry_operator.kube.errors import Gone, NotFound
from registry_operator.kube.resources import Resource
from registry_operator.kube.rest import RestClient
from registry_operator.kube.watch import WatchStream

Object = dict[str, Any]

DEFAULT_PAGE_SIZE = 500


class PatchType(enum.StrEnum):
    MERGE = "application/merge-patch+json"
    JSON = "application/json-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    APPLY = "application/apply-patch+yaml"


class PropagationPolicy(enum.StrEnum):
    ORPHAN = "Orphan"
    BACKGROUND = "Background"
    FOREGROUND = "Foreground"


class Client(RestClient):
    """REST client for any resource. Thread-safe: share one instance (or its views) between threads."""

    # --- reads ---------------------------------------------------------------------------------
    def get(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Object:
        path = resource.path(namespace, name)
        result: Object = self.request("GET", path, timeout=timeout, deadline=deadline)
        return result

    def list_page(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Object:
        """One LIST request, as the server answered it (items lack apiVersion/kind)."""
        query = {
            "labelSelector": label_selector or None,
            "fieldSelector": field_selector or None,
            "resourceVersion": resource_version,
            "resourceVersionMatch": resource_version_match,
            "limit": limit or None,
            "continue": continue_token or None,
        }
        path = resource.path(namespace)
        result: Object = self.request("GET", path, query=query, timeout=timeout, deadline=deadline)
        return result

    def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
        page_size: int | None = DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Object:
        """Every matching object, fetched in pages of `page_size` (None/0 = one request).

        Returns {"metadata": {"resourceVersion": ...}, "items": [...]}, each item with apiVersion
        and kind filled in. If a continue token expires mid-way, falls back to one unpaged LIST.
        """

        def page(continue_token: str | None, limit: int | None) -> Object:
            return self.list_page(
                resource,
                namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                resource_version=None if continue_token else resource_version,
                resource_version_match=None if continue_token else resource_version_match,
                limit=limit,
                continue_token=continue_token,
                timeout=timeout,
                deadline=deadline,
            )

        items: list[Object] = []
        continue_token: str | None = None
        while True:
            try:
                result = page(continue_token, page_size)
            except Gone:
                if continue_token is None:
                    raise
                items, result = [], page(None, None)
            page_items = result.get("items") or []
            for item in page_items:
                item.setdefault("apiVersion", resource.api_version)
                item.setdefault("kind", resource.kind)
            items.extend(page_items)
            continue_token = objects.metadata(result).get("continue") or None
            if not continue_token:
                return {
                    "apiVersion": resource.api_version,
                    "kind": f"{resource.kind}List",
                    "metadata": {"resourceVersion": objects.metadata(result).get("resourceVersion", "")},
                    "items": items,
                }

    def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int | None = None,
        allow_bookmarks: bool = True,
        read_timeout: float | None = None,
        connect_timeout: float = 10.0,
        deadline: float | None = None,
    ) -> WatchStream:
        """Open a watch. HTTP errors when opening raise at once; see WatchStream for the rest.

        `timeout_seconds` is the server-side duration; `read_timeout` (default: that plus 30 s)
        bounds the silence on the socket, so a half-open connection cannot hang forever. A
        `deadline` also ends the stream: the server-side duration and the silence are cut to it.
        """
        deadline = self.deadline_for(deadline)
        if deadline is not None:
            remaining = self.time_left(f"watch {resource}", deadline)
            timeout_seconds = max(1, int(min(timeout_seconds or remaining, remaining)))
            read_timeout = min(read_timeout if read_timeout is not None else remaining, remaining)
        query = {
            "watch": True,
            "resourceVersion": resource_version,
            "labelSelector": label_selector or None,
            "fieldSelector": field_selector or None,
            "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": allow_bookmarks or None,
        }
        response = self.stream(
            resource.path(namespace),
            query=query,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout if read_timeout is not None else (timeout_seconds or 300) + 30.0,
            deadline=deadline,
        )
        return WatchStream(response, resource)

    # --- writes --------------------------------------------------------------------------------
    @staticmethod
    def _namespace_of(resource: Resource, obj: Mapping[str, Any], namespace: str | None) -> str | None:
        if not resource.namespaced:
            return None
        namespace = namespace or objects.namespace(obj)
        if not namespace:
            raise ValueError(f"{resource} is namespaced; no namespace given")
        return namespace

    @staticmethod
    def _name_of(obj: Mapping[str, Any]) -> str:
        name = objects.name(obj)
        if not name:
            raise ValueError("object has no metadata.name")
        return name

    def create(
        self,
        resource: Resource,
        obj: Mapping[str, Any],
        namespace: str | None = None,
        *,
        field_manager: str | None = None,
        dry_run: bool = False,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Object:
        body = {"apiVersion": resource.api_version, "kind": resource.kind, **obj}
        query = {"fieldManager": field_manager, "dryRun": "All" if dry_run else None}
        result: Object = self.request(
            "POST",
            resource.path(self._namespace_of(resource, obj, namespace)),
            query=query,
            body=body,
            timeout=timeout,
            deadline=deadline,
        )
        return result

    def update(
        self,
        resource: Resource,
        obj: Mapping[str, Any],
        *,
        field_manager: str | None = None,
        subresource: str | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Object:
        """PUT the whole object; its metadata.resourceVersion (if set) makes this a conditional write."""
        body = {"apiVersion": resource.api_version, "kind": resource.kind, **obj}
        namespace = self._namespace_of(resource, obj, None)
        result: Object = self.request(
            "PUT",
            resource.path(namespace, self._name_of(obj), subresource),
            query={"fieldManager": field_manager},
            body=body,
            timeout=timeout,
            deadline=deadline,
        )
        return result

    def update_status(
        self,
        resource: Resource,
        obj: Mapping[str, Any],
        *,
        field_manager: str | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Object:
        return self.update(
            resource,
            obj,
            field_manager=field_manager,
            subresource="status",
            timeout=timeout,
            deadline=deadline,
        )

    def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        patch_type: PatchType = PatchType.MERGE,
        field_manager: str | None = None,
        force: bool | None = None,
        subresource: str | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Object:
        """PATCH; `patch` is a dict (merge / strategic / apply) or a list of ops (JSON patch)."""
        if patch_type is PatchType.JSON and not isinstance(patch, list):
            raise TypeError("a JSON patch is a list of operations")
        if patch_type is PatchType.APPLY and not field_manager:
            raise ValueError("server-side apply needs a field manager")
        if resource.namespaced and not namespace:
            raise ValueError(f"{resource} is namespaced; no namespace given")
        result: Object = self.request(
            "PATCH",
            resource.path(namespace if resource.namespaced else None, name, subresource),
            query={"fieldManager": field_manager, "force": force},
            body=patch,
            content_type=patch_type.value,
            timeout=timeout,
            deadline=deadline,
        )
        return result

    def patch_status(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        patch_type: PatchType = PatchType.MERGE,
        field_manager: str | None = None,
        force: bool | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Object:
        return self.patch(
            resource,
            name,
            patch,
            namespace,
            patch_type=patch_type,
            field_manager=field_manager,
            force=force,
            subresource="status",
            timeout=timeout,
            deadline=deadline,
        )

    def apply(
        self,
        resource: Resource,
        obj: Mapping[str, Any],
        *,
        field_manager: str,
        force: bool = False,
        subresource: str | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Object:
        """Server-side apply `obj` (only the fields this manager owns; dropped fields are removed)."""
        body = {"apiVersion": resource.api_version, "kind": resource.kind, **obj}
        return self.patch(
            resource,
            self._name_of(obj),
            body,
            self._namespace_of(resource, obj, None),
            patch_type=PatchType.APPLY,
            field_manager=field_manager,
            force=force,
            subresource=subresource,
            timeout=timeout,
            deadline=deadline,
        )

    def apply_status(
        self,
        resource: Resource,
        obj: Mapping[str, Any],
        *,
        field_manager: str,
        force: bool = False,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Object:
        return self.apply(
            resource,
            obj,
            field_manager=field_manager,
            force=force,
            subresource="status",
            timeout=timeout,
            deadline=deadline,
        )

    def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        propagation_policy: PropagationPolicy | None = None,
        grace_period_seconds: int | None = None,
        missing_ok: bool = False,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Object | None:
        """DELETE, optionally only if the object still has `uid` / `resource_version` (else Conflict).

        Returns the server's answer (the object, or a Status); None if missing and `missing_ok`.
        """
        options: Object = {"apiVersion": "v1", "kind": "DeleteOptions"}
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        if preconditions:
            options["preconditions"] = preconditions
        if propagation_policy is not None:
            options["propagationPolicy"] = str(propagation_policy)
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if resource.namespaced and not namespace:
            raise ValueError(f"{resource} is namespaced; no namespace given")
        try:
            result: Object | None = self.request(
                "DELETE",
                resource.path(namespace if resource.namespaced else None, name),
                body=options,
                timeout=timeout,
                deadline=deadline,
            )
        except NotFound:
            if missing_ok:
                return None
            raise
        return result
