"""Login benchmark through the real docker_auth + ext_auth shim + authn sidecar (needs DOCKER_AUTH_BIN).

Token requests (`GET /auth`, basic auth, one pull account, bcrypt cost 10) over TLS with keep-alive,
with the ext_auth command the operator renders (busybox wget; a baseline tree's shell shim if it has one),
at 1, 8 and 32 concurrent clients for 10 s each: p50/p99, requests/s, the client's own CPU. Then a
burst of 500 wrong passwords (all distinct) at 32 clients while one client keeps logging in with
the good password: sidecar peak RSS and threads, burst duration, p50/p99 of the good logins.

Side by side: `BASELINE_TREE=/path/to/old/checkout` (a tree with `registry_operator/`, e.g.
`git archive 085b214 registry_operator | tar -x -C /tmp/base`) runs the same with that tree's
sidecar, shim and token key size. Prints figures; no pass/fail.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import secrets
import shutil
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from registry_operator import dockerauth, passwords, pki
from registry_operator.controllers.resources import IMAGE_REGISTRY_ACCOUNTS
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.devenv.processes import ManagedProcess, free_port, wait_until
from registry_operator.kube.client import Client

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
SERVICE = "bench"
LEVELS = (1, 8, 32)
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
BURST = 500


@dataclass
class Variant:
    label: str
    tree: Path  # the directory holding registry_operator/


def token_key_size(tree: Path) -> int:
    match = re.search(r"^TOKEN_KEY_SIZE = (\d+)", (tree / "registry_operator" / "pki.py").read_text(), re.M)
    assert match, "TOKEN_KEY_SIZE not found"
    return int(match.group(1))


class Login:
    """One keep-alive TLS connection to docker_auth."""

    def __init__(self, port: int, ca_pem: bytes, user: str, password: str) -> None:
        self.context = ssl.create_default_context(cadata=ca_pem.decode())
        self.port = port
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {basic}"}
        self.path = "/auth?" + urllib.parse.urlencode({"service": SERVICE, "scope": "repository:app:pull"})
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(HOST, self.port, context=self.context, timeout=30)

    def __call__(self) -> tuple[int, float]:
        started = time.perf_counter()
        try:
            self.conn.request("GET", self.path, headers=self.headers)
            response = self.conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = self._connect()
            status = 0
        return status, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own CPU, CPU of reaped children) of a process, in seconds: docker_auth's children are the shims."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime) / tick, (cutime + cstime) / tick


def load(
    port: int, ca: bytes, user: str, password: str, clients: int, seconds: float, servers: dict[str, int]
) -> dict[str, float]:
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def work() -> None:
        login = Login(port, ca, user, password)
        mine: list[float] = []
        bad = 0
        while time.monotonic() < stop:
            status, took = login()
            mine.append(took)
            bad += status != 200
        with lock:
            latencies.extend(mine)
            failures[0] += bad

    server_cpu0 = {name: cpu_seconds(pid) for name, pid in servers.items()}
    cpu0, wall0 = time.process_time(), time.monotonic()
    threads = [threading.Thread(target=work) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - wall0
    requests = max(1, len(latencies))
    per_request: dict[str, float] = {}
    for name, pid in servers.items():
        (own0, children0), (own1, children1) = server_cpu0[name], cpu_seconds(pid)
        per_request[f"{name}_ms"] = (own1 - own0) * 1000 / requests
        if children1 > children0:
            per_request[f"{name}_children_ms"] = (children1 - children0) * 1000 / requests
    return {
        **per_request,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "rps": len(latencies) / wall,
        "client_cpu": (time.process_time() - cpu0) / wall,
        "failures": failures[0],
    }


def proc_status(pid: int) -> tuple[int, int]:
    """(VmRSS KiB, Threads) of a process."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, threads


def burst(port: int, ca: bytes, user: str, password: str, sidecar_pid: int) -> dict[str, float]:
    wrong = [secrets.token_hex(16) for _ in range(BURST)]
    queue_lock = threading.Lock()
    done = threading.Event()
    good: list[float] = []
    good_failures = [0]
    peak = [0, 0]

    def sample() -> None:
        while not done.is_set():
            rss, threads = proc_status(sidecar_pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], threads)
            time.sleep(0.01)

    def attacker() -> None:
        while True:
            with queue_lock:
                if not wrong:
                    return
                bad_password = wrong.pop()
            Login(port, ca, user, bad_password)()

    def good_client() -> None:
        login = Login(port, ca, user, password)
        while not done.is_set():
            status, took = login()
            good.append(took)
            good_failures[0] += status != 200
            time.sleep(0.01)

    sampler, gooder = threading.Thread(target=sample), threading.Thread(target=good_client)
    sampler.start()
    gooder.start()
    started = time.monotonic()
    attackers = [threading.Thread(target=attacker) for _ in range(32)]
    for thread in attackers:
        thread.start()
    for thread in attackers:
        thread.join()
    duration = time.monotonic() - started
    done.set()
    sampler.join()
    gooder.join()
    return {
        "duration_s": duration,
        "good_p50_ms": percentile(good, 0.5) * 1000,
        "good_p99_ms": percentile(good, 0.99) * 1000,
        "good_n": len(good),
        "good_failures": good_failures[0],
        "rss_mib": peak[0] / 1024,
        "threads": peak[1],
    }


def run_variant(
    variant: Variant,
    cluster: LocalCluster,
    namespace: str,
    user: str,
    password: str,
    workdir: Path,
    docker_auth: str,
) -> dict[str, object]:
    wd = workdir / variant.label
    wd.mkdir()
    now = datetime.now(UTC)
    ca = pki.create_ca("bench-ca", now, key_size=2048)
    parsed = pki.parse_bundle(ca)
    assert not isinstance(parsed, pki.PkiError)
    server = pki.create_server_cert(parsed, ["localhost"], now, ip_addresses=[HOST])
    token = pki.create_token_signing_pair("bench-token", now, key_size=token_key_size(variant.tree))
    for name, data in {"tls.crt": server.cert_pem, "tls.key": server.key_pem,
                       "token.crt": token.cert_pem, "token.key": token.key_pem}.items():  # fmt: skip
        (wd / name).write_bytes(data)
    busybox = shutil.which("busybox")
    assert busybox, "busybox is required: hack/build-deps.sh debian-tools"
    authn_port, auth_port = free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "LOG_LEVEL": "warning",
        "PYTHONPATH": str(variant.tree),
    }
    sidecar = ManagedProcess(
        f"authn-{variant.label}",
        [
            sys.executable,
            "-m",
            "registry_operator",
            "authn-server",
            "--namespace",
            namespace,
            "--port",
            str(authn_port),
        ],
        wd,
        env,
    )
    config = dockerauth.docker_auth_config(
        token_issuer="bench", token_cert_path=str(wd / "token.crt"), token_key_path=str(wd / "token.key"),
        authn_url=f"http://127.0.0.1:{authn_port}/authn", busybox=busybox,
        server_addr=f"{HOST}:{auth_port}",
        server_cert_path=str(wd / "tls.crt"), server_key_path=str(wd / "tls.key"),
    )  # fmt: skip
    bin_dir = wd / "bin"
    bin_dir.mkdir()
    (bin_dir / "wget").symlink_to(busybox)
    legacy_shim = variant.tree / "registry_operator" / "data" / "ext_auth_shim.sh"
    if legacy_shim.exists():  # a tree from before ext_auth ran busybox wget directly
        (wd / "shim.sh").write_text(legacy_shim.read_text())
        config["ext_auth"] = {
            "command": "/bin/sh",
            "args": [str(wd / "shim.sh"), config["ext_auth"]["args"][-1]],
        }
    (wd / "auth_config.yml").write_text(yaml.safe_dump(config))
    auth = ManagedProcess(
        f"docker_auth-{variant.label}",
        [docker_auth, "--logtostderr", "--v=0", str(wd / "auth_config.yml")],
        wd,
        {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    sidecar.start()
    auth.start()
    try:
        login = Login(auth_port, ca.cert_pem, user, password)
        wait_until("a good login", lambda: login()[0] == 200, 60, sidecar)
        results: dict[str, object] = {}
        assert sidecar.pid is not None and auth.pid is not None
        servers = {"docker_auth": auth.pid, "sidecar": sidecar.pid}
        for clients in LEVELS:
            results[f"c{clients}"] = load(auth_port, ca.cert_pem, user, password, clients, SECONDS, servers)
        results["burst"] = burst(auth_port, ca.cert_pem, user, password, sidecar.pid)
        results["token_key_bits"] = token_key_size(variant.tree)
        return results
    finally:
        auth.stop()
        sidecar.stop()


def main() -> int:
    docker_auth = os.environ.get("DOCKER_AUTH_BIN")
    if not docker_auth:
        print(
            "docker_auth_login: set DOCKER_AUTH_BIN=/path/to/auth_server (docker_auth 1.14)", file=sys.stderr
        )
        return 2
    variants = [Variant("current", ROOT)]
    if os.environ.get("BASELINE_TREE"):
        variants.insert(0, Variant("baseline", Path(os.environ["BASELINE_TREE"])))
    cluster = LocalCluster()
    cluster.start()
    try:
        cluster.install_crds(ROOT / "manifests" / "crds")
        api = Client.load(str(cluster.kubeconfig))
        namespace = "bench"
        cluster.kubectl("create", "namespace", namespace)
        user, password = "pull.bench.app.1", passwords.generate_password()
        api.create(
            IMAGE_REGISTRY_ACCOUNTS,
            {
                "metadata": {"name": user, "namespace": namespace},
                "spec": {
                    "password": passwords.hash_password(password, cost=10),
                    "labels": {"accessMode": ["pull"]},
                },
            },
        )
        with tempfile.TemporaryDirectory(prefix="bench-docker-auth-") as tmp:
            all_results = {
                v.label: run_variant(v, cluster, namespace, user, password, Path(tmp), docker_auth)
                for v in variants
            }
    finally:
        cluster.stop()
    print(f"docker_auth login bench ({SECONDS:.0f} s per level, bcrypt cost 10, {os.cpu_count()} CPUs)")
    for label, results in all_results.items():
        print(f"== {label} (token key RSA-{results['token_key_bits']})")
        for clients in LEVELS:
            r = results[f"c{clients}"]
            assert isinstance(r, dict)
            print(
                f"  {clients:2} clients: p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
                f"{r['rps']:6.1f} req/s  client CPU {r['client_cpu']:.2f} cores  failures {r['failures']}"
            )
            cpu = ", ".join(f"{key[:-3]} {value:.2f}" for key, value in r.items() if key.endswith("_ms")
                            and not key.startswith("p"))  # fmt: skip
            print(f"             CPU ms per request: {cpu}")
        b = results["burst"]
        assert isinstance(b, dict)
        print(
            f"  burst {BURST} wrong passwords @32: {b['duration_s']:.1f} s; good logins during it "
            f"p50 {b['good_p50_ms']:.1f} ms p99 {b['good_p99_ms']:.1f} ms (n={b['good_n']}, "
            f"failed {b['good_failures']}); sidecar peak RSS {b['rss_mib']:.1f} MiB, threads {b['threads']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
