"""The transport half of the client (client-go's `rest` package): sending one request.

This module owns how a request travels: the connection pool and credentials of a kubeconfig or
the in-cluster service account (from the `kubernetes` package, whose generated model classes are
never used: bodies stay plain JSON dicts), headers, timeouts and deadlines, connect retries
(`retry.TransportRetry`), counting every response in `rest_client_requests_total{code,method,host}`,
and turning error answers into the typed errors of `errors.py`. The verbs are in `client.py`.

Timeouts and deadlines: every call is bounded by the client's `request_timeout` (or a per-call
`timeout`). A call may also take a `deadline`, an absolute time on the client's clock: then the
whole call, connect retries included, ends by `min(now + timeout, deadline)`, and a deadline already
passed raises `DeadlineExceeded` without sending anything. `with_deadline()` gives a view whose
every call is also bounded by a deadline computed per call (e.g. from the last lease renewal).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlencode, urlparse

import urllib3
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration

from registry_operator import __version__
from registry_operator.kube import metrics
from registry_operator.kube.clock import REAL_CLOCK, Clock
from registry_operator.kube.errors import ConnectionFailed, DeadlineExceeded, error_from_response
from registry_operator.kube.retry import DEFAULT_TRANSPORT_RETRY, TransportRetry

DeadlineSource = Callable[[], float | None]

DEFAULT_REQUEST_TIMEOUT = 30.0


class RestClient:
    """Sends requests to one API server. Thread-safe: share one instance between all threads."""

    def __init__(
        self,
        configuration: Configuration,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        user_agent: str | None = None,
        connection_pool_size: int = 32,
        transport_retry: TransportRetry = DEFAULT_TRANSPORT_RETRY,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        configuration.connection_pool_maxsize = connection_pool_size
        # The pool never retries by itself: `_send` does, attempt by attempt, within the deadline.
        configuration.retries = False
        self._configuration = configuration
        self._api_client = ApiClient(configuration)
        self._pool = self._api_client.rest_client.pool_manager
        self._base_url = str(configuration.host).rstrip("/")
        self._host_label = urlparse(self._base_url).netloc
        self._user_agent = user_agent or f"registry-operator/{__version__}"
        self._default_deadline: DeadlineSource | None = None
        self.request_timeout = request_timeout
        self._transport_retry = transport_retry
        self._clock = clock

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def from_kubeconfig(
        cls,
        path: str | os.PathLike[str],
        *,
        context: str | None = None,
        server: str | None = None,
        **kwargs: Any,
    ) -> Self:
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
    def in_cluster(cls, **kwargs: Any) -> Self:
        configuration = Configuration()
        load: Any = kube_config.load_incluster_config
        load(client_configuration=configuration)
        return cls(configuration, **kwargs)

    @classmethod
    def load(cls, kubeconfig: str | os.PathLike[str] | None = None, **kwargs: Any) -> Self:
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

    # --- views (same connection pool, other defaults) ------------------------------------------
    def with_timeout(self, request_timeout: float) -> Self:
        """A view of this client with another default request timeout."""
        clone = copy.copy(self)
        clone.request_timeout = request_timeout
        return clone

    def with_transport_retry(self, transport_retry: TransportRetry) -> Self:
        """A view of this client that re-sends after failed connects as `transport_retry` says."""
        clone = copy.copy(self)
        clone._transport_retry = transport_retry
        return clone

    def with_deadline(self, deadline: DeadlineSource) -> Self:
        """A view whose every call also ends by `deadline()`, asked once per call (None: unbounded).

        It combines with this client's own default deadline and with per-call deadlines: the
        earliest wins.
        """
        clone = copy.copy(self)
        outer = self._default_deadline
        clone._default_deadline = deadline if outer is None else (lambda: _earliest(outer(), deadline()))
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

    def deadline_for(self, deadline: float | None = None) -> float | None:
        """The deadline a call with `deadline` runs under: the earliest of it and the view's default."""
        return _earliest(deadline, self._default_deadline() if self._default_deadline else None)

    def time_left(self, what: str, deadline: float) -> float:
        """Seconds until `deadline`; raises DeadlineExceeded (for `what`) if it has passed."""
        remaining = deadline - self._clock.now()
        if remaining <= 0:
            raise DeadlineExceeded(f"{what}: deadline passed {-remaining:.3f}s ago, not sent")
        return remaining

    def _budget(self, what: str, timeout: float, deadline: float | None) -> float:
        return timeout if deadline is None else min(timeout, self.time_left(what, deadline))

    def _send(
        self,
        method: str,
        url: str,
        what: str,
        *,
        timeout: float,
        deadline: float | None,
        body: bytes | None = None,
        content_type: str | None = None,
        read_timeout: float | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """Send with connect retries, each attempt bounded by what is left of timeout and deadline.

        `read_timeout` set: a streaming request (the timeout bounds the connect, the body is
        not preloaded); else the timeout bounds the whole exchange.
        """
        delays = self._transport_retry.delays()
        while True:
            budget = self._budget(what, timeout, deadline)
            try:
                return self._pool.request(
                    method,
                    url,
                    body=body,
                    headers=self._headers(content_type),
                    timeout=urllib3.Timeout(total=budget)
                    if read_timeout is None
                    else urllib3.Timeout(connect=budget, read=read_timeout),
                    preload_content=read_timeout is None,
                    retries=False,
                    redirect=False,
                )
            except urllib3.exceptions.HTTPError as error:
                delay = next(delays, None) if self._transport_retry.retriable(error) else None
                if delay is not None and (deadline is None or self._clock.now() + delay < deadline):
                    self._clock.sleep(delay)
                    continue
                self._count(method, "<error>")
                if deadline is not None and self._clock.now() >= deadline:
                    raise DeadlineExceeded(f"{what}: deadline exceeded: {error}") from error
                raise ConnectionFailed(f"{what}: {error}") from error

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Any:
        """One API call; returns the decoded JSON answer (None for an empty body)."""
        data = json.dumps(body).encode() if body is not None else None
        if data is not None and content_type is None:
            content_type = "application/json"
        response = self._send(
            method,
            self._url(path, query),
            f"{method} {path}",
            timeout=timeout if timeout is not None else self.request_timeout,
            deadline=self.deadline_for(deadline),
            body=data,
            content_type=content_type,
        )
        self._count(method, str(response.status))
        raw = response.data
        if response.status >= 400:
            raise error_from_response(response.status, raw, response.reason or "")
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def stream(
        self,
        path: str,
        *,
        query: Mapping[str, Any] | None,
        connect_timeout: float,
        read_timeout: float,
        deadline: float | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """A streaming GET (a watch): the answer with its body unread; error answers raise at once.

        `connect_timeout` bounds the connect, `read_timeout` every wait for data afterwards.
        """
        what = f"watch {path}"
        response = self._send(
            "GET",
            self._url(path, query),
            what,
            timeout=connect_timeout,
            deadline=self.deadline_for(deadline),
            read_timeout=read_timeout,
        )
        self._count("GET", str(response.status))
        if response.status >= 400:
            raw = response.data
            response.release_conn()
            raise error_from_response(response.status, raw)
        return response


def _earliest(first: float | None, second: float | None) -> float | None:
    if first is None:
        return second
    return first if second is None else min(first, second)
