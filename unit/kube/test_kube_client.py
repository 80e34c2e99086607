"""REST client against a scripted local HTTP server: paths, queries, bodies, errors, watch, metrics."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from kubernetes.client import Configuration

from registry_operator.kube import metrics
from registry_operator.kube.client import Client, PatchType, PropagationPolicy
from registry_operator.kube.clock import RealClock
from registry_operator.kube.errors import (
    AlreadyExists,
    ApiError,
    Conflict,
    ConnectionFailed,
    DeadlineExceeded,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    ServerError,
    error_from_status,
    is_too_large_resource_version,
)
from registry_operator.kube.resources import CONFIGMAPS, DEPLOYMENTS, NAMESPACES, Resource
from registry_operator.kube.retry import NO_TRANSPORT_RETRY


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


Reply = tuple[int, Any]  # status, JSON body (or a list of raw chunks for streaming)


@dataclass
class FakeApiServer:
    routes: Callable[[Recorded], Reply]
    requests: list[Recorded] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"


class StreamReply:
    """A chunked streaming answer: each element is sent as one HTTP chunk; None = hang forever."""

    def __init__(self, chunks: list[bytes | None]) -> None:
        self.chunks = chunks


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    fake = FakeApiServer(routes=lambda request: (404, {"kind": "Status", "code": 404}))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            parsed = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            recorded = Recorded(
                self.command,
                parsed.path,
                parse_qs(parsed.query),
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
            )
            fake.requests.append(recorded)
            status, body = fake.routes(recorded)
            if isinstance(body, StreamReply):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in body.chunks:
                    if chunk is None:
                        threading.Event().wait(30)
                        return
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                return
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.server = server
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def make_client(api: FakeApiServer, **kwargs: Any) -> Client:
    configuration = Configuration(host=api.url)
    configuration.api_key = {"BearerToken": "Bearer test-token"}
    return Client(configuration, **kwargs)


def status(code: int, reason: str, message: str = "", **details: Any) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
        "details": details,
    }


# --- resources --------------------------------------------------------------------------------------
def test_resource_paths() -> None:
    assert CONFIGMAPS.path() == "/api/v1/configmaps"
    assert CONFIGMAPS.path("ns") == "/api/v1/namespaces/ns/configmaps"
    assert CONFIGMAPS.path("ns", "a") == "/api/v1/namespaces/ns/configmaps/a"
    assert DEPLOYMENTS.path("ns", "d", "status") == "/apis/apps/v1/namespaces/ns/deployments/d/status"
    assert NAMESPACES.path(None, "ns") == "/api/v1/namespaces/ns"
    crd = Resource("example.com", "v1alpha1", "widgets", "Widget")
    assert crd.api_version == "example.com/v1alpha1"
    assert crd.path("ns", "w") == "/apis/example.com/v1alpha1/namespaces/ns/widgets/w"
    with pytest.raises(ValueError):
        NAMESPACES.path("ns", "x")
    with pytest.raises(ValueError):
        CONFIGMAPS.path("ns", None, "status")


# --- errors -----------------------------------------------------------------------------------------
def test_error_mapping_from_status_bodies() -> None:
    assert isinstance(error_from_status(404, status(404, "NotFound")), NotFound)
    assert isinstance(error_from_status(409, status(409, "AlreadyExists")), AlreadyExists)
    assert isinstance(error_from_status(409, status(409, "Conflict")), Conflict)
    assert not isinstance(error_from_status(409, status(409, "AlreadyExists")), Conflict)
    assert isinstance(error_from_status(410, status(410, "Expired", "too old resource version")), Gone)
    assert isinstance(error_from_status(403, status(403, "Forbidden")), Forbidden)
    assert isinstance(error_from_status(503, None, "unavailable"), ServerError)
    invalid = error_from_status(
        422,
        status(
            422,
            "Invalid",
            "spec.size: Invalid value",
            causes=[{"reason": "FieldValueInvalid", "message": "must be >= 1", "field": "spec.size"}],
        ),
    )
    assert isinstance(invalid, Invalid)
    assert invalid.message == "spec.size: Invalid value"
    assert [(c.field, c.message) for c in invalid.causes] == [("spec.size", "must be >= 1")]
    too_large = error_from_status(
        504,
        status(504, "Timeout", "Too large resource version", causes=[{"reason": "ResourceVersionTooLarge"}]),
    )
    assert is_too_large_resource_version(too_large)


def test_http_errors_raise_typed_errors_and_are_counted(api: FakeApiServer) -> None:
    api.routes = lambda r: (409, status(409, "AlreadyExists", 'configmaps "a" already exists'))
    client = make_client(api)
    host = api.url.removeprefix("http://")
    before = metrics.sample_value(
        "rest_client_requests_total", {"code": "409", "method": "POST", "host": host}
    )
    with pytest.raises(AlreadyExists) as caught:
        client.create(CONFIGMAPS, {"metadata": {"name": "a", "namespace": "ns"}})
    assert caught.value.status == 409
    assert "already exists" in caught.value.message
    after = metrics.sample_value(
        "rest_client_requests_total", {"code": "409", "method": "POST", "host": host}
    )
    assert after == before + 1


def test_unreachable_server_raises_connection_failed_and_counts_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = Client(Configuration(host=f"http://127.0.0.1:{port}"))
    labels = {"code": "<error>", "method": "GET", "host": f"127.0.0.1:{port}"}
    before = metrics.sample_value("rest_client_requests_total", labels)
    with pytest.raises(ConnectionFailed):
        client.get(CONFIGMAPS, "a", "ns")
    assert metrics.sample_value("rest_client_requests_total", labels) == before + 1


def test_request_timeout_applies_to_every_call(api: FakeApiServer) -> None:
    def slow(_: Recorded) -> Reply:
        threading.Event().wait(2)
        return 200, {}

    api.routes = slow
    client = make_client(api, request_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed):
        client.get(CONFIGMAPS, "a", "ns")
    assert time.monotonic() - started < 1.5


# --- deadlines --------------------------------------------------------------------------------------
class CountingClock(RealClock):
    """Real time, but counts the client's sleeps between connect attempts."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        self.sleeps.append(seconds)
        return super().sleep(seconds, stop)


@pytest.fixture
def syn_blackhole() -> Iterator[str]:
    """A URL whose TCP connects hang (full accept backlog: SYNs are dropped), as in a partition."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    filler = socket.create_connection(server.getsockname(), timeout=1)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    filler.close()
    server.close()


def test_a_passed_deadline_fails_fast_without_sending(api: FakeApiServer) -> None:
    api.routes = lambda r: (200, {})
    client = make_client(api)
    host = api.url.removeprefix("http://")
    sent_before = metrics.sample_value(
        "rest_client_requests_total", {"code": "200", "method": "GET", "host": host}
    )
    with pytest.raises(DeadlineExceeded) as caught:
        client.get(CONFIGMAPS, "a", "ns", deadline=time.monotonic() - 0.01)
    with pytest.raises(DeadlineExceeded):
        client.watch(CONFIGMAPS, "ns", deadline=time.monotonic())
    with pytest.raises(DeadlineExceeded):
        client.with_deadline(lambda: time.monotonic() - 1).delete(CONFIGMAPS, "a", "ns")
    assert api.requests == []
    assert metrics.sample_value(
        "rest_client_requests_total", {"code": "200", "method": "GET", "host": host}
    ) == (sent_before)
    assert isinstance(caught.value, ConnectionFailed), "a client-side timeout, for code that retries those"
    assert caught.value.reason == "DeadlineExceeded"


def test_the_deadline_cuts_the_request_timeout(api: FakeApiServer) -> None:
    def slow(_: Recorded) -> Reply:
        threading.Event().wait(3)
        return 200, {}

    api.routes = slow
    client = make_client(api, request_timeout=30)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        client.update(CONFIGMAPS, {"metadata": {"name": "a", "namespace": "ns"}}, deadline=started + 0.3)
    assert 0.25 < time.monotonic() - started < 1.5
    # The request timeout still applies when it ends first: a plain ConnectionFailed then.
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as caught:
        client.get(CONFIGMAPS, "a", "ns", timeout=0.2, deadline=started + 20)
    assert not isinstance(caught.value, DeadlineExceeded)
    assert time.monotonic() - started < 1.5


def test_deadlines_of_views_and_calls_combine_to_the_earliest(api: FakeApiServer) -> None:
    api.routes = lambda r: (200, {})
    base = make_client(api)
    now = time.monotonic()
    assert base.deadline_for() is None
    assert base.deadline_for(now + 5) == now + 5
    bounded = base.with_deadline(lambda: now + 10)
    assert bounded.deadline_for() == now + 10
    assert bounded.deadline_for(now + 5) == now + 5
    assert bounded.with_deadline(lambda: now + 3).deadline_for(now + 5) == now + 3
    assert bounded.with_deadline(lambda: None).deadline_for() == now + 10
    assert base.deadline_for() is None, "a view leaves the client it came from alone"
    bounded.get(CONFIGMAPS, "a", "ns")
    assert len(api.requests) == 1


def test_watch_server_timeout_is_cut_to_the_deadline(api: FakeApiServer) -> None:
    api.routes = lambda r: (200, StreamReply([]))
    stream = make_client(api).watch(CONFIGMAPS, "ns", timeout_seconds=300, deadline=time.monotonic() + 5.5)
    assert list(stream) == []
    assert api.requests[-1].query["timeoutSeconds"] == ["5"]


def test_connect_retries_never_outlive_the_deadline(syn_blackhole: str) -> None:
    clock = CountingClock()
    client = Client(Configuration(host=syn_blackhole), request_timeout=0.3, clock=clock)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed):
        client.get(CONFIGMAPS, "a", "ns")
    unbounded = time.monotonic() - started
    # Without a deadline, a connect that hangs is tried four times (as urllib3's Retry(connect=3) did).
    assert clock.sleeps == pytest.approx([0.0, 0.2, 0.4])
    assert unbounded >= 4 * 0.3 + 0.6 - 0.05
    clock.sleeps.clear()
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        client.get(CONFIGMAPS, "a", "ns", deadline=started + 0.5)
    assert time.monotonic() - started < 0.5 + 0.2


def test_a_client_without_transport_retry_tries_a_connect_once(syn_blackhole: str) -> None:
    clock = CountingClock()
    client = Client(Configuration(host=syn_blackhole), request_timeout=0.3, clock=clock)
    lease_client = client.with_transport_retry(NO_TRANSPORT_RETRY)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed):
        lease_client.get(CONFIGMAPS, "a", "ns")
    assert time.monotonic() - started < 0.3 + 0.25
    assert clock.sleeps == []


# --- requests ---------------------------------------------------------------------------------------
def test_get_sends_auth_and_returns_a_plain_dict(api: FakeApiServer) -> None:
    api.routes = lambda r: (200, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})
    obj = make_client(api).get(CONFIGMAPS, "a", "ns")
    assert obj == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}
    assert type(obj) is dict
    request = api.requests[-1]
    assert (request.method, request.path) == ("GET", "/api/v1/namespaces/ns/configmaps/a")
    assert request.headers["authorization"] == "Bearer test-token"
    assert request.headers["user-agent"].startswith("registry-operator/")


def test_list_follows_continue_tokens_and_keeps_the_list_resource_version(api: FakeApiServer) -> None:
    pages = {
        None: {
            "metadata": {"resourceVersion": "100", "continue": "t1"},
            "items": [{"metadata": {"name": "a"}}],
        },
        "t1": {
            "metadata": {"resourceVersion": "100", "continue": "t2"},
            "items": [{"metadata": {"name": "b"}}],
        },
        "t2": {"metadata": {"resourceVersion": "100"}, "items": [{"metadata": {"name": "c"}}]},
    }
    api.routes = lambda r: (200, pages[r.query.get("continue", [None])[0]])
    result = make_client(api).list(CONFIGMAPS, "ns", label_selector="app=x", page_size=1, resource_version="")
    assert [item["metadata"]["name"] for item in result["items"]] == ["a", "b", "c"]
    assert result["metadata"]["resourceVersion"] == "100"
    assert all(item["kind"] == "ConfigMap" and item["apiVersion"] == "v1" for item in result["items"])
    assert [r.query.get("limit") for r in api.requests] == [["1"], ["1"], ["1"]]
    assert [r.query.get("labelSelector") for r in api.requests] == [["app=x"]] * 3


def test_list_falls_back_to_a_full_list_when_the_continue_token_expired(api: FakeApiServer) -> None:
    def route(request: Recorded) -> Reply:
        if "continue" in request.query:
            return 410, status(410, "Expired", "The provided continue parameter is too old")
        if "limit" in request.query:
            return 200, {
                "metadata": {"resourceVersion": "5", "continue": "t"},
                "items": [{"metadata": {"name": "a"}}],
            }
        return 200, {
            "metadata": {"resourceVersion": "9"},
            "items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}],
        }

    api.routes = route
    result = make_client(api).list(CONFIGMAPS, "ns", page_size=1)
    assert [item["metadata"]["name"] for item in result["items"]] == ["a", "b"]
    assert result["metadata"]["resourceVersion"] == "9"


def test_writes_send_the_right_verbs_content_types_and_options(api: FakeApiServer) -> None:
    api.routes = lambda r: (200, {"kind": "ConfigMap"})
    client = make_client(api)
    cm = {"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "7"}, "data": {"k": "v"}}
    client.create(CONFIGMAPS, cm, field_manager="mgr")
    client.update(CONFIGMAPS, cm)
    client.update_status(DEPLOYMENTS, {"metadata": {"name": "d", "namespace": "ns"}, "status": {}})
    client.patch(CONFIGMAPS, "a", {"data": {"k": None}}, "ns")
    client.patch(CONFIGMAPS, "a", [{"op": "remove", "path": "/data/k"}], "ns", patch_type=PatchType.JSON)
    client.apply(CONFIGMAPS, cm, field_manager="registry-operator", force=True)
    client.patch_status(DEPLOYMENTS, "d", {"status": {"x": 1}}, "ns")
    client.delete(
        CONFIGMAPS, "a", "ns", uid="u1", resource_version="7", propagation_policy=PropagationPolicy.FOREGROUND
    )
    seen = [(r.method, r.path, r.headers.get("content-type")) for r in api.requests]
    assert seen == [
        ("POST", "/api/v1/namespaces/ns/configmaps", "application/json"),
        ("PUT", "/api/v1/namespaces/ns/configmaps/a", "application/json"),
        ("PUT", "/apis/apps/v1/namespaces/ns/deployments/d/status", "application/json"),
        ("PATCH", "/api/v1/namespaces/ns/configmaps/a", "application/merge-patch+json"),
        ("PATCH", "/api/v1/namespaces/ns/configmaps/a", "application/json-patch+json"),
        ("PATCH", "/api/v1/namespaces/ns/configmaps/a", "application/apply-patch+yaml"),
        ("PATCH", "/apis/apps/v1/namespaces/ns/deployments/d/status", "application/merge-patch+json"),
        ("DELETE", "/api/v1/namespaces/ns/configmaps/a", "application/json"),
    ]
    create, update, _, _, json_patch, apply, _, delete = api.requests
    assert create.query["fieldManager"] == ["mgr"]
    assert create.body["kind"] == "ConfigMap" and create.body["apiVersion"] == "v1"
    assert update.body["metadata"]["resourceVersion"] == "7", "update is an optimistic-lock write"
    assert json_patch.body == [{"op": "remove", "path": "/data/k"}]
    assert apply.query == {"fieldManager": ["registry-operator"], "force": ["true"]}
    assert apply.body["kind"] == "ConfigMap" and apply.body["data"] == {"k": "v"}
    assert delete.body["preconditions"] == {"uid": "u1", "resourceVersion": "7"}
    assert delete.body["propagationPolicy"] == "Foreground"


def test_write_argument_checks() -> None:
    client = Client(Configuration(host="http://127.0.0.1:1"))
    with pytest.raises(TypeError):
        client.patch(CONFIGMAPS, "a", {"op": "x"}, "ns", patch_type=PatchType.JSON)
    with pytest.raises(ValueError):
        client.patch(CONFIGMAPS, "a", {}, "ns", patch_type=PatchType.APPLY)
    with pytest.raises(ValueError):
        client.create(CONFIGMAPS, {"metadata": {"name": "no-namespace"}})


def test_delete_missing_ok(api: FakeApiServer) -> None:
    api.routes = lambda r: (404, status(404, "NotFound"))
    client = make_client(api)
    assert client.delete(CONFIGMAPS, "a", "ns", missing_ok=True) is None
    with pytest.raises(NotFound):
        client.delete(CONFIGMAPS, "a", "ns")


# --- watch ------------------------------------------------------------------------------------------
def event_line(event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": event_type, "object": obj}).encode() + b"\n"


def test_watch_yields_events_split_across_chunks_and_raises_on_error_events(api: FakeApiServer) -> None:
    added = event_line("ADDED", {"metadata": {"name": "a", "resourceVersion": "11"}})
    bookmark = event_line("BOOKMARK", {"metadata": {"resourceVersion": "12"}})
    gone = event_line("ERROR", status(410, "Expired", "too old resource version: 1 (5)"))
    chunks: list[bytes | None] = [added[:10], added[10:] + bookmark[:5], bookmark[5:], gone]
    api.routes = lambda r: (200, StreamReply(chunks))
    stream = make_client(api).watch(CONFIGMAPS, "ns", resource_version="10", timeout_seconds=300)
    received = []
    with pytest.raises(Gone):
        for event in stream:
            received.append((event.type, event.object["metadata"]["resourceVersion"]))
    assert received == [("ADDED", "11"), ("BOOKMARK", "12")]
    query = api.requests[-1].query
    assert query["watch"] == ["true"]
    assert query["resourceVersion"] == ["10"]
    assert query["allowWatchBookmarks"] == ["true"]
    assert query["timeoutSeconds"] == ["300"]


def test_watch_ends_cleanly_when_the_server_closes_the_stream(api: FakeApiServer) -> None:
    api.routes = lambda r: (200, StreamReply([event_line("MODIFIED", {"metadata": {"name": "a"}})]))
    events = [(kind, obj["metadata"]["name"]) for kind, obj in make_client(api).watch(CONFIGMAPS, "ns")]
    assert events == [("MODIFIED", "a")]


def test_watch_open_error_raises_at_once(api: FakeApiServer) -> None:
    api.routes = lambda r: (410, status(410, "Expired", "too old"))
    with pytest.raises(Gone):
        make_client(api).watch(CONFIGMAPS, "ns", resource_version="1")


def test_watch_close_from_another_thread_unblocks_the_reader(api: FakeApiServer) -> None:
    api.routes = lambda r: (200, StreamReply([event_line("ADDED", {"metadata": {"name": "a"}}), None]))
    stream = make_client(api).watch(CONFIGMAPS, "ns", resource_version="1")
    received: list[str] = []
    first = threading.Event()

    def read() -> None:
        for event in stream:
            received.append(event.type)
            first.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert first.wait(5)
    stream.close()
    reader.join(5)
    assert not reader.is_alive(), "close() must unblock a reader waiting for data"
    assert received == ["ADDED"]


def test_watch_read_timeout_bounds_a_silent_connection(api: FakeApiServer) -> None:
    api.routes = lambda r: (200, StreamReply([None]))
    stream = make_client(api).watch(CONFIGMAPS, "ns", resource_version="1", read_timeout=0.2)
    with pytest.raises(ConnectionFailed):
        list(stream)


def test_api_error_is_the_base_of_every_typed_error() -> None:
    for cls in (NotFound, Conflict, AlreadyExists, Invalid, Gone, Forbidden, ServerError, ConnectionFailed):
        assert issubclass(cls, ApiError)
