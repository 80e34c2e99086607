"""The authn sidecar: decides docker_auth logins against ImageRegistryAccounts.

docker_auth's `ext_auth` runs busybox `wget` (`dockerauth.ext_auth_command`), which POSTs
`<user> <password>` to `http://127.0.0.1:<port>/authn` here. Answers: 200 + `{"labels": {...}}`
(allow), 401 (deny), 404 (no match), 400 (malformed request), 503 (account lookup failed or all
bcrypt slots busy). wget exits 0 only for 200, so docker_auth denies every other answer; the codes
tell the cases apart in this sidecar's log and for other callers.

Decision (`authenticate`, pure):
* empty user or password, or unknown user → no match;
* account being deleted, expired (`now > creationTimestamp + spec.ttl`), without a password hash,
  with a hash of an unknown scheme, with an unreadable ttl, or wrong password → deny;
* else allow with labels = `spec.labels` + `origin: [cr]` + `account: [<name>]` (those two always
  override `spec.labels`, so they cannot be forged).
Unlike the original, account changes and expiry take effect on the next login: the cache below
only remembers successful bcrypt checks, keyed by the account's uid and resourceVersion. Generated
accounts (`sha256-salted-v1$` hashes, see `passwords.py`) are checked directly: one HMAC costs
microseconds, so they need no cache and no bcrypt slot.

Passwords never reach a log line, an exception message or a response.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import os
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from registry_operator.accounts import (
    AUTHN_PATH,
    DEFAULT_AUTHN_PORT,
    HEALTH_PATH,
    Account,
    account_expiry,
    account_hash_scheme,
    verify_account_password,
)
from registry_operator.passwords import HashScheme

MAX_BODY_BYTES = 4096
DEFAULT_CACHE_SIZE = 4096
# Bounded login path. A burst of logins must neither overflow the listen queue (Python's default
# of 5 turns each overflow into a ~1 s SYN retry) nor pile up threads or bcrypt runs.
LISTEN_BACKLOG = 256
MAX_HANDLER_THREADS = 64  # connections beyond this get 503 at once (docker_auth: error)
MAX_CONCURRENT_BCRYPT = 2  # bcrypt is CPU bound; more in parallel only adds latency
BCRYPT_SLOT_WAIT_SECONDS = 1.0  # then 503 rather than queueing without bound
FAILED_CACHE_TTL_SECONDS = 30.0  # a repeated wrong password is denied without a bcrypt run
BCRYPT_NICENESS = 10  # bcrypt yields the CPU to cheap (cached) checks: see lower_thread_priority

Labels = dict[str, list[str]]
AccountVerifier = Callable[[Account, str], bool]
"""(account, password) → whether the password matches the account's stored hash."""
AccountLookup = Callable[[str], Account | None]
"""user name → the ImageRegistryAccount of that name in the registry's namespace, or None."""

_log = logging.getLogger(__name__)


class Decision(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    NO_MATCH = "no match"


@dataclass(frozen=True)
class AuthnResult:
    decision: Decision
    reason: str  # for logs; never contains the password
    labels: Labels = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Decision


def account_labels(account: Account) -> Labels:
    """`spec.labels` (values coerced to lists of strings) plus `origin: [cr]` and `account: [<name>]`."""
    labels: Labels = {}
    raw = (account.get("spec") or {}).get("labels") or {}
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            if not isinstance(key, str):
                continue
            if isinstance(value, str):
                labels[key] = [value]
            elif isinstance(value, list):
                labels[key] = [item for item in value if isinstance(item, str)]
    labels["origin"] = ["cr"]
    labels["account"] = [str((account.get("metadata") or {}).get("name", ""))]
    return labels


def authenticate(
    account: Account | None,
    username: str,
    password: str,
    now: datetime,
    verify: AccountVerifier = verify_account_password,
) -> AuthnResult:
    """Decide one login; `account` is what the lookup found for `username` (None: unknown user)."""
    if not username or not password:
        return AuthnResult(Decision.NO_MATCH, "empty user name or password")
    if account is None:
        return AuthnResult(Decision.NO_MATCH, "unknown user")
    metadata = account.get("metadata") or {}
    if metadata.get("name") != username:
        return AuthnResult(Decision.NO_MATCH, "lookup returned another account")
    if metadata.get("deletionTimestamp"):
        return AuthnResult(Decision.DENY, "account is being deleted")
    try:
        expiry = account_expiry(account)
    except ValueError as err:
        return AuthnResult(Decision.DENY, f"unreadable account expiry: {err}")
    if expiry is not None and now > expiry:
        return AuthnResult(Decision.DENY, f"account expired at {expiry.isoformat()}")
    if not (account.get("spec") or {}).get("password"):
        # docker_auth's static users accept any password without a hash; accounts must not.
        return AuthnResult(Decision.DENY, "account has no password hash")
    if account_hash_scheme(account) is None:
        return AuthnResult(Decision.DENY, "password hash of an unknown scheme")
    if not verify(account, password):
        return AuthnResult(Decision.DENY, "wrong password")
    return AuthnResult(Decision.ALLOW, "password matches", account_labels(account))


# --------------------------------------------------------------------------------------------------
# Cache of successful bcrypt checks


def lower_thread_priority(niceness: int = BCRYPT_NICENESS) -> None:
    """Run the calling thread at `niceness` or lower priority (Linux: niceness is per thread).

    For the thread that is about to run bcrypt: under a burst of wrong passwords, cached checks of
    good logins then get the CPU first instead of queueing behind bcrypt runs. A handler thread
    serves one connection (docker_auth's wget sends one request each) and ends with it, so the lower
    priority never outlives the check. Raising priority back would need CAP_SYS_NICE: never tried.
    """
    with contextlib.suppress(OSError):
        thread = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, thread) < niceness:
            os.setpriority(os.PRIO_PROCESS, thread, niceness)


class VerifierBusy(Exception):
    """Every bcrypt slot stayed busy: the sidecar answers 503 (docker_auth reports an error)."""


class CachingVerifier:
    """An `AccountVerifier` that remembers successful bcrypt checks in a bounded LRU, and recent
    failures; accounts with the fast hash of generated passwords go straight to `verify`.

    The key is (uid, resourceVersion, SHA-256 of stored hash and password): any change to the
    account, or a new account under the same name, misses the cache, so there is nothing to
    invalidate. A failed check is remembered for `failed_ttl` seconds (same key), so a client
    retrying a wrong password does not cost a bcrypt run each time. At most `max_concurrent`
    bcrypt runs happen at once; a check that waits longer than `slot_wait` for one raises
    `VerifierBusy`.
    """

    def __init__(
        self,
        verify: AccountVerifier = verify_account_password,
        max_entries: int = DEFAULT_CACHE_SIZE,
        *,
        max_concurrent: int = MAX_CONCURRENT_BCRYPT,
        slot_wait: float = BCRYPT_SLOT_WAIT_SECONDS,
        failed_ttl: float = FAILED_CACHE_TTL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        deprioritize: bool = False,
    ):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._verify = verify
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str, bytes], None] = OrderedDict()
        self._failed: OrderedDict[tuple[str, str, bytes], float] = OrderedDict()
        self._failed_ttl = failed_ttl
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._slot_wait = slot_wait
        self._monotonic = monotonic
        # Only for threads that end after the check (the HTTP server's handlers): see lower_thread_priority.
        self.deprioritize = deprioritize
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.failed_hits = 0
        self.fast_checks = 0

    @staticmethod
    def _key(account: Account, password: str) -> tuple[str, str, bytes] | None:
        metadata = account.get("metadata") or {}
        uid, resource_version = metadata.get("uid"), metadata.get("resourceVersion")
        if not uid or not resource_version:
            return None  # not an object from the API: nothing stable to key on
        hashed = str((account.get("spec") or {}).get("password", ""))
        digest = hashlib.sha256(f"{hashed}\0{password}".encode()).digest()
        return (str(uid), str(resource_version), digest)

    def __call__(self, account: Account, password: str) -> bool:
        scheme = account_hash_scheme(account)
        if scheme is HashScheme.SALTED_SHA256_V1:
            # Cheaper than the cache lookup itself, and no CPU to bound.
            with self._lock:
                self.fast_checks += 1
            return self._verify(account, password)
        if scheme is None:
            return False
        key = self._key(account, password)
        if key is not None:
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return True
                failed_at = self._failed.get(key)
                if failed_at is not None and self._monotonic() - failed_at < self._failed_ttl:
                    self.failed_hits += 1
                    return False
                self.misses += 1
        if not self._slots.acquire(timeout=self._slot_wait):
            raise VerifierBusy("all bcrypt slots are busy")
        try:
            if self.deprioritize:
                lower_thread_priority()
            verified = self._verify(account, password)
        finally:
            self._slots.release()
        if not verified:
            if key is not None:
                with self._lock:
                    self._failed[key] = self._monotonic()
                    self._failed.move_to_end(key)
                    while len(self._failed) > self._max_entries:
                        self._failed.popitem(last=False)
            return False
        if key is not None:
            with self._lock:
                self._entries[key] = None
                self._entries.move_to_end(key)
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# --------------------------------------------------------------------------------------------------
# HTTP server


def parse_request_body(body: bytes) -> tuple[str, str] | None:
    """`<user> <password>` as docker_auth writes it (split at the first space), None if not UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    username, _, password = text.partition(" ")
    return username, password


def has_unsafe_characters(text: str) -> bool:
    """Whitespace or control/format characters, which no account name and no generated password has.

    docker_auth writes `<user> <password>` with nothing to tell where the user name ends: user
    `"u a"` with password `"b"` arrives as user `u`, password `"a b"`, while docker_auth's
    `${account}` rules see `"u a"`. Refusing whitespace in the password half refuses such logins.
    """
    return any(char.isspace() or unicodedata.category(char)[0] == "C" for char in text)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _AuthnRequestHandler(BaseHTTPRequestHandler):
    server_version = "registry-operator-authn"
    timeout = 10  # seconds a client may take to send its request

    def do_GET(self) -> None:
        if self.path == HEALTH_PATH:
            self._respond(200, b"ok\n", "text/plain")
        else:
            self._respond(405 if self.path == AUTHN_PATH else 400, b"", "text/plain")

    def do_POST(self) -> None:
        server = cast(AuthnHTTPServer, self.server)
        if self.path != AUTHN_PATH:
            # Not 404, which means "no such account".
            self._respond(400, b"", "text/plain")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._respond(411, b"", "text/plain")
            return
        if length < 0 or length > MAX_BODY_BYTES:
            self._respond(413, b"", "text/plain")
            return
        status, body = server.handle_login(self.rfile.read(length))
        self._respond(status, body, "application/json")

    def _respond(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line and status only: the body (with the password) is never logged.
        cast(AuthnHTTPServer, self.server).logger.debug("%s " + format, self.address_string(), *args)


class AuthnHTTPServer(ThreadingHTTPServer):
    """The sidecar's HTTP endpoint on loopback. Run with `serve_forever()`; stop with `shutdown()`.

    A listen backlog of `LISTEN_BACKLOG`; at most `max_threads` connections are handled at once,
    any further one gets 503 straight from the accepting thread.
    """

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG
    max_threads = MAX_HANDLER_THREADS

    def __init__(
        self,
        lookup: AccountLookup,
        *,
        port: int = DEFAULT_AUTHN_PORT,
        host: str = "127.0.0.1",
        verify: AccountVerifier | None = None,
        clock: Callable[[], datetime] = _utcnow,
        logger: logging.Logger | None = None,
    ) -> None:
        self.lookup = lookup
        self.verify: AccountVerifier = verify if verify is not None else CachingVerifier(deprioritize=True)
        self.clock = clock
        self.logger = logger or _log
        self._handlers = threading.BoundedSemaphore(self.max_threads)
        self.rejected_busy = 0
        super().__init__((host, port), _AuthnRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._handlers.acquire(blocking=False):
            self.rejected_busy += 1
            with contextlib.suppress(OSError):
                # Read the (small) request first: closing with unread data would reset the
                # connection before the client sees the answer.
                request.settimeout(0.2)
                request.recv(MAX_BODY_BYTES + 2048)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._handlers.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._handlers.release()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_login(self, body: bytes) -> tuple[int, bytes]:
        """HTTP status and body for one `/authn` request body."""
        credentials = parse_request_body(body)
        if credentials is None:
            self.logger.warning("authn: request body is not UTF-8")
            return 400, b""
        username, password = credentials
        if has_unsafe_characters(username) or has_unsafe_characters(password):
            self.logger.info("authn: user name or password with whitespace or control characters: deny")
            return 401, b""
        account: Account | None = None
        if username and password:
            try:
                account = self.lookup(username)
            except Exception as err:
                self.logger.error("authn: lookup of user %r failed: %s", username, type(err).__name__)
                return 503, b""
        try:
            result = authenticate(account, username, password, self.clock(), self.verify)
        except VerifierBusy:
            self.logger.warning("authn: user %r: all bcrypt slots busy, answering 503", username)
            return 503, b""
        except Exception as err:  # a broken verifier must not drop the connection silently
            self.logger.error("authn: checking user %r failed: %s", username, type(err).__name__)
            return 500, b""
        self.logger.info("authn: user %r: %s (%s)", username, result.decision.value, result.reason)
        if result.decision is Decision.ALLOW:
            return 200, json.dumps({"labels": result.labels}, sort_keys=True, separators=(",", ":")).encode()
        if result.decision is Decision.DENY:
            return 401, b""
        return 404, b""
