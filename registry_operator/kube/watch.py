"""Watch streaming (client-go's `watch` package): decoding one open watch into events.

This module owns what happens after a watch request was answered 200: reading newline-delimited
JSON events from the chunked response, turning an ERROR event into its typed `ApiError`, transport
failures into `ConnectionFailed`, and a `close()` from any thread that unblocks the reader. Opening
the watch (URL, query, timeouts) is a REST verb: `Client.watch` in `client.py`.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import urllib3

from registry_operator.kube.errors import ConnectionFailed, error_from_status
from registry_operator.kube.resources import Resource

Object = dict[str, Any]


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
