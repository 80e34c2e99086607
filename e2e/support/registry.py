"""The real distribution registry as a local process, for auth tests with a real client (skopeo)."""

from __future__ import annotations

import os
import secrets
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from registry_operator.devenv import binaries
from registry_operator.devenv.processes import ManagedProcess, free_port, wait_until


class LocalRegistry:
    """distribution `registry serve` on 127.0.0.1 with TLS and the given `auth:` section."""

    def __init__(
        self, workdir: Path, *, tls_cert: Path, tls_key: Path, ca_cert: Path, auth: dict[str, Any]
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.ca_cert = ca_cert
        self._config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True}},
            "http": {
                "addr": self.address,
                "secret": secrets.token_hex(16),
                "tls": {"certificate": str(tls_cert), "key": str(tls_key)},
            },
            "auth": auth,
        }
        self._process: ManagedProcess | None = None

    def start(self) -> None:
        binary = binaries.ensure("registry")["registry"].path("registry")
        config = self.workdir / "registry.yml"
        config.write_text(yaml.safe_dump(self._config))
        # v3 exports OpenTelemetry traces to localhost:4318 unless told not to.
        env = {**os.environ, "OTEL_TRACES_EXPORTER": "none"}
        self._process = ManagedProcess("registry", [str(binary), "serve", str(config)], self.workdir, env)
        self._process.start()
        context = ssl.create_default_context(cafile=str(self.ca_cert))

        def answering() -> bool:
            try:
                urllib.request.urlopen(f"https://{self.address}/v2/", timeout=2, context=context)
            except urllib.error.HTTPError as err:
                return err.code == 401  # up, and demanding credentials
            return True

        wait_until("registry /v2/", answering, 30, self._process)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def log(self) -> str:
        return self._process.log_tail(60) if self._process else ""

    def __enter__(self) -> LocalRegistry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries.skopeo()), *args], capture_output=True, text=True, timeout=120, check=False
    )
