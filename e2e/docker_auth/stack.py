"""The operator's registry stack as local processes: the real registry, the real docker_auth and the
authn sidecar, with exactly the config, certificates, token key and ext_auth command the operator wrote
to the API; only listen addresses and file paths are rewritten.

Clients reach them under the registry's own hostname (the name in its certificate) through a small
CONNECT proxy (`HTTPS_PROXY`): `<hostname>:443` → the registry, `<hostname>:5001` (the realm) →
docker_auth. So the realm and the TLS names stay as the operator rendered them.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import socket
import ssl
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from registry_operator import dockerauth
from registry_operator.controllers.resources import CONFIGMAPS, IMAGE_REGISTRIES, SECRETS
from registry_operator.devenv import binaries
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.devenv.processes import ManagedProcess, free_port, wait_until
from registry_operator.kube.client import Client


def decoded(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


class ConnectProxy:
    """HTTP CONNECT proxy on 127.0.0.1 mapping (host, port) to local ports."""

    def __init__(self, routes: dict[tuple[str, int], int]) -> None:
        self.routes = routes
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._closed = False

    def start(self) -> ConnectProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _serve(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            host, _, port = target.rpartition(":")
            local = self.routes.get((host.strip("[]"), int(port)))
            if method != "CONNECT" or local is None:
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            upstream = socket.create_connection(("127.0.0.1", local), timeout=10)
            upstream.settimeout(None)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
            _pipe(client, upstream)
        except OSError:
            pass
        finally:
            client.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@dataclass
class Stack:
    """One ImageRegistry's processes; `start()` then use `skopeo_env`, `token()`; `stop()`."""

    cluster: LocalCluster
    api: Client
    namespace: str
    name: str
    hostname: str
    workdir: Path
    docker_auth_bin: Path
    registry_port: int = field(default_factory=free_port)
    auth_port: int = field(default_factory=free_port)
    authn_port: int = field(default_factory=free_port)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    proxy: ConnectProxy | None = None
    ca_pem: bytes = b""  # the CA clients verify with: the generated Secrets' ca.crt
    token_key_size: int = 0
    registry_env: dict[str, str] = field(default_factory=dict)  # e.g. the S3 keys from the user's Secret

    def _fetch(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Registry config and docker_auth config as the operator wrote them; key files written."""
        config_map = self.api.get(CONFIGMAPS, f"imageregistry-{self.name}-auth-config", self.namespace)
        registry = self.api.get(IMAGE_REGISTRIES, self.name, self.namespace)
        tls = self.api.get(SECRETS, registry["status"]["tlsSecretName"], self.namespace)
        token = self.api.get(SECRETS, f"imageregistry-{self.name}-auth-token", self.namespace)
        files = {
            "tls.crt": decoded(tls, "tls.crt"),
            "tls.key": decoded(tls, "tls.key"),
            "token.crt": decoded(token, "tls.crt"),
            "token.key": decoded(token, "tls.key"),
            # What the pod mounts at the registry's rootcertbundle path (during a rollover: two keys).
            "token-bundle.crt": decoded(token, "bundle.crt"),
        }
        for file_name, data in files.items():
            path = self.workdir / file_name
            path.write_bytes(data)
            path.chmod(0o600)
        self.token_key_size = x509.load_pem_x509_certificate(files["token.crt"]).public_key().key_size  # type: ignore[union-attr]
        data = config_map["data"]
        return yaml.safe_load(data["registry.yml"]), yaml.safe_load(data["auth_config.yml"])

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        registry_config, auth_config = self._fetch()
        http_secret = decoded(
            self.api.get(SECRETS, f"imageregistry-{self.name}-http-secret", self.namespace), "http-secret"
        )
        wd = self.workdir
        # registry: listen address, file paths, storage directory.
        registry_config["http"]["addr"] = f"127.0.0.1:{self.registry_port}"
        registry_config["http"]["tls"] = {"certificate": str(wd / "tls.crt"), "key": str(wd / "tls.key")}
        registry_config["auth"]["token"]["rootcertbundle"] = str(wd / "token-bundle.crt")
        if "filesystem" in registry_config["storage"]:  # object storage (s3) is used as rendered
            registry_config["storage"]["filesystem"]["rootdirectory"] = str(wd / "data")
        (wd / "registry.yml").write_text(yaml.safe_dump(registry_config))
        self.write_auth_config(auth_config)
        env = {
            **os.environ,
            **dockerauth.REGISTRY_ENV,
            "REGISTRY_HTTP_SECRET": http_secret.decode(),
            **self.registry_env,
        }
        registry_bin = binaries.ensure("registry")["registry"].path("registry")
        self._run("registry", [str(registry_bin), "serve", str(wd / "registry.yml")], env)
        authn_env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig), "LOG_LEVEL": "warning"}
        self._run(
            "authn",
            [sys.executable, "-m", "registry_operator", "authn-server", "--namespace", self.namespace,
             "--port", str(self.authn_port)],
            authn_env,
        )  # fmt: skip
        self.start_docker_auth()
        self.proxy = ConnectProxy(
            {(self.hostname, 443): self.registry_port, (self.hostname, 5001): self.auth_port}
        ).start()
        wait_until("registry", lambda: _tcp_open(self.registry_port), 30, self.processes["registry"])
        wait_until("authn", lambda: _tcp_open(self.authn_port), 60, self.processes["authn"])
        return self

    def write_auth_config(self, auth_config: dict[str, Any]) -> None:
        wd = self.workdir
        auth_config["server"]["addr"] = f"127.0.0.1:{self.auth_port}"
        auth_config["server"]["certificate"] = str(wd / "tls.crt")
        auth_config["server"]["key"] = str(wd / "tls.key")
        auth_config["token"]["certificate"] = str(wd / "token.crt")
        auth_config["token"]["key"] = str(wd / "token.key")
        # ext_auth: the image's busybox is this machine's; the sidecar's port is ours. Nothing else changes.
        command, args = auth_config["ext_auth"]["command"], auth_config["ext_auth"]["args"]
        assert command == dockerauth.BUSYBOX and args[0] == "wget", auth_config["ext_auth"]
        busybox = shutil.which("busybox")
        assert busybox, "busybox is required: hack/build-deps.sh debian-tools"
        authn_url = urllib.parse.urlsplit(args[-1])
        auth_config["ext_auth"] = {
            "command": busybox,
            "args": [*args[:-1], f"http://127.0.0.1:{self.authn_port}{authn_url.path}"],
        }
        (wd / "auth_config.yml").write_text(yaml.safe_dump(auth_config))

    def start_docker_auth(self) -> None:
        if "docker_auth" in self.processes:
            self.processes.pop("docker_auth").stop()
        self._run(
            "docker_auth",
            [str(self.docker_auth_bin), "--v=2", "--logtostderr", str(self.workdir / "auth_config.yml")],
            dict(os.environ),
        )
        wait_until("docker_auth", lambda: _tcp_open(self.auth_port), 30, self.processes["docker_auth"])

    def reload_auth_config(self) -> None:
        """Take the operator's current docker_auth config (e.g. after an ACL change) and restart."""
        _, auth_config = self._fetch()
        self.write_auth_config(auth_config)
        self.start_docker_auth()

    def use_acl(self, acl: list[dict[str, Any]]) -> None:
        """The operator's current docker_auth config with only `acl` replaced (validated as the
        operator validates `spec.auth.acl`); restart docker_auth."""
        _, auth_config = self._fetch()
        auth_config["acl"] = dockerauth.validate_acl(acl)
        self.write_auth_config(auth_config)
        self.start_docker_auth()

    def _run(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        process = ManagedProcess(name, argv, self.workdir, env)
        process.start()
        self.processes[name] = process

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        for process in self.processes.values():
            process.stop()

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def client_env(self) -> dict[str, str]:
        """Environment for skopeo (and urllib): the CONNECT proxy for the registry's hostname."""
        assert self.proxy is not None
        proxy = f"http://127.0.0.1:{self.proxy.port}"
        env = {
            k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "https_proxy", "http_proxy")
        }
        return {**env, "HTTPS_PROXY": proxy, "https_proxy": proxy}

    def token(self, username: str | None, password: str | None, scope: str) -> tuple[int, dict[str, Any]]:
        """GET the realm (through docker_auth) for one scope: (status, JWT claims or error body)."""
        query = urllib.parse.urlencode({"service": dockerauth.token_service(self.hostname), "scope": scope})
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        with (
            socket.create_connection(("127.0.0.1", self.auth_port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=self.hostname) as tls,
        ):
            lines = [f"GET /auth?{query} HTTP/1.1", f"Host: {self.hostname}:5001", "Connection: close"]
            if username is not None:
                basic = base64.b64encode(f"{username}:{password}".encode()).decode()
                lines.append(f"Authorization: Basic {basic}")
            tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            response = http.client.HTTPResponse(tls)
            response.begin()
            body = response.read()
        if response.status != 200:
            return response.status, {"body": body.decode(errors="replace")}
        jwt = json.loads(body)["token"]
        payload = jwt.split(".")[1]
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return 200, claims


def granted(claims: dict[str, Any]) -> set[str]:
    return {action for entry in claims.get("access") or [] for action in entry.get("actions") or []}


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
