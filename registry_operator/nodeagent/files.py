"""What the node agent writes on a node, and how: pure rendering plus atomic, owned file operations.

No Kubernetes here. Every path is below a host root (`/host` in the DaemonSet, a temporary directory
in tests); paths written into files (hosts.toml's `ca`) are relative, so they hold on the node too.

Ownership: the agent records every file it wrote, with the SHA-256 of what it wrote, in a state
file (`<state dir>/owned.json`). It only ever
* creates a file that does not exist yet, or replaces one that is recorded as its own and still has
  the recorded content (a file someone else created or edited is left alone and reported);
* deletes files recorded as its own (again only with the recorded content) and the directories it
  created, once they are empty;
* edits `/etc/hosts` (or `/etc/resolv.conf`) only between its own marker lines.
Every write is a write to a temporary file in the same directory, fsync, then rename.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final

STATE_VERSION: Final = 1
BLOCK_BEGIN: Final = "# BEGIN registry-operator node-agent (managed block, do not edit)"
BLOCK_END: Final = "# END registry-operator node-agent"

DEFAULT_CONTAINERD_CERTS_D: Final = "/etc/containerd/certs.d"
DEFAULT_CONTAINERS_CERTS_D: Final = "/etc/containers/certs.d"
DEFAULT_HOSTS_FILE: Final = "/etc/hosts"
DEFAULT_RESOLV_CONF: Final = "/etc/resolv.conf"
DEFAULT_STATE_DIR: Final = "/var/lib/registry-operator/node-agent"


class DnsMode(enum.StrEnum):
    """How the node resolves registry hostnames."""

    HOSTS = "hosts"  # an agent-owned block in /etc/hosts: hostname -> Service ClusterIP (default)
    RESOLVER = "resolver"  # the seed's way: CoreDNS's IP as first nameserver in /etc/resolv.conf
    NONE = "none"  # name resolution is configured by someone else


@dataclass(frozen=True)
class Layout:
    """Where things live on the node, as node paths (absolute), plus the host root they are under."""

    host_root: Path
    containerd_certs_d: str = DEFAULT_CONTAINERD_CERTS_D
    containers_certs_d: str | None = DEFAULT_CONTAINERS_CERTS_D
    hosts_file: str = DEFAULT_HOSTS_FILE
    resolv_conf: str = DEFAULT_RESOLV_CONF
    state_dir: str = DEFAULT_STATE_DIR
    dns_mode: DnsMode = DnsMode.HOSTS
    dns_server: str | None = None  # RESOLVER mode: the CoreDNS Service IP, e.g. 10.96.0.10

    def on_host(self, node_path: str) -> Path:
        """`node_path` (absolute on the node) below the host root."""
        relative = PurePosixPath(node_path).relative_to("/")
        return self.host_root / relative

    @property
    def state_file(self) -> Path:
        return self.on_host(self.state_dir) / "owned.json"


@dataclass(frozen=True)
class RegistryTrust:
    """What a node needs for one registry: its host (`name` or `name:port`), CA bundle and address."""

    key: str  # `<namespace>/<name>` of the ImageRegistry
    host: str
    ca_pem: bytes
    cluster_ip: str | None = None


def host_dir_name(host: str) -> str:
    """certs.d directory of a registry host: `host` or `host:port` as clients write it (containerd
    and containers/image both use the registry host exactly, with its port when there is one)."""
    if not host or "/" in host or host in {".", ".."} or any(ch.isspace() for ch in host):
        raise ValueError(f"not a registry host: {host!r}")
    return host


def render_hosts_toml(trust: RegistryTrust) -> bytes:
    """containerd's hosts.toml: pulls and resolves over https, trusting only `ca.crt` beside it."""
    return (
        f"# Written by registry-operator node-agent for ImageRegistry {trust.key}; removed with it.\n"
        f'server = "https://{trust.host}"\n'
        "\n"
        f'[host."https://{trust.host}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        '  ca = "ca.crt"\n'
    ).encode()


def hostname_only(host: str) -> str:
    """`name` of `name:port` (for /etc/hosts, which knows nothing of ports)."""
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def render_hosts_block(trusts: Iterable[RegistryTrust]) -> str:
    lines = sorted({f"{t.cluster_ip} {hostname_only(t.host)}" for t in trusts if t.cluster_ip})
    return "\n".join(lines)


def render_resolver_block(dns_server: str | None) -> str:
    return f"nameserver {dns_server}" if dns_server else ""


def desired_files(layout: Layout, trusts: Iterable[RegistryTrust]) -> dict[Path, bytes]:
    """Every whole file the agent should own (host paths), for these registries."""
    files: dict[Path, bytes] = {}
    for trust in sorted(trusts, key=lambda t: t.host):
        name = host_dir_name(trust.host)
        containerd_dir = layout.on_host(layout.containerd_certs_d) / name
        files[containerd_dir / "ca.crt"] = trust.ca_pem
        files[containerd_dir / "hosts.toml"] = render_hosts_toml(trust)
        if layout.containers_certs_d:
            files[layout.on_host(layout.containers_certs_d) / name / "ca.crt"] = trust.ca_pem
    return files


def replace_block(text: str, block: str) -> str:
    """`text` with the agent's marker block set to `block` (removed when `block` is empty).

    Lines outside the markers are kept byte for byte. A new block goes at the top for resolv.conf
    semantics (first nameserver wins) and does no harm in /etc/hosts.
    """
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    inside = False
    found_at: int | None = None
    for line in lines:
        stripped = line.rstrip("\r\n")
        if stripped == BLOCK_BEGIN:
            inside, found_at = True, len(out)
            continue
        if inside:
            if stripped == BLOCK_END:
                inside = False
            continue
        out.append(line)
    if inside:  # a truncated block: drop nothing the agent cannot prove is its own
        return text
    if block:
        rendered = f"{BLOCK_BEGIN}\n{block}\n{BLOCK_END}\n"
        out.insert(found_at if found_at is not None else 0, rendered)
    return "".join(out)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to a temporary file beside `path`, fsync it and rename it over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@dataclass
class OwnedState:
    """The agent's record of what it wrote: files (host path -> sha256) and directories it created."""

    files: dict[str, str] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    blocks: dict[str, str] = field(default_factory=dict)  # edited file -> sha256 of its block text

    @classmethod
    def load(cls, path: Path) -> OwnedState:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        if raw.get("version") != STATE_VERSION:
            raise ValueError(f"{path}: unknown state version {raw.get('version')!r}")
        return cls(files=dict(raw["files"]), dirs=list(raw["dirs"]), blocks=dict(raw.get("blocks", {})))

    def to_json(self) -> bytes:
        body = {"version": STATE_VERSION, "files": self.files, "dirs": self.dirs, "blocks": self.blocks}
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()


@dataclass
class SyncResult:
    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # paths the agent refused to touch, and why

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)


class NodeFiles:
    """Applies a desired set of files and blocks to the host root, owning exactly what it wrote."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.state = OwnedState.load(layout.state_file)

    def _save(self) -> None:
        state_file = self.layout.state_file
        if not self.state.files and not self.state.blocks:
            # Nothing of the agent's left on the node: the record goes too, then its directories.
            with contextlib.suppress(FileNotFoundError):
                state_file.unlink()
            self._remove_empty_dirs(SyncResult())
            if not self.state.dirs:
                return
        self._mkdirs(state_file.parent)
        atomic_write(state_file, self.state.to_json(), 0o600)

    def _mkdirs(self, directory: Path, *, record: bool = True) -> None:
        missing: list[Path] = []
        current = directory
        while not current.exists():
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            path.mkdir(mode=0o755)
            if record:
                self.state.dirs.append(str(path))

    def _current_sha(self, path: Path) -> str | None:
        try:
            return sha256(path.read_bytes())
        except FileNotFoundError:
            return None

    def sync(self, trusts: Iterable[RegistryTrust]) -> SyncResult:
        trusts = list(trusts)
        result = SyncResult()
        desired = desired_files(self.layout, trusts)
        for path, data in desired.items():
            self._write_owned(path, data, result)
        for recorded in sorted(set(self.state.files) - {str(p) for p in desired}):
            self._remove_owned(Path(recorded), result)
        self._remove_empty_dirs(result)
        hosts = self.layout.on_host(self.layout.hosts_file)
        resolv = self.layout.on_host(self.layout.resolv_conf)
        wanted_blocks: Mapping[Path, str] = {
            hosts: render_hosts_block(trusts) if self.layout.dns_mode is DnsMode.HOSTS else "",
            resolv: (
                render_resolver_block(self.layout.dns_server)
                if self.layout.dns_mode is DnsMode.RESOLVER and trusts
                else ""
            ),
        }
        for path, block in wanted_blocks.items():
            self._set_block(path, block, result)
        self._save()
        return result

    def cleanup(self) -> SyncResult:
        """Remove everything the agent wrote (registry gone, or the agent uninstalled)."""
        return self.sync([])

    def _write_owned(self, path: Path, data: bytes, result: SyncResult) -> None:
        key = str(path)
        current = self._current_sha(path)
        want = sha256(data)
        if key in self.state.files:
            if current == want:
                self.state.files[key] = want  # idempotent: nothing to do
                return
            if current is not None and current != self.state.files[key]:
                result.conflicts.append(f"{path}: changed by someone else since the agent wrote it")
                return
        elif current is not None:
            if current == want:  # e.g. state lost: same content, adopt nothing, leave it
                result.conflicts.append(f"{path}: exists and is not the agent's (same content, left alone)")
            else:
                result.conflicts.append(f"{path}: exists and is not the agent's")
            return
        self._mkdirs(path.parent)
        # Record before writing: a crash between the two leaves a recorded file that is either
        # absent or ours, never an unrecorded file of ours.
        self.state.files[key] = want
        self._save()
        atomic_write(path, data)
        result.written.append(path)

    def _remove_owned(self, path: Path, result: SyncResult) -> None:
        key = str(path)
        current = self._current_sha(path)
        if current is not None and current != self.state.files[key]:
            result.conflicts.append(f"{path}: changed by someone else; not removed")
        elif current is not None:
            path.unlink()
            result.removed.append(path)
        del self.state.files[key]

    def _remove_empty_dirs(self, result: SyncResult) -> None:
        keep: list[str] = []
        for directory in sorted(self.state.dirs, key=len, reverse=True):
            path = Path(directory)
            if any(f.startswith(directory + os.sep) for f in self.state.files):
                keep.append(directory)
                continue
            try:
                path.rmdir()
                result.removed.append(path)
            except FileNotFoundError:
                pass
            except OSError:  # not empty (someone else's file, or the state file) or a mount point
                keep.append(directory)
        self.state.dirs = sorted(keep, key=len)

    def _set_block(self, path: Path, block: str, result: SyncResult) -> None:
        key = str(path)
        if not block and key not in self.state.blocks:
            return
        try:
            text = path.read_text()
        except FileNotFoundError:
            if not block:
                self.state.blocks.pop(key, None)
                return
            result.conflicts.append(f"{path}: does not exist; the agent only edits an existing file")
            return
        updated = replace_block(text, block)
        if updated != text:
            mode = path.stat().st_mode & 0o777
            atomic_write(path, updated.encode(), mode)
            (result.written if block else result.removed).append(path)
        if block:
            self.state.blocks[key] = sha256(block.encode())
        else:
            self.state.blocks.pop(key, None)
