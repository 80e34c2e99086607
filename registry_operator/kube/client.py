"""Thin, thread-safe REST client over the `kubernetes` package's Configuration / ApiClient.

The `kubernetes` package is used for what it does well — loading a kubeconfig or the in-cluster
service account, TLS and the connection pool — but requests go straight to its urllib3 pool and
objects stay plain JSON dicts: no generated model classes are built per object or per event.

Every call has a timeout (the client's `request_timeout` unless overridden per call), every response
is counted in `rest_client_requests_total{code,method,host}`, and API failures raise typed errors
(`NotFound`, `Conflict`, `AlreadyExists`, `Invalid`, `Gone`, `Forbidden`, ... all `ApiError`).
"""

from __future__ import annotations

import contextlib
import copy
import enum
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlencode, urlparse

import urllib3
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration

from registry_operator import __version__
from registry_operator.kube import metrics
from registry_operator.kube.resources import Resource

Object = dict[str, Any]
T = TypeVar("T")

DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_PAGE_SIZE = 500


# --- errors ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cause:
    """One entry of a Status' details.causes, e.g. a field that failed validation."""

    reason: str
    message: str
    field: str


class ApiError(Exception):
    """An error answer from the API server (or, for `ConnectionFailed`, no answer at all)."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.body: dict[str, Any] | None = dict(body) if body is not None else None

    @property
    def causes(self) -> list[Cause]:
        return [
            Cause(c.get("reason", ""), c.get("message", ""), c.get("field", ""))
            for c in self.details.get("causes") or []
        ]

    @property
    def retry_after_seconds(self) -> int | None:
        value = self.details.get("retryAfterSeconds")
        return int(value) if value is not None else None


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class MethodNotAllowed(ApiError):
    pass


class Conflict(ApiError):
    """409 with reason Conflict: an optimistic-lock (resourceVersion) or UID precondition failed."""


class AlreadyExists(ApiError):
    """409 with reason AlreadyExists (deliberately not a Conflict: retrying would not help)."""


class Gone(ApiError):
    """410: the resourceVersion (watch, list, continue token) is too old / expired."""


class Invalid(ApiError):
    """422: the object failed validation; `causes` names the fields."""


class TooManyRequests(ApiError):
    pass


class ServerError(ApiError):
    """5xx."""


class ConnectionFailed(ApiError):
    """No HTTP answer: connection refused/reset, TLS failure, client-side timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "ConnectionFailed", message)


_ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}


def error_from_status(status_code: int, status: Mapping[str, Any] | None, fallback: str = "") -> ApiError:
    """Build the typed error for an HTTP status code and its (optional) Status body."""
    body = status if isinstance(status, Mapping) and status.get("kind") == "Status" else None
    code = int(body.get("code") or status_code) if body else status_code
    reason = str(body.get("reason") or "") if body else ""
    message = str(body.get("message") or "") if body else fallback
    details = body.get("details") if body else None
    cls: type[ApiError]
    if code == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif reason == "Expired" or reason == "Gone":
        cls = Gone
    elif code >= 500:
        cls = ServerError
    else:
        cls = _ERRORS_BY_STATUS.get(code, ApiError)
    return cls(code, reason or _default_reason(code), message, details=details, body=body)


def _default_reason(code: int) -> str:
    return {404: "NotFound", 409: "Conflict", 410: "Gone", 422: "Invalid"}.get(code, "Unknown")


def is_too_large_resource_version(error: ApiError) -> bool:
    """The server has not yet seen the requested resourceVersion (client-go's check)."""
    if any(c.reason == "ResourceVersionTooLarge" for c in error.causes):
        return True
    return "Too large resource version" in error.message


# --- conflict retry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryBackoff:
    """client-go wait.Backoff: `steps` attempts, sleeping duration·factor^i (+jitter) in between."""

    steps: int
    duration: float
    factor: float = 1.0
    jitter: float = 0.0
    cap: float | None = None

    def delays(self) -> Iterator[float]:
        duration = self.duration
        for _ in range(self.steps - 1):
            delay = duration * (1.0 + random.random() * self.jitter) if self.jitter > 0 else duration
            yield delay
            duration = duration * self.factor
            if self.cap is not None:
                duration = min(duration, self.cap)


DEFAULT_RETRY = RetryBackoff(steps=5, duration=0.010, factor=1.0, jitter=0.1)
DEFAULT_BACKOFF = RetryBackoff(steps=4, duration=0.010, factor=5.0, jitter=0.1)


def retry_on_conflict(
    fn: Callable[[], T],
    backoff: RetryBackoff = DEFAULT_RETRY,
    *,
    retriable: Callable[[Exception], bool] = lambda error: isinstance(error, Conflict),
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `fn` until it does not raise a retriable error, at most `backoff.steps` times.

    `fn` must re-read the object (GET) before mutating it; the last error is re-raised.
    """
    delays = backoff.delays()
    while True:
        try:
            return fn()
        except Exception as error:
            if not retriable(error):
                raise
            delay = next(delays, None)
            if delay is None:
                raise
            sleep(delay)


# --- requests ---------------------------------------------------------------------------------------
class PatchType(enum.StrEnum):
    MERGE = "application/merge-patch+json"
    JSON = "application/json-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    APPLY = "application/apply-patch+yaml"


class PropagationPolicy(enum.StrEnum):
    ORPHAN = "Orphan"
    BACKGROUND = "Background"
    FOREGROUND = "Foreground"


class WatchEvent(NamedTuple):
    """One watch event; unpacks as `(type, object)`."""

    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: Object


class WatchStream:
    """An open watch: iterate for `WatchEvent`s; an ERROR event raises the matching ApiError.

    Iteration ends when the server closes the stream (e.g. `timeoutSeconds` elapsed) or after
    `close()`, which may be called from any thread. Transport failures raise `ConnectionFailed`.
    """

    def __init__(self, response: urllib3.BaseHTTPResponse, resource: Resource) -> None:
        self._response = response
        self._resource = resource
        self._closed = threading.Event()
        self.events_received = 0

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        # shutdown() unblocks a reader stuck in recv() in another thread.
        with contextlib.suppress(Exception):
            self._response.shutdown()
        with contextlib.suppress(Exception):
            self._response.release_conn()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __iter__(self) -> Iterator[WatchEvent]:
        buffer = b""
        try:
            for chunk in self._response.stream(None, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield self._decode(line)
            if buffer.strip() and not self._closed.is_set():
                yield self._decode(buffer)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
            if self._closed.is_set():
                return
            raise ConnectionFailed(f"watch {self._resource}: {error}") from error
        finally:
            self.close()

    def _decode(self, line: bytes) -> WatchEvent:
        event = json.loads(line)
        event_type = event.get("type", "")
        obj = event.get("object") or {}
        if event_type == "ERROR":
            raise error_from_status(int(obj.get("code") or 500), obj, "watch error")
        self.events_received += 1
        return WatchEvent(event_type, obj)


def _url_retries() -> urllib3.Retry:
    # Reconnect on refused/reset connections (e.g. a stale pooled connection after an API server
    # restart) but never re-send on read errors or statuses: callers decide about those.
    return urllib3.Retry(
        total=3, connect=3, read=0, status=0, other=0, redirect=0, backoff_factor=0.1, raise_on_status=False
    )


class Client:
    """REST client for any resource. Thread-safe: share one instance between all threads."""

    def __init__(
        self,
        configuration: Configuration,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        user_agent: str | None = None,
        connection_pool_size: int = 32,
    ) -> None:
        configuration.connection_pool_maxsize = connection_pool_size
        configuration.retries = _url_retries()
        self._configuration = configuration
        self._api_client = ApiClient(configuration)
        self._pool = self._api_client.rest_client.pool_manager
        self._base_url = str(configuration.host).rstrip("/")
        self._host_label = urlparse(self._base_url).netloc
        self._user_agent = user_agent or f"registry-operator/{__version__}"
        self.request_timeout = request_timeout

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def from_kubeconfig(
        cls,
        path: str | os.PathLike[str],
        *,
        context: str | None = None,
        server: str | None = None,
        **kwargs: Any,
    ) -> Client:
        """Load `path`; `server` overrides the API server URL (e.g. to go through a proxy)."""
        configuration = Configuration()
        load: Any = kube_config.load_kube_config
        load(
            config_file=os.fspath(path),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        if server:
            configuration.host = server
        return cls(configuration, **kwargs)

    @classmethod
    def in_cluster(cls, **kwargs: Any) -> Client:
        configuration = Configuration()
        load: Any = kube_config.load_incluster_config
        load(client_configuration=configuration)
        return cls(configuration, **kwargs)

    @classmethod
    def load(cls, kubeconfig: str | os.PathLike[str] | None = None, **kwargs: Any) -> Client:
        """From `kubeconfig`, else $KUBECONFIG / ~/.kube/config if present, else in-cluster."""
        if kubeconfig:
            return cls.from_kubeconfig(kubeconfig, **kwargs)
        env_path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        home_path = Path.home() / ".kube" / "config"
        if env_path and Path(env_path).exists():
            return cls.from_kubeconfig(env_path, **kwargs)
        if "KUBERNETES_SERVICE_HOST" in os.environ:
            return cls.in_cluster(**kwargs)
        if home_path.exists():
            return cls.from_kubeconfig(home_path, **kwargs)
        raise RuntimeError("no kubeconfig given or found, and not running in a cluster")

    def with_timeout(self, request_timeout: float) -> Client:
        """A view of this client (same connection pool) with another default request timeout."""
        clone = copy.copy(self)
        clone.request_timeout = request_timeout
        return clone

    @property
    def host(self) -> str:
        return self._base_url

    @property
    def configuration(self) -> Configuration:
        return self._configuration

    def close(self) -> None:
        api_client: Any = self._api_client
        api_client.close()

    # --- plumbing ------------------------------------------------------------------------------
    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        if content_type:
            headers["Content-Type"] = content_type
        auth_settings: Mapping[str, Any] = self._configuration.auth_settings()
        for setting in auth_settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        return headers

    def _url(self, path: str, query: Mapping[str, Any] | None) -> str:
        params = {k: v for k, v in (query or {}).items() if v is not None}
        for key, value in params.items():
            if isinstance(value, bool):
                params[key] = "true" if value else "false"
        return self._base_url + path + (("?" + urlencode(params)) if params else "")

    def _count(self, method: str, code: str) -> None:
        metrics.REST_CLIENT_REQUESTS.labels(code=code, method=method, host=self._host_label).inc()

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One API call; returns the decoded JSON answer (None for an empty body)."""
        data = json.dumps(body).encode() if body is not None else None
        if data is not None and content_type is None:
            content_type = "application/json"
        try:
            response = self._pool.request(
                method,
                self._url(path, query),
                body=data,
                headers=self._headers(content_type),
                timeout=urllib3.Timeout(total=timeout if timeout is not None else self.request_timeout),
                preload_content=True,
            )
        except urllib3.exceptions.HTTPError as error:
            self._count(method, "<error>")
            raise ConnectionFailed(f"{method} {path}: {error}") from error
        self._count(method, str(response.status))
        raw = response.data
        decoded: Any = None
        if raw:
            try:
                decoded = json.loads(raw)
            except ValueError:
                decoded = None
        if response.status >= 400:
            text = raw.decode(errors="replace")[:500] if raw else response.reason or ""
            raise error_from_status(response.status, decoded if isinstance(decoded, dict) else None, text)
        return decoded

    # --- reads ---------------------------------------------------------------------------------
    def get(
        self, resource: Resource, name: str, namespace: str | None = None, *, timeout: float | None = None
    ) -> Object:
        result: Object = self.request("GET", resource.path(namespace, name), timeout=timeout)
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
        result: Object = self.request("GET", resource.path(namespace), query=query, timeout=timeout)
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
    ) -> Object:
        """Every matching object, fetched in pages of `page_size` (None/0 = one request).

        Returns {"metadata": {"resourceVersion": ...}, "items": [...]}, each item with apiVersion
        and kind filled in. If a continue token expires mid-way, falls back to one unpaged LIST.
        """
        items: list[Object] = []
        continue_token: str | None = None
        while True:
            try:
                page = self.list_page(
                    resource,
                    namespace,
                    label_selector=label_selector,
                    field_selector=field_selector,
                    resource_version=None if continue_token else resource_version,
                    resource_version_match=None if continue_token else resource_version_match,
                    limit=page_size,
                    continue_token=continue_token,
                    timeout=timeout,
                )
            except Gone:
                if continue_token is None:
                    raise
                return self.list(
                    resource,
                    namespace,
                    label_selector=label_selector,
                    field_selector=field_selector,
                    resource_version=resource_version,
                    resource_version_match=resource_version_match,
                    page_size=None,
                    timeout=timeout,
                )
            page_items = page.get("items") or []
            for item in page_items:
                item.setdefault("apiVersion", resource.api_version)
                item.setdefault("kind", resource.kind)
            items.extend(page_items)
            metadata = page.get("metadata") or {}
            continue_token = metadata.get("continue") or None
            if not continue_token:
                return {
                    "apiVersion": resource.api_version,
                    "kind": f"{resource.kind}List",
                    "metadata": {"resourceVersion": metadata.get("resourceVersion", "")},
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
    ) -> WatchStream:
        """Open a watch. HTTP errors when opening raise at once; see WatchStream for the rest.

        `timeout_seconds` is the server-side duration; `read_timeout` (default: that plus 30 s)
        bounds the silence on the socket, so a half-open connection cannot hang forever.
        """
        query = {
            "watch": True,
            "resourceVersion": resource_version,
            "labelSelector": label_selector or None,
            "fieldSelector": field_selector or None,
            "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": allow_bookmarks or None,
        }
        if read_timeout is None:
            read_timeout = (timeout_seconds or 300) + 30.0
        try:
            response = self._pool.request(
                "GET",
                self._url(resource.path(namespace), query),
                headers=self._headers(None),
                timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as error:
            self._count("GET", "<error>")
            raise ConnectionFailed(f"watch {resource}: {error}") from error
        self._count("GET", str(response.status))
        if response.status >= 400:
            raw = response.data
            response.release_conn()
            try:
                decoded = json.loads(raw) if raw else None
            except ValueError:
                decoded = None
            text = raw.decode(errors="replace")[:500] if raw else ""
            raise error_from_status(response.status, decoded if isinstance(decoded, dict) else None, text)
        return WatchStream(response, resource)

    # --- writes --------------------------------------------------------------------------------
    @staticmethod
    def _namespace_of(resource: Resource, obj: Mapping[str, Any], namespace: str | None) -> str | None:
        if not resource.namespaced:
            return None
        namespace = namespace or (obj.get("metadata") or {}).get("namespace")
        if not namespace:
            raise ValueError(f"{resource} is namespaced; no namespace given")
        return str(namespace)

    @staticmethod
    def _name_of(obj: Mapping[str, Any]) -> str:
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            raise ValueError("object has no metadata.name")
        return str(name)

    def create(
        self,
        resource: Resource,
        obj: Mapping[str, Any],
        namespace: str | None = None,
        *,
        field_manager: str | None = None,
        dry_run: bool = False,
        timeout: float | None = None,
    ) -> Object:
        body = {"apiVersion": resource.api_version, "kind": resource.kind, **obj}
        query = {"fieldManager": field_manager, "dryRun": "All" if dry_run else None}
        result: Object = self.request(
            "POST",
            resource.path(self._namespace_of(resource, obj, namespace)),
            query=query,
            body=body,
            timeout=timeout,
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
        )
        return result

    def update_status(
        self, resource: Resource, obj: Mapping[str, Any], *, field_manager: str | None = None
    ) -> Object:
        return self.update(resource, obj, field_manager=field_manager, subresource="status")

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
        )

    def apply_status(
        self, resource: Resource, obj: Mapping[str, Any], *, field_manager: str, force: bool = False
    ) -> Object:
        return self.apply(resource, obj, field_manager=field_manager, force=force, subresource="status")

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
            )
        except NotFound:
            if missing_ok:
                return None
            raise
        return result
