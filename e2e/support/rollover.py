"""A registry's pods as local processes that follow its StatefulSet, for rollover tests.

Each simulated pod is what kubelet would start for the current pod template: the real registry with
the operator's rendered `registry.yml` (only listen address, file paths and storage directory
rewritten), the serving certificate from the Secret the template mounts, `bundle.crt` of the token
key Secret at the rootcertbundle path, and a stand-in for docker_auth: a TLS token endpoint with the
same serving certificate that signs tokens with the token key Secret's `tls.key` as of the pod's start
(what docker_auth reads at start). All replicas share one storage directory.

`PodFollower` watches the StatefulSet's pod template hash and, on a change, replaces the replicas one
at a time, the new process first (readiness before the old one leaves, as a rolling update with a
Service in front does), then switches the CONNECT proxy's routes to it.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from e2e.docker_auth.stack import ConnectProxy
from e2e.support.tokens import jwk_thumbprint, mint_token
from registry_operator import dockerauth
from registry_operator.api import constants as c
from registry_operator.controllers.resources import CONFIGMAPS, SECRETS, STATEFULSETS
from registry_operator.devenv import binaries
from registry_operator.devenv.processes import ManagedProcess, free_port, wait_until
from registry_operator.kube.client import Client

# Tokens the stand-in docker_auth issues live this long (docker_auth's default is 900 s; the test
# keeps it below OPERATOR_TOKEN_KEY_RETIREMENT as the real default keeps 900 s below 16 min).
TOKEN_LIFETIME = 15
DRAIN_SECONDS = 3.0


def _decoded(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


def _template(sts: dict[str, Any]) -> tuple[str, str]:
    """(config hash, serving TLS Secret name) of a StatefulSet's pod template."""
    template = sts["spec"]["template"]
    volumes = {volume["name"]: volume for volume in template["spec"]["volumes"]}
    return template["metadata"]["annotations"][c.ANNOTATION_CONFIG_HASH], volumes["tls"]["secret"][
        "secretName"
    ]


class TokenEndpoint:
    """docker_auth's /auth as far as a client sees it: TLS with the pod's serving certificate, a
    token signed with the pod's token key, for any user (authorization is not under test here)."""

    def __init__(self, workdir: Path, key: rsa.RSAPrivateKey, *, issuer: str, service: str) -> None:
        self.key, self.issuer, self.service = key, issuer, service
        self.port = free_port()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                access = []
                for scope in query.get("scope", []):
                    kind, _, rest = scope.partition(":")
                    name, _, actions = rest.rpartition(":")
                    access.append({"type": kind, "name": name, "actions": actions.split(",")})
                token = endpoint.token(access)
                body = json.dumps({"token": token, "access_token": token, "expires_in": TOKEN_LIFETIME})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(workdir / "tls.crt"), str(workdir / "tls.key"))
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def token(self, access: list[dict[str, Any]]) -> str:
        return mint_token(
            self.key, issuer=self.issuer, audience=self.service, access=access, lifetime=TOKEN_LIFETIME
        )

    @property
    def kid(self) -> str:
        return jwk_thumbprint(self.key.public_key())

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Pod:
    """One simulated registry pod: the registry process and its token endpoint."""

    name: str
    workdir: Path
    config_hash: str
    registry_port: int
    registry: ManagedProcess
    auth: TokenEndpoint
    serving_pem: bytes
    token_bundle: bytes

    def stop(self) -> None:
        self.registry.stop()
        self.auth.stop()


@dataclass
class PodFollower:
    """The pods of one ImageRegistry, kept on its StatefulSet's current pod template."""

    api: Client
    namespace: str
    name: str
    hostname: str
    workdir: Path
    replicas: int = 1
    storage: Path = field(init=False)
    proxy: ConnectProxy = field(init=False)
    pods: list[Pod] = field(default_factory=list)
    rollouts: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, hash) completed
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _serial: int = 0

    def __post_init__(self) -> None:
        self.storage = self.workdir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.proxy = ConnectProxy({}).start()

    # --- one pod -----------------------------------------------------------------------------------
    def _start_pod(self, config_hash: str, tls_secret_name: str) -> Pod:
        self._serial += 1
        workdir = self.workdir / f"pod-{self._serial}"
        workdir.mkdir(parents=True)
        config_map = self.api.get(CONFIGMAPS, f"imageregistry-{self.name}-auth-config", self.namespace)
        tls = self.api.get(SECRETS, tls_secret_name, self.namespace)
        token = self.api.get(SECRETS, f"imageregistry-{self.name}-auth-token", self.namespace)
        http_secret = _decoded(
            self.api.get(SECRETS, f"imageregistry-{self.name}-http-secret", self.namespace), "http-secret"
        )
        files = {
            "tls.crt": _decoded(tls, "tls.crt"),
            "tls.key": _decoded(tls, "tls.key"),
            "token-bundle.crt": _decoded(token, c.SECRET_KEY_TRUST_BUNDLE),
        }
        for file_name, data in files.items():
            (workdir / file_name).write_bytes(data)
        registry_config = yaml.safe_load(config_map["data"]["registry.yml"])
        auth_config = yaml.safe_load(config_map["data"]["auth_config.yml"])
        port = free_port()
        registry_config["http"]["addr"] = f"127.0.0.1:{port}"
        registry_config["http"]["tls"] = {
            "certificate": str(workdir / "tls.crt"),
            "key": str(workdir / "tls.key"),
        }
        registry_config["auth"]["token"]["rootcertbundle"] = str(workdir / "token-bundle.crt")
        registry_config["storage"]["filesystem"]["rootdirectory"] = str(self.storage)
        (workdir / "registry.yml").write_text(yaml.safe_dump(registry_config))
        env = {**os.environ, **dockerauth.REGISTRY_ENV, "REGISTRY_HTTP_SECRET": http_secret.decode()}
        binary = binaries.ensure("registry")["registry"].path("registry")
        process = ManagedProcess(
            "registry", [str(binary), "serve", str(workdir / "registry.yml")], workdir, env
        )
        process.start()
        key = serialization.load_pem_private_key(_decoded(token, "tls.key"), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        auth = TokenEndpoint(
            workdir,
            key,
            issuer=auth_config["token"]["issuer"],
            service=registry_config["auth"]["token"]["service"],
        )
        pod = Pod(
            f"pod-{self._serial}",
            workdir,
            config_hash,
            port,
            process,
            auth,
            files["tls.crt"],
            files["token-bundle.crt"],
        )
        wait_until("registry", lambda: _answers(port), 30, process)
        return pod

    def _route(self) -> None:
        """The Service: the newest pod answers the registry's hostname (registry and realm)."""
        newest = self.pods[-1]
        self.proxy.routes = {
            (self.hostname, 443): newest.registry_port,
            (self.hostname, 5001): newest.auth.port,
        }

    # --- following the StatefulSet ------------------------------------------------------------------
    def current_template(self) -> tuple[str, str]:
        return _template(self.api.get(STATEFULSETS, self.name, self.namespace))

    def start(self) -> PodFollower:
        config_hash, secret_name = self.current_template()
        with self._lock:
            for _ in range(self.replicas):
                self.pods.append(self._start_pod(config_hash, secret_name))
            self._route()
        threading.Thread(target=self._follow, daemon=True).start()
        return self

    def _follow(self) -> None:
        while not self._stop.wait(0.2):
            try:
                config_hash, secret_name = self.current_template()
            except Exception:
                continue
            if all(pod.config_hash == config_hash for pod in self.pods):
                continue
            for old in self.snapshot():
                if self._stop.is_set():
                    return
                new = self._start_pod(config_hash, secret_name)
                with self._lock:
                    self.pods.remove(old)
                    self.pods.append(new)  # the newest serves the Service
                    self._route()
                # A terminating pod leaves the Service's endpoints first and finishes what it serves
                # (terminationGracePeriodSeconds): connections opened just before the switch complete.
                self._stop.wait(DRAIN_SECONDS)
                old.stop()
            self.rollouts.append((time.monotonic(), config_hash))

    def snapshot(self) -> list[Pod]:
        with self._lock:
            return list(self.pods)

    def stop(self) -> None:
        self._stop.set()
        self.proxy.close()
        with self._lock:
            for pod in self.pods:
                pod.stop()

    @property
    def client_env(self) -> dict[str, str]:
        proxy = f"http://127.0.0.1:{self.proxy.port}"
        return {**os.environ, "HTTPS_PROXY": proxy, "https_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
