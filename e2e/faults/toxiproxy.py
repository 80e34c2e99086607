"""A real toxiproxy-server (Shopify toxiproxy v2, built by hack/build-deps.sh) between test processes
and the kube-apiserver, and a way to make new connections hang in TCP connect.

Toxics used by the fault suite:
* `hang`: toxiproxy's `timeout` toxic with timeout 0 in both directions — connections (existing and
  new) stay open and nothing is forwarded until the toxic is removed, then the held data flows.
* `latency`: a delay on every chunk in both directions.
* `reset_peer` with timeout 0 for a moment (`reset_connections`): every connection that carries
  data in either direction meanwhile (a watch stream with events, a request) is reset (RST); later
  ones work. (toxiproxy resets a connection when data arrives, and forwards nothing while the toxic
  stays: with a timeout it is a blackhole that ends in a reset.)

toxiproxy accepts every connection, so it cannot make a connect hang. `ConnectHang` does: it takes
the proxy's listen port away from toxiproxy (disabled: its listener and every connection through it
close) and binds a listener of its own there whose accept queue is full and is never drained. Linux
drops a SYN to a listener with a full accept queue (net.ipv4.tcp_abort_on_overflow=0, the default),
so the client's connect() sees no answer at all and retransmits its SYN until its own timeout — the
same as a partition that drops packets. No privileges, no iptables.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from e2e.kube.support import wait_for
from registry_operator.devenv import binaries
from registry_operator.devenv.processes import free_port


class Toxiproxy:
    """A real toxiproxy-server on loopback, driven through its HTTP API."""

    def __init__(self, workdir: Path) -> None:
        server = binaries.ensure("toxiproxy")["toxiproxy"].path("toxiproxy-server")
        self.api_port = free_port()
        self._log = (workdir / "toxiproxy.log").open("w")
        self.process = subprocess.Popen(
            [str(server), "-host", "127.0.0.1", "-port", str(self.api_port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._up, 20, "toxiproxy's API")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read()
        return json.loads(raw) if raw and raw[:1] in (b"{", b"[") else raw.decode()

    def _up(self) -> bool:
        try:
            self._call("GET", "/version")
        except OSError:
            return False
        return True

    def proxy(self, name: str, upstream: str) -> str:
        """A proxy to `upstream` (host:port); returns its listen address."""
        created = self._call(
            "POST", "/proxies", {"name": name, "listen": "127.0.0.1:0", "upstream": upstream, "enabled": True}
        )
        return str(created["listen"])

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Disabled: the listener and every connection through the proxy are closed."""
        self._call("POST", f"/proxies/{name}", {"enabled": enabled})

    def add_toxic(
        self, name: str, toxic: str, kind: str, attributes: dict[str, Any], *, both: bool = True
    ) -> None:
        for stream in ("upstream", "downstream") if both else ("downstream",):
            body = {"name": f"{toxic}-{stream}", "type": kind, "stream": stream, "attributes": attributes}
            self._call("POST", f"/proxies/{name}/toxics", body)

    def remove_toxic(self, name: str, toxic: str, *, both: bool = True) -> None:
        for stream in ("upstream", "downstream") if both else ("downstream",):
            self._call("DELETE", f"/proxies/{name}/toxics/{toxic}-{stream}")

    def blackhole(self, name: str) -> None:
        self.add_toxic(name, "hang", "timeout", {"timeout": 0})

    def heal(self, name: str) -> None:
        self.remove_toxic(name, "hang")

    def reset_connections(self, name: str, window: float = 0.5) -> None:
        self.add_toxic(name, "reset", "reset_peer", {"timeout": 0})
        time.sleep(window)
        self.remove_toxic(name, "reset")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self._log.close()


class ConnectHang:
    """While active, connects to one toxiproxy proxy's listen address get no answer (see module doc)."""

    def __init__(self, toxiproxy: Toxiproxy, name: str, listen: str) -> None:
        host, port = listen.rsplit(":", 1)
        self._toxiproxy = toxiproxy
        self._name = name
        self._address = (host, int(port))
        self._listener: socket.socket | None = None
        self._queued: list[socket.socket] = []

    def start(self) -> None:
        self._toxiproxy.set_enabled(self._name, False)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self._address)
        listener.listen(0)
        self._listener = listener
        # Fill the accept queue; the first connect that gets no answer proves SYNs are dropped now.
        for _ in range(8):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.settimeout(0.5)
            try:
                client.connect(self._address)
            except TimeoutError:
                client.close()
                return
            self._queued.append(client)
        raise AssertionError(f"the accept queue of {self._address} never filled: connects would not hang")

    def stop(self) -> None:
        for client in self._queued:
            client.close()
        self._queued.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._toxiproxy.set_enabled(self._name, True)
