"""Typed errors of the API client (client-go's `k8s.io/apimachinery/pkg/api/errors`).

This module owns the mapping from an HTTP status (and its `Status` body) to one exception class:
`NotFound`, `Conflict`, `AlreadyExists`, `Invalid`, `Gone`, `Forbidden`, ... all `ApiError`, plus the
errors raised without an answer: `ConnectionFailed` (no HTTP answer) and its `DeadlineExceeded` (the
caller's deadline passed, before sending or while waiting). It knows nothing of transports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


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

    def __init__(self, message: str, reason: str = "ConnectionFailed") -> None:
        super().__init__(0, reason, message)


class DeadlineExceeded(ConnectionFailed):
    """The request's deadline passed: it was not sent at all, or its answer came too late.

    A `ConnectionFailed` (a client-side timeout), so code that retries transport failures treats it
    alike; code that must know (leader election, a reconciler of a deposed leader) can tell it apart.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, "DeadlineExceeded")


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


def error_from_response(status_code: int, raw: bytes | None, fallback: str = "") -> ApiError:
    """The typed error for an HTTP error answer with body `raw` (a Status, or any text)."""
    try:
        decoded = json.loads(raw) if raw else None
    except ValueError:
        decoded = None
    text = raw.decode(errors="replace")[:500] if raw else fallback
    return error_from_status(status_code, decoded if isinstance(decoded, dict) else None, text)


def _default_reason(code: int) -> str:
    return {404: "NotFound", 409: "Conflict", 410: "Gone", 422: "Invalid"}.get(code, "Unknown")


def is_too_large_resource_version(error: ApiError) -> bool:
    """The server has not yet seen the requested resourceVersion (client-go's check)."""
    if any(c.reason == "ResourceVersionTooLarge" for c in error.causes):
        return True
    return "Too large resource version" in error.message
