from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from registry_operator import accounts, authn, dockerauth, passwords
from registry_operator.authn import AuthnHTTPServer, CachingVerifier, Decision

CREATED = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
PASSWORD = "Correct-Horse-Battery-Staple-42"
HASH = passwords.hash_password(PASSWORD, cost=4)


def make_account(
    name: str = "push.ns.example.1",
    *,
    ttl: str | None = "24h",
    labels: dict[str, Any] | None = None,
    password_hash: str | None = HASH,
    uid: str = "uid-1",
    resource_version: str = "100",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"labels": labels if labels is not None else {"accessMode": ["push"]}}
    if password_hash is not None:
        spec["password"] = password_hash
    if ttl is not None:
        spec["ttl"] = ttl
    return {
        "metadata": {
            "name": name,
            "namespace": "infra",
            "creationTimestamp": CREATED.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "uid": uid,
            "resourceVersion": resource_version,
        },
        "spec": spec,
    }


class RecordingVerifier:
    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str]] = []

    def __call__(self, account: accounts.Account, password: str) -> bool:
        self.calls.append((account["metadata"]["name"], password))
        return self.answer


# --------------------------------------------------------------------------------------------------
# Durations and expiry


def test_account_expiry() -> None:
    assert accounts.account_expiry(make_account(ttl="12h")) == CREATED + timedelta(hours=12)
    assert accounts.account_expiry(make_account(ttl=None)) is None
    assert accounts.account_expiry(make_account(ttl="")) is None
    with pytest.raises(ValueError):
        accounts.account_expiry(make_account(ttl="forever"))


# --------------------------------------------------------------------------------------------------
# Decision


def test_allow_with_labels() -> None:
    account = make_account(labels={"accessMode": ["push"], "namespace": ["myns"], "name": ["x"]})
    result = authn.authenticate(account, "push.ns.example.1", PASSWORD, CREATED + timedelta(hours=1))
    assert result.decision is Decision.ALLOW
    assert result.labels == {
        "accessMode": ["push"],
        "namespace": ["myns"],
        "name": ["x"],
        "origin": ["cr"],
        "account": ["push.ns.example.1"],
    }


def test_origin_and_account_labels_cannot_be_forged() -> None:
    account = make_account(labels={"origin": ["admin"], "account": ["root"], "single": "value", "bad": 5})
    result = authn.authenticate(account, "push.ns.example.1", "pw", CREATED, RecordingVerifier())
    assert result.labels == {"origin": ["cr"], "account": ["push.ns.example.1"], "single": ["value"]}


def test_wrong_password_denies() -> None:
    result = authn.authenticate(make_account(), "push.ns.example.1", PASSWORD + "x", CREATED)
    assert result.decision is Decision.DENY
    assert result.labels == {}
    assert PASSWORD not in result.reason


@pytest.mark.parametrize(("username", "password"), [("", PASSWORD), ("push.ns.example.1", "")])
def test_empty_credentials_are_no_match(username: str, password: str) -> None:
    verifier = RecordingVerifier()
    result = authn.authenticate(make_account(), username, password, CREATED, verifier)
    assert result.decision is Decision.NO_MATCH
    assert verifier.calls == []


def test_unknown_user_is_no_match() -> None:
    result = authn.authenticate(None, "nobody", "pw", CREATED, RecordingVerifier())
    assert result.decision is Decision.NO_MATCH
    other = authn.authenticate(
        make_account(name="someone-else"), "nobody", "pw", CREATED, RecordingVerifier()
    )
    assert other.decision is Decision.NO_MATCH


def test_expiry_boundary() -> None:
    account = make_account(ttl="24h")
    expiry = CREATED + timedelta(hours=24)
    verifier = RecordingVerifier()
    assert authn.authenticate(account, "push.ns.example.1", "pw", expiry, verifier).decision is Decision.ALLOW
    late = authn.authenticate(
        account, "push.ns.example.1", "pw", expiry + timedelta(microseconds=1), verifier
    )
    assert late.decision is Decision.DENY
    assert "expired" in late.reason
    assert len(verifier.calls) == 1  # expired accounts cost no bcrypt run


def test_operator_written_ttl_format() -> None:
    account = make_account(ttl="24h0m0s")
    verifier = RecordingVerifier()
    assert authn.authenticate(
        account, "push.ns.example.1", "pw", CREATED + timedelta(hours=25), verifier
    ).decision is (Decision.DENY)


def test_no_ttl_never_expires() -> None:
    account = make_account(ttl=None)
    later = CREATED + timedelta(days=3650)
    assert authn.authenticate(account, "push.ns.example.1", "pw", later, RecordingVerifier()).decision is (
        Decision.ALLOW
    )


@pytest.mark.parametrize(
    "broken",
    [
        make_account(ttl="soon"),
        make_account(password_hash=None),
        make_account(password_hash=""),
        {
            **make_account(),
            "metadata": {**make_account()["metadata"], "deletionTimestamp": "2030-05-06T08:00:00Z"},
        },
        {**make_account(), "metadata": {"name": "push.ns.example.1"}},  # ttl without creationTimestamp
    ],
)
def test_fail_closed(broken: dict[str, Any]) -> None:
    result = authn.authenticate(broken, "push.ns.example.1", "pw", CREATED, RecordingVerifier())
    assert result.decision is Decision.DENY


def test_malformed_stored_hash_denies_without_exception() -> None:
    account = make_account(password_hash="$2y$05$garbage")
    assert authn.authenticate(account, "push.ns.example.1", "pw", CREATED).decision is Decision.DENY


def test_generated_accounts_verify_with_the_fast_hash() -> None:
    password = passwords.generate_password()
    account = make_account(password_hash=passwords.hash_generated_password(password))
    allowed = authn.authenticate(account, "push.ns.example.1", password, CREATED)
    assert allowed.decision is Decision.ALLOW
    wrong = authn.authenticate(account, "push.ns.example.1", password[::-1], CREATED)
    assert wrong.decision is Decision.DENY and wrong.reason == "wrong password"


def test_unknown_hash_scheme_denies_without_calling_the_verifier() -> None:
    verifier = RecordingVerifier()
    account = make_account(password_hash="sha256-salted-v9$" + "0" * 32 + "$" + "0" * 64)
    result = authn.authenticate(account, "push.ns.example.1", "pw", CREATED, verifier)
    assert result.decision is Decision.DENY
    assert result.reason == "password hash of an unknown scheme"
    assert verifier.calls == []


# --------------------------------------------------------------------------------------------------
# Cache


def test_cache_remembers_successes_and_recent_failures() -> None:
    inner = RecordingVerifier()
    now = [1000.0]
    cache = CachingVerifier(inner, max_entries=10, failed_ttl=30, monotonic=lambda: now[0])
    account = make_account()
    assert cache(account, "pw") and cache(account, "pw")
    assert len(inner.calls) == 1 and cache.hits == 1
    inner.answer = False
    # A repeated wrong password costs one bcrypt run within the TTL...
    assert not cache(account, "other") and not cache(account, "other")
    assert len(inner.calls) == 2 and cache.failed_hits == 1
    # ...another wrong password is checked, and after the TTL the first one is checked again.
    assert not cache(account, "third")
    assert len(inner.calls) == 3
    now[0] += 31
    assert not cache(account, "other")
    assert len(inner.calls) == 4
    assert len(cache) == 1


def test_remembered_failure_does_not_outlive_an_account_change() -> None:
    inner = RecordingVerifier(answer=False)
    cache = CachingVerifier(inner, max_entries=10)
    assert not cache(make_account(), "pw")
    inner.answer = True
    assert cache(make_account(resource_version="101"), "pw")  # e.g. the password was reset


def test_bcrypt_runs_are_capped_and_a_full_verifier_is_busy() -> None:
    started, release = threading.Event(), threading.Event()
    running: list[int] = []

    def slow(account: accounts.Account, password: str) -> bool:
        running.append(1)
        started.set()
        release.wait(5)
        return True

    cache = CachingVerifier(slow, max_concurrent=1, slot_wait=0.05)
    worker = threading.Thread(target=cache, args=(make_account(), "a"))
    worker.start()
    assert started.wait(5)
    with pytest.raises(authn.VerifierBusy):
        cache(make_account(), "b")
    release.set()
    worker.join(5)
    assert running == [1]


def test_bcrypt_runs_at_lower_priority_in_the_handler_thread_only() -> None:
    """Under a burst of wrong passwords, cached checks of good logins get the CPU before bcrypt."""
    seen: dict[str, int] = {}

    def verify(account: accounts.Account, password: str) -> bool:
        seen["niceness"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return True

    main_niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    verifier = CachingVerifier(verify, deprioritize=True)
    handler = threading.Thread(target=verifier, args=(make_account(), "pw"))
    handler.start()
    handler.join(5)
    assert seen["niceness"] >= authn.BCRYPT_NICENESS
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_niceness
    # The HTTP server's own verifier does it; one built for other callers does not.
    server = AuthnHTTPServer(lambda _name: None, port=0)
    try:
        assert isinstance(server.verify, CachingVerifier) and server.verify.deprioritize
    finally:
        server.server_close()
    assert not CachingVerifier(verify).deprioritize


def test_generated_accounts_bypass_cache_and_bcrypt_slots() -> None:
    started, release = threading.Event(), threading.Event()

    def slow_bcrypt(account: accounts.Account, password: str) -> bool:
        started.set()
        release.wait(5)
        return True

    inner = RecordingVerifier()
    cache = CachingVerifier(
        lambda account, password: (
            slow_bcrypt(account, password)
            if accounts.account_hash_scheme(account) is passwords.HashScheme.BCRYPT
            else inner(account, password)
        ),
        max_concurrent=1,
        slot_wait=0.05,
    )
    worker = threading.Thread(target=cache, args=(make_account(uid="bcrypt"), "a"))
    worker.start()
    assert started.wait(5)  # the only bcrypt slot is taken
    try:
        generated = make_account(password_hash=passwords.hash_generated_password("A" * 32))
        for _ in range(3):
            assert cache(generated, "pw")  # neither waits for the slot nor raises VerifierBusy
    finally:
        release.set()
        worker.join(5)
    assert len(inner.calls) == 3  # checked every time: nothing cached
    assert cache.fast_checks == 3 and cache.hits == 0
    assert len(cache) == 1  # only the bcrypt account's success


def test_really_generated_account_fails_and_succeeds_without_cache() -> None:
    cache = CachingVerifier()
    password = passwords.generate_password()
    account = make_account(password_hash=passwords.hash_generated_password(password))
    assert cache(account, password) and not cache(account, password + "x")
    assert len(cache) == 0 and cache.failed_hits == 0


def test_cache_refuses_unknown_schemes_without_calling_verify() -> None:
    inner = RecordingVerifier()
    cache = CachingVerifier(inner)
    assert not cache(make_account(password_hash="plain-text-password"), "plain-text-password")
    assert inner.calls == []


def test_cache_misses_after_account_change() -> None:
    inner = RecordingVerifier()
    cache = CachingVerifier(inner)
    cache(make_account(), "pw")
    cache(make_account(resource_version="101"), "pw")  # e.g. password hash replaced
    cache(make_account(uid="uid-2"), "pw")  # deleted and re-created under the same name
    cache(make_account(password_hash="$2b$04$" + "x" * 53), "pw")
    assert len(inner.calls) == 4


def test_cache_really_rechecks_after_password_change() -> None:
    cache = CachingVerifier()
    old = make_account()
    assert cache(old, PASSWORD)
    changed = make_account(
        password_hash=passwords.hash_password("new-password", cost=4), resource_version="101"
    )
    assert not cache(changed, PASSWORD)
    assert cache(changed, "new-password")


def test_cache_is_bounded_lru() -> None:
    inner = RecordingVerifier()
    cache = CachingVerifier(inner, max_entries=2)
    a, b, c = (make_account(uid=f"uid-{n}") for n in "abc")
    cache(a, "pw")
    cache(b, "pw")
    cache(a, "pw")  # a is now the most recently used
    cache(c, "pw")  # evicts b
    assert len(cache) == 2
    calls = len(inner.calls)
    cache(a, "pw")
    assert len(inner.calls) == calls
    cache(b, "pw")
    assert len(inner.calls) == calls + 1


def test_cache_skips_objects_without_identity() -> None:
    inner = RecordingVerifier()
    cache = CachingVerifier(inner)
    account = make_account(uid="")
    cache(account, "pw")
    cache(account, "pw")
    assert len(inner.calls) == 2 and len(cache) == 0


def test_cache_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CachingVerifier(max_entries=0)


def test_cache_is_thread_safe() -> None:
    cache = CachingVerifier(RecordingVerifier(), max_entries=50)
    accounts = [make_account(uid=f"uid-{n}") for n in range(200)]

    def work() -> None:
        for account in accounts:
            assert cache(account, "pw")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 50


# --------------------------------------------------------------------------------------------------
# HTTP server


def test_parse_request_body() -> None:
    assert authn.parse_request_body(b"user pass word") == ("user", "pass word")
    assert authn.parse_request_body(b"user") == ("user", "")
    assert authn.parse_request_body(b"") == ("", "")
    assert authn.parse_request_body(b"\xff\xfe") is None


class Directory:
    """A lookup over a dict that can be told to fail."""

    def __init__(self, *accounts: dict[str, Any]) -> None:
        self.accounts = {a["metadata"]["name"]: a for a in accounts}
        self.fail = False
        self.lookups: list[str] = []

    def __call__(self, name: str) -> dict[str, Any] | None:
        self.lookups.append(name)
        if self.fail:
            raise RuntimeError("informer cache not synced")
        return self.accounts.get(name)


@pytest.fixture
def directory() -> Directory:
    return Directory(
        make_account(),
        make_account(name="expired", ttl="1h"),
        make_account(name="pull.ns.example.1", labels={"accessMode": ["pull"]}),
    )


@pytest.fixture
def server(directory: Directory) -> Iterator[AuthnHTTPServer]:
    srv = AuthnHTTPServer(directory, port=0, clock=lambda: CREATED + timedelta(hours=2))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _request(server: AuthnHTTPServer, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_server_binds_loopback(server: AuthnHTTPServer) -> None:
    assert server.server_address[0] == "127.0.0.1"
    assert server.port > 0


def test_server_allow(server: AuthnHTTPServer) -> None:
    status, body = _request(server, "POST", "/authn", f"push.ns.example.1 {PASSWORD}".encode())
    assert status == 200
    assert json.loads(body) == {
        "labels": {"accessMode": ["push"], "account": ["push.ns.example.1"], "origin": ["cr"]}
    }


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (f"push.ns.example.1 {PASSWORD}x".encode(), 401),
        (f"expired {PASSWORD}".encode(), 401),
        (f"nobody {PASSWORD}".encode(), 404),
        (b" ", 404),  # anonymous: docker_auth sends an empty user and password
        (b"", 404),
        (b"push.ns.example.1", 404),
        (b"\xff\xfe", 400),
    ],
)
def test_server_decisions(server: AuthnHTTPServer, body: bytes, status: int) -> None:
    assert _request(server, "POST", "/authn", body) == (status, b"")


def test_server_does_not_look_up_empty_users(server: AuthnHTTPServer, directory: Directory) -> None:
    _request(server, "POST", "/authn", b" pw")
    assert directory.lookups == []


def test_server_lookup_failure_is_503(server: AuthnHTTPServer, directory: Directory) -> None:
    directory.fail = True
    assert _request(server, "POST", "/authn", b"push.ns.example.1 pw")[0] == 503


def test_server_verifier_failure_is_500(directory: Directory, caplog: pytest.LogCaptureFixture) -> None:
    def broken(account: accounts.Account, password: str) -> bool:
        raise RuntimeError(password)  # the message must not reach the logs either

    caplog.set_level(logging.DEBUG)
    srv = AuthnHTTPServer(directory, port=0, verify=broken, clock=lambda: CREATED)
    assert srv.handle_login(f"push.ns.example.1 {PASSWORD}".encode()) == (500, b"")
    srv.server_close()
    assert any("RuntimeError" in record.getMessage() for record in caplog.records)
    assert all(PASSWORD not in record.getMessage() for record in caplog.records)


def test_server_other_routes(server: AuthnHTTPServer) -> None:
    assert _request(server, "GET", "/healthz") == (200, b"ok\n")
    assert _request(server, "POST", "/other", b"a b")[0] == 400  # never 404: that means "no match"
    assert _request(server, "GET", "/authn")[0] == 405
    assert _request(server, "POST", "/authn", b"x" * (authn.MAX_BODY_BYTES + 1))[0] == 413


def test_server_caches_successful_logins(server: AuthnHTTPServer) -> None:
    assert isinstance(server.verify, CachingVerifier)
    for _ in range(3):
        assert _request(server, "POST", "/authn", f"push.ns.example.1 {PASSWORD}".encode())[0] == 200
    assert server.verify.hits == 2


def test_logs_never_contain_the_password(
    server: AuthnHTTPServer, directory: Directory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies = [
        f"push.ns.example.1 {PASSWORD}",
        f"push.ns.example.1 {PASSWORD}-wrong",
        f"nobody {PASSWORD}",
        f"expired {PASSWORD}",
    ]
    for body in bodies:
        _request(server, "POST", "/authn", body.encode())
    directory.fail = True
    _request(server, "POST", "/authn", f"push.ns.example.1 {PASSWORD}".encode())
    messages = [record.getMessage() for record in caplog.records]
    assert any("push.ns.example.1" in message and "allow" in message for message in messages)
    assert any("wrong password" in message for message in messages)
    assert any("lookup" in message and "failed" in message for message in messages)
    assert all(PASSWORD not in message for message in messages)
    assert all(PASSWORD not in repr(record.args) for record in caplog.records)


# --------------------------------------------------------------------------------------------------
# docker_auth's ext_auth command (busybox wget, as in the stock docker_auth image), run as docker_auth
# runs it: the rendered command and args, `<user> <password>` on stdin, exit code and stdout read.

BUSYBOX = shutil.which("busybox")


RunExtAuth = Callable[[str, bytes], subprocess.CompletedProcess[bytes]]


@pytest.fixture
def run_ext_auth() -> RunExtAuth:
    # A prerequisite, never a reason to skip: `make unit`/`make test` install it (hack/build-deps.sh).
    assert BUSYBOX is not None, "busybox is required: run hack/build-deps.sh debian-tools"

    def run(url: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
        ext_auth = dockerauth.ext_auth_command(url, busybox=BUSYBOX)
        # A proxy in docker_auth's environment must never see the credentials.
        env = {"PATH": "/nonexistent", "http_proxy": "http://127.0.0.1:9/"}
        return subprocess.run(
            [ext_auth["command"], *ext_auth["args"]], input=stdin, capture_output=True, env=env, timeout=30
        )

    return run


def test_ext_auth_allow_prints_labels(server: AuthnHTTPServer, run_ext_auth: RunExtAuth) -> None:
    done = run_ext_auth(f"http://127.0.0.1:{server.port}/authn", f"push.ns.example.1 {PASSWORD}".encode())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["labels"]["account"] == ["push.ns.example.1"]


@pytest.mark.parametrize(
    "stdin",
    [
        f"push.ns.example.1 {PASSWORD}-wrong".encode(),
        f"expired {PASSWORD}".encode(),
        f"nobody {PASSWORD}".encode(),
        b" ",
    ],
)
def test_ext_auth_denies_every_other_answer(
    server: AuthnHTTPServer, run_ext_auth: RunExtAuth, stdin: bytes
) -> None:
    """docker_auth reads exit 1 as "denied": wrong password, expired and unknown accounts alike."""
    done = run_ext_auth(f"http://127.0.0.1:{server.port}/authn", stdin)
    assert done.returncode == 1, done.stderr
    assert done.stdout == b""


def test_ext_auth_fails_closed_without_leaking_when_the_sidecar_errs(
    server: AuthnHTTPServer, directory: Directory, run_ext_auth: RunExtAuth
) -> None:
    directory.fail = True
    done = run_ext_auth(f"http://127.0.0.1:{server.port}/authn", f"push.ns.example.1 {PASSWORD}".encode())
    assert done.returncode == 1
    assert done.stdout == b""
    assert b"503" in done.stderr
    assert PASSWORD.encode() not in done.stderr


def test_ext_auth_fails_closed_when_the_sidecar_is_down(
    run_ext_auth: RunExtAuth, server: AuthnHTTPServer
) -> None:
    port = server.port
    server.shutdown()
    server.server_close()
    done = run_ext_auth(f"http://127.0.0.1:{port}/authn", f"push.ns.example.1 {PASSWORD}".encode())
    assert done.returncode == 1
    assert done.stdout == b""
    assert PASSWORD.encode() not in done.stderr


# --------------------------------------------------------------------------------------------------
# The bounded login path


@pytest.mark.parametrize(
    "body",
    [
        f"push.ns.example.1 a {PASSWORD}",  # user "push.ns.example.1 a": docker_auth sees another account
        f"push.ns.example.1 {PASSWORD}\t",
        f"push.ns.example.1\x00 {PASSWORD}",
        f"push.ns.example.1 {PASSWORD}\u200b",
    ],
)
def test_whitespace_or_control_characters_are_denied(server: AuthnHTTPServer, body: str) -> None:
    assert _request(server, "POST", "/authn", body.encode())[0] == 401


def test_listen_backlog_is_sized_for_bursts(server: AuthnHTTPServer) -> None:
    assert server.request_queue_size >= 128


def test_connections_beyond_the_thread_cap_get_503(directory: Directory) -> None:
    release = threading.Event()

    def blocking_lookup(username: str) -> accounts.Account | None:
        release.wait(5)
        return directory(username)

    srv = AuthnHTTPServer(blocking_lookup, port=0, clock=lambda: CREATED)
    srv.max_threads = 1
    srv._handlers = threading.BoundedSemaphore(1)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        first = threading.Thread(
            target=_request, args=(srv, "POST", "/authn", f"push.ns.example.1 {PASSWORD}".encode())
        )
        first.start()
        deadline = time.monotonic() + 5
        while srv._handlers._value != 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _request(srv, "POST", "/authn", f"push.ns.example.1 {PASSWORD}".encode())[0] == 503
        assert srv.rejected_busy == 1
        release.set()
        first.join(5)
    finally:
        release.set()
        srv.shutdown()
        srv.server_close()


def test_busy_verifier_answers_503(directory: Directory) -> None:
    def busy(account: accounts.Account, password: str) -> bool:
        raise authn.VerifierBusy("full")

    srv = AuthnHTTPServer(directory, port=0, clock=lambda: CREATED, verify=busy)
    assert srv.handle_login(f"push.ns.example.1 {PASSWORD}".encode())[0] == 503
    srv.server_close()
