"""Locate (and, when missing, build) the pinned external binaries the dev cluster and tests use.

Versions live in `hack/versions.env`; `hack/build-deps.sh` builds each component from the Go module
proxy into `<cache>/bin/<component>-<version>/`. Tests call `ensure()` so a missing prerequisite is
built, never skipped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "hack" / "versions.env"
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-deps.sh"
PROMQL_NAMES_SOURCE = REPO_ROOT / "hack" / "promql-names" / "main.go"

# component -> (version key in versions.env, files it provides)
_COMPONENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "kubernetes": (
        "KUBERNETES_VERSION",
        ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
    ),
    "etcd": ("ETCD_VERSION", ("etcd",)),
    "kwok": ("KWOK_VERSION", ("kwok", "stages.yaml")),
    "registry": ("DISTRIBUTION_VERSION", ("registry",)),
    "docker_auth": ("DOCKER_AUTH_VERSION", ("auth_server",)),
    "cert-manager": ("CERT_MANAGER_VERSION", ("cert-manager-controller", "crds")),
    "toxiproxy": ("TOXIPROXY_VERSION", ("toxiproxy-server",)),
    "promtool": ("PROMETHEUS_VERSION", ("promtool", "promql-names")),
    "containerd": ("CONTAINERD_VERSION", ("containerd", "ctr")),
    "moto": ("MOTO_VERSION", ("moto_server",)),
}


class BinaryError(RuntimeError):
    """A pinned component is missing and could not be built."""


def cache_dir() -> Path:
    return Path(os.environ.get("REGISTRY_OPERATOR_CACHE", Path.home() / ".cache" / "registry-operator"))


def versions() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in VERSIONS_FILE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            pins[key.strip()] = value.strip()
    return pins


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    directory: Path

    @property
    def complete(self) -> bool:
        return (self.directory / ".complete").is_file()

    def path(self, file: str) -> Path:
        return self.directory / file


def component(name: str) -> Component:
    key, _ = _COMPONENTS[name]
    version = versions()[key]
    if name == "promtool":
        # Same key as build-deps.sh: our own promql-names helper is built into this directory too.
        version += "-" + hashlib.sha256(PROMQL_NAMES_SOURCE.read_bytes()).hexdigest()[:12]
    return Component(name, version, cache_dir() / "bin" / f"{name}-{version}")


def ensure(*names: str) -> dict[str, Component]:
    """Return the named components, building the missing ones with hack/build-deps.sh first."""
    found = {name: component(name) for name in names}
    missing = [name for name, comp in found.items() if not comp.complete]
    if missing:
        result = subprocess.run([str(BUILD_SCRIPT), *missing], check=False)
        if result.returncode != 0:
            raise BinaryError(
                f"building {', '.join(missing)} failed (exit {result.returncode}); see output above"
            )
    for comp in found.values():
        for file in _COMPONENTS[comp.name][1]:
            if not comp.path(file).exists():
                raise BinaryError(f"{comp.name} {comp.version}: {comp.path(file)} is missing after the build")
    return found


def skopeo() -> Path:
    """skopeo comes from Debian; install it through the build script when it is missing."""
    path = shutil.which("skopeo")
    if path is None or not Path("/etc/containers/policy.json").exists():
        result = subprocess.run([str(BUILD_SCRIPT), "skopeo"], check=False)
        path = shutil.which("skopeo")
        if result.returncode != 0 or path is None:
            raise BinaryError("skopeo could not be installed from Debian (apt-get install skopeo)")
    return Path(path)
