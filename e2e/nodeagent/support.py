"""A node on loopback for the node-agent e2e: a network + mount namespace in which

* the registry's Service ClusterIP (allocated by the real API server) is an address on `lo`, so a
  real distribution registry serves `https://<hostname>` on it, port 443 as the Service does;
* the temporary host root's `etc/` is bind-mounted over `/etc`, so containerd, ctr and skopeo read
  the node agent's files at their *default* places (`/etc/hosts`, `/etc/containerd/certs.d`,
  `/etc/containers/certs.d`) while the agent writes them under the host root.

Everything runs as root (rootful containerd); the namespaces die with their processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from registry_operator.devenv import binaries
from registry_operator.devenv.processes import ManagedProcess, wait_until


class NodeSandbox:
    def __init__(self, workdir: Path, host_root: Path, ip: str) -> None:
        self.workdir, self.host_root, self.ip = workdir, host_root, ip
        self._holder: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._holder is not None
        return self._holder.pid

    def argv(self, *args: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-n", "-m", *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> NodeSandbox:
        self._holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sleep", "infinity"],
            start_new_session=True,
        )
        time.sleep(0.2)
        for cmd in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", f"{self.ip}/32", "dev", "lo"],
            ["mount", "--bind", str(self.host_root / "etc"), "/etc"],
        ):
            done = self.run(*cmd, timeout=10)
            assert done.returncode == 0, f"{cmd}: {done.stderr}"
        return self

    def stop(self) -> None:
        if self._holder is not None:
            os.killpg(self._holder.pid, signal.SIGKILL)
            self._holder.wait()
            self._holder = None

    def port_open(self, port: int) -> bool:
        probe = f"import socket; socket.create_connection(('{self.ip}', {port}), 1)"
        return self.run("python3", "-c", probe, timeout=10).returncode == 0


class SandboxRegistry:
    """distribution on <ip>:443 inside the sandbox, htpasswd auth, TLS from the given files."""

    def __init__(self, sandbox: NodeSandbox, workdir: Path, *, htpasswd: Path, cert: Path, key: Path) -> None:
        self.sandbox, self.workdir = sandbox, workdir
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}},
            "http": {
                "addr": f"{sandbox.ip}:443",
                "secret": "e2e-node-agent",
                "tls": {"certificate": str(cert), "key": str(key)},
            },
            "auth": {"htpasswd": {"realm": "e2e", "path": str(htpasswd)}},
        }
        self.config = workdir / "registry.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.process: ManagedProcess | None = None

    def start(self, name: str = "registry") -> None:
        binary = binaries.ensure("registry")["registry"].path("registry")
        env = {**os.environ, "OTEL_TRACES_EXPORTER": "none"}
        self.process = ManagedProcess(
            name, self.sandbox.argv(str(binary), "serve", str(self.config)), self.workdir, env
        )
        self.process.start()
        wait_until("registry on :443", lambda: self.sandbox.port_open(443), 30, self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            wait_until("registry gone", lambda: not self.sandbox.port_open(443), 30)


class SandboxContainerd:
    """A real containerd (native snapshotter, own root/state dirs) whose registry config_path is
    the node default `/etc/containerd/certs.d`, i.e. the agent's directory in the sandbox."""

    def __init__(self, sandbox: NodeSandbox, workdir: Path) -> None:
        self.sandbox, self.workdir = sandbox, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        bins = binaries.ensure("containerd")["containerd"]
        self.containerd, self.ctr = bins.path("containerd"), bins.path("ctr")
        self.socket = workdir / "containerd.sock"
        cri = '"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"'
        snapshotters = ", ".join(
            f'"io.containerd.snapshotter.v1.{s}"'
            for s in ("overlayfs", "btrfs", "zfs", "devmapper", "erofs", "blockfile")
        )
        (workdir / "config.toml").write_text(
            "version = 3\n"
            f'root = "{workdir / "root"}"\n'
            f'state = "{workdir / "state"}"\n'
            f"disabled_plugins = [{cri}, {snapshotters}]\n"
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
            '[plugins."io.containerd.transfer.v1.local"]\n'
            '  config_path = "/etc/containerd/certs.d"\n'
            '  [[plugins."io.containerd.transfer.v1.local".unpack_config]]\n'
            '    platform = "linux/amd64"\n'
            '    snapshotter = "native"\n'
        )
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        argv = self.sandbox.argv(str(self.containerd), "--config", str(self.workdir / "config.toml"))
        self.process = ManagedProcess("containerd", argv, self.workdir)
        self.process.start()
        wait_until("containerd socket", lambda: self.ctr_run("version").returncode == 0, 30, self.process)

    def ctr_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.sandbox.run(str(self.ctr), "--address", str(self.socket), *args, timeout=60)

    def pull(self, ref: str, user: str) -> subprocess.CompletedProcess[str]:
        """A fresh pull (the image is removed first, so the registry is asked again)."""
        self.ctr_run("images", "rm", ref)
        # The daemon's transfer service reads <hosts-dir>/<host>/hosts.toml at every pull; the dir
        # is named per request because containerd 2.4 parses the transfer plugin's `config_path`
        # but never consults it (the CRI plugin's `registry.config_path` is kubelet's equivalent).
        return self.ctr_run("images", "pull", "--hosts-dir", "/etc/containerd/certs.d", "--user", user, ref)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def tree(root: Path) -> dict[str, str]:
    """Every file and directory under `root`, with file contents: to compare before and after."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        found[rel] = "<dir>" if path.is_dir() else path.read_bytes().decode(errors="replace")
    return found
