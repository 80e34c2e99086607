"""CA and token-key rollover without an outage (issue 13), on the real control plane with the real
registry: the operator's rendered config, certificates and token key, run as local "pods" that follow
the StatefulSet's pod template (e2e/support/rollover.py; kube-controller-manager and kwok roll the
StatefulSet itself). docker_auth is stood in for by a token endpoint signing with the pod's token key
(the docker_auth lane runs the real one).

1. Root CA rollover: clients pull with skopeo (`--src-cert-dir` holding a `ca.crt`) throughout —
   one that re-reads its pull Secret's `ca.crt` with a lag (a mounted Secret), one that took the
   bundle once at the start of the rollover and never again, one that reads the newest before every
   pull. Zero failed pulls.
2. Token key rollover RSA-4096 → 2048 with two replicas sharing storage: tokens of every key any
   replica's docker_auth has signed with (and that have not expired) are accepted by every replica,
   all along.
"""

from __future__ import annotations

import base64
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from e2e.api.kube import apply
from e2e.controllers.imageregistry_support import registry_manifest, wait_condition
from e2e.controllers.imagesecret_support import create_cr, wait_ready
from e2e.kube.support import wait_for
from e2e.support.oci import write_image
from e2e.support.operator import OPERATOR_NAMESPACE, OperatorProcess
from e2e.support.rollover import TOKEN_LIFETIME, PodFollower
from e2e.support.tokens import https_get
from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.controllers.imagesecret_desired import PULL
from registry_operator.controllers.resources import IMAGE_REGISTRIES, SECRETS, STATEFULSETS
from registry_operator.devenv import binaries
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.client import Client
from registry_operator.kube.errors import NotFound

OVERLAP = "10s"
KUBELET_LAG = 3.0  # how long the "mounted Secret" client takes to see a new ca.crt


def decoded(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


def fingerprints(pem: bytes) -> list[str]:
    return [pki.cert_fingerprint(cert) for cert in pki.bundle_certs(pem)]


@dataclass
class PullClient:
    """skopeo pulling in a loop with its own cert dir; `ca_source` gives the ca.crt before each pull
    (None: keep the one it has)."""

    name: str
    workdir: Path
    image: str
    env: dict[str, str]
    ca_source: Callable[[], bytes | None]
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        (self.workdir / "certs").mkdir(parents=True, exist_ok=True)

    def run(self) -> None:
        while not self._stop.is_set():
            ca = self.ca_source()
            if ca is not None:
                (self.workdir / "certs" / "ca.crt").write_bytes(ca)
            if not (self.workdir / "certs" / "ca.crt").exists():
                time.sleep(0.2)
                continue
            target = self.workdir / f"pulled-{self.attempts}"
            result = skopeo_env(
                self.env,
                "copy", "--retry-times=0", "--src-cert-dir", str(self.workdir / "certs"),
                "--src-creds", "puller:any", f"docker://{self.image}", f"dir:{target}",
            )  # fmt: skip
            self.attempts += 1
            if result.returncode != 0:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {result.stderr.strip()[-300:]}")

    def start(self) -> PullClient:
        threading.Thread(target=self.run, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()


def skopeo_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries.skopeo()), *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


class PhaseLog:
    """Phases as they appear, with seconds since the start."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.seen: list[tuple[float, str]] = []

    def note(self, phase: str) -> None:
        if not self.seen or self.seen[-1][1] != phase:
            self.seen.append((time.monotonic() - self.start, phase))

    def __str__(self) -> str:
        return ", ".join(f"{phase} @{at:.1f}s" for at, phase in self.seen)


def test_root_ca_rollover_keeps_clients_with_the_old_and_the_new_ca_pulling(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    volumes: Callable[..., str],
    start_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    env = {"OPERATOR_LEADER_ELECTION": "false", "OPERATOR_TRUST_OVERLAP": OVERLAP}
    start_operator(controllers="caroot,imageregistry,imagesecret", env=env)
    volumes(namespace, "imageregistry-roll-pvc", access_modes=("ReadWriteMany",))
    apply(cluster, namespace, registry_manifest("roll"))
    registry = wait_condition(api, namespace, "roll", status="True", reason="Available")
    hostname = registry["status"]["hostname"]
    create_cr(api, PULL, namespace, "puller", {"name": "roll"})
    wait_ready(api, PULL, namespace, "puller", timeout=30)

    def pull_secret_ca() -> bytes:
        return decoded(api.get(SECRETS, "imagepullsecret-puller", namespace), "ca.crt")

    old_ca = pull_secret_ca()
    root = api.get(SECRETS, c.ROOT_CA_SECRET_NAME, OPERATOR_NAMESPACE)
    old_root = x509.load_pem_x509_certificate(decoded(root, "tls.crt"))
    assert fingerprints(old_ca) == [pki.cert_fingerprint(old_root)]
    # The self-signed root is name-constrained to the zone and the cluster's service names.
    assert pki.permitted_dns_of(old_root) == ("svc", "svc.cluster.local")

    follower = PodFollower(api, namespace, "roll", hostname, tmp_path / "pods").start()
    clients: list[PullClient] = []
    image = f"{hostname}/e2e/hello:v1"
    # Negative control: a client that never re-reads ca.crt must fail once the new root's certificate
    # is served (so the pulls of the others really verify TLS against what they hold).
    stale = PullClient(
        "stale-never-rereads", tmp_path / "c-stale", image, follower.client_env, lambda: old_ca
    )
    try:
        layout = tmp_path / "layout"
        write_image(layout)
        certs = tmp_path / "push-certs"
        certs.mkdir()
        (certs / "ca.crt").write_bytes(old_ca)
        pushed = skopeo_env(
            follower.client_env, "copy", "--dest-cert-dir", str(certs), "--dest-creds", "pusher:any",
            f"oci:{layout}:v1", f"docker://{image}",
        )  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr + follower.pods[-1].registry.log_tail(30)

        # The mounted-Secret client: sees the pull Secret's ca.crt KUBELET_LAG seconds late.
        lagged: dict[str, Any] = {"ca": old_ca, "at": time.monotonic()}

        def mounted() -> bytes | None:
            if time.monotonic() - lagged["at"] >= KUBELET_LAG:
                lagged["ca"], lagged["at"] = pull_secret_ca(), time.monotonic()
            return bytes(lagged["ca"])

        clients.append(PullClient("old-ca-mounted", tmp_path / "c-old", image, follower.client_env, mounted))
        clients.append(
            PullClient("newest-ca", tmp_path / "c-fresh", image, follower.client_env, pull_secret_ca)
        )
        for client in [*clients, stale]:
            client.start()
        time.sleep(2)

        # Start the rollover (the same path a renewal at 75 % of the CA's lifetime takes).
        phases = PhaseLog()
        cluster.kubectl(
            "annotate", "-n", OPERATOR_NAMESPACE, "secret", c.ROOT_CA_SECRET_NAME,
            f"{c.ANNOTATION_ROTATE}=e2e-1",
        )  # fmt: skip
        bundle_client: PullClient | None = None
        registry_phases: list[str] = []

        def watch() -> bool:
            nonlocal bundle_client
            secret = api.get(SECRETS, c.ROOT_CA_SECRET_NAME, OPERATOR_NAMESPACE)
            phase = (secret["metadata"].get("annotations") or {}).get(c.ANNOTATION_ROLLOVER_PHASE, "?")
            phases.note(f"root:{phase}")
            status = api.get(IMAGE_REGISTRIES, "roll", namespace).get("status") or {}
            trust_phase = (status.get("trust") or {}).get("phase", "?")
            if not registry_phases or registry_phases[-1] != trust_phase:
                registry_phases.append(trust_phase)
            current = pull_secret_ca()
            if bundle_client is None and len(fingerprints(current)) == 2:
                # The client that takes the bundle once, at the start of the rollover, and keeps it.
                taken = current
                bundle_client = PullClient(
                    "bundle-once", tmp_path / "c-new", image, follower.client_env, lambda: taken
                ).start()
                clients.append(bundle_client)
            new_signer = x509.load_pem_x509_certificate(decoded(secret, "tls.crt"))
            served = x509.load_pem_x509_certificate(follower.snapshot()[-1].serving_pem)
            return (
                phase == c.ROLLOVER_STABLE
                and f"root:{c.ROLLOVER_RETIRING}" in str(phases)
                and new_signer != old_root
                and fingerprints(current) == [pki.cert_fingerprint(new_signer)]
                and pki.verify_signed_by(served, new_signer)
            )

        try:
            wait_for(watch, 180, "the root CA rollover to finish", interval=0.5)
        except AssertionError as error:
            status = api.get(IMAGE_REGISTRIES, "roll", namespace).get("status") or {}
            annotations = api.get(SECRETS, c.ROOT_CA_SECRET_NAME, OPERATOR_NAMESPACE)["metadata"]
            raise AssertionError(
                f"{error}; phases {phases}; registry trust {status.get('trust')}; root CA "
                f"{annotations.get('annotations')}; pods {[p.config_hash[:8] for p in follower.snapshot()]}"
            ) from None
        rollover_seconds = time.monotonic() - phases.start
        time.sleep(3)  # pulls against the final state, with the final bundle
    finally:
        for client in [*clients, stale]:
            client.stop()
        time.sleep(1)
        follower.stop()
    print(f"\nCA rollover: phases {phases}; registry trust phases {' -> '.join(registry_phases)}; "
          f"{rollover_seconds:.1f} s from request to Stable (overlap {OVERLAP}); pod rollouts "
          f"{len(follower.rollouts)}")  # fmt: skip
    for client in clients:
        print(f"  client {client.name}: {client.attempts} pulls attempted, {len(client.failures)} failed")
    print(f"  negative control {stale.name}: {stale.attempts} pulls, {len(stale.failures)} failed")
    assert stale.failures, "a client trusting only the old root kept pulling from the new certificate"
    assert bundle_client is not None, "the pull Secret never held the old and the new CA together"
    for client in clients:
        assert client.attempts >= 3, f"{client.name} barely pulled"
        assert client.failures == [], f"{client.name}: {client.failures[:3]}"
    # The pods were re-issued exactly once (the trust bundle alone does not roll them).
    assert len(follower.rollouts) == 1, follower.rollouts
    assert c.ROLLOVER_DISTRIBUTING in str(phases) and c.ROLLOVER_RETIRING in str(phases)


def test_token_key_rollover_from_rsa_4096_keeps_every_token_valid_on_both_replicas(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    volumes: Callable[..., str],
    start_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    # A registry from before issue 15: its token key is RSA-4096 (and its Secret has no bundle.crt).
    legacy = pki.create_token_signing_pair("legacy token signing", datetime.now(UTC), key_size=4096)
    api.create(
        SECRETS,
        {
            "metadata": {
                "name": "imageregistry-tok-auth-token",
                "namespace": namespace,
                "labels": {c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE},
            },
            "type": c.SECRET_TYPE_TLS,
            "data": {k: base64.b64encode(v).decode() for k, v in legacy.to_secret_data().items()},
        },
    )
    env = {"OPERATOR_LEADER_ELECTION": "false", "OPERATOR_TOKEN_KEY_RETIREMENT": "20s"}
    start_operator(controllers="caroot,imageregistry", env=env)
    volumes(namespace, "imageregistry-tok-pvc", access_modes=("ReadWriteMany",))
    apply(cluster, namespace, registry_manifest("tok", replicas=2))
    wait_for(
        lambda: api.get(IMAGE_REGISTRIES, "tok", namespace).get("status", {}).get("hostname"), 60, "status"
    )
    status = api.get(IMAGE_REGISTRIES, "tok", namespace)["status"]
    hostname = status["hostname"]
    wait_for(lambda: _sts_exists(api, namespace), 60, "the StatefulSet")
    follower = PodFollower(api, namespace, "tok", hostname, tmp_path / "pods", replicas=2).start()
    ca_pem = decoded(api.get(SECRETS, status["tlsSecretName"], namespace), "ca.crt")

    phases = PhaseLog()
    attempts = 0
    failures: list[str] = []
    unreachable = 0
    keys_seen: set[tuple[str, int]] = set()
    # Whether local pods served while the operator still distributed the next key (before the
    # switch). kwok reports pods Ready at once, so on a fast run the switch can come before the
    # local processes are up; then only the later phases are observable here (the docker_auth lane
    # checks 4096-bit tokens against the bundle with the real server).
    served_before_switch = False
    tokens: list[tuple[float, str, str]] = []  # (minted at, kid, token): every replica's docker_auth
    stop = threading.Event()

    def probe() -> None:
        nonlocal attempts, unreachable, served_before_switch
        while not stop.wait(0.3):
            pods = follower.snapshot()
            if pods and phases.seen and phases.seen[-1][1] == c.ROLLOVER_DISTRIBUTING:
                served_before_switch = True
            now = time.monotonic()
            for pod in pods:
                tokens.append((now, pod.auth.kid, pod.auth.token([])))
                keys_seen.add((pod.auth.kid, pod.auth.key.key_size))
            # Tokens stay in use until they expire, also after the pod that signed them is gone.
            live = [t for t in tokens if now - t[0] < TOKEN_LIFETIME - 2]
            tokens[:] = live
            for pod in pods:
                for kid, token in [(k, t) for _, k, t in live[-12:]]:
                    try:
                        code, _, body = https_get(
                            pod.registry_port, hostname, "/v2/", ca_pem, {"Authorization": f"Bearer {token}"}
                        )
                    except OSError:
                        unreachable += 1  # the pod is being replaced (its process stopped mid-probe)
                        continue
                    attempts += 1
                    if code != 200:
                        failures.append(
                            f"{pod.name} refused a token of key {kid[:12]}: {code} {body[:120]!r}"
                        )

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:

        def stable_again() -> bool:
            registry = api.get(IMAGE_REGISTRIES, "tok", namespace)
            phase = ((registry.get("status") or {}).get("tokenKey") or {}).get("phase", "?")
            phases.note(phase)
            secret = api.get(SECRETS, "imageregistry-tok-auth-token", namespace)
            bundle = pki.bundle_certs(decoded(secret, c.SECRET_KEY_TRUST_BUNDLE))
            signer = x509.load_pem_x509_certificate(decoded(secret, "tls.crt"))
            pods = follower.snapshot()
            return (
                phase == c.ROLLOVER_STABLE
                and len(phases.seen) > 1
                and len(bundle) == 1
                and signer.public_key().key_size == pki.TOKEN_KEY_SIZE  # type: ignore[union-attr]
                and all(pod.auth.key.key_size == pki.TOKEN_KEY_SIZE for pod in pods)
                and all(b"BEGIN" in (pod.workdir / "token-bundle.crt").read_bytes() for pod in pods)
                and all(
                    len(pki.bundle_certs((pod.workdir / "token-bundle.crt").read_bytes())) == 1
                    for pod in pods
                )
            )

        try:
            wait_for(stable_again, 240, "the token key rollover to finish", interval=0.5)
        except AssertionError as error:
            raise AssertionError(f"{error}; phases {phases}") from None
        seconds = time.monotonic() - phases.start
        time.sleep(2)
    finally:
        stop.set()
        prober.join(timeout=10)
        follower.stop()
    print(f"\ntoken key rollover: phases {phases}; {seconds:.1f} s; served before the switch: "
          f"{served_before_switch}; keys signed with "
          f"{sorted({size for _, size in keys_seen})} bits; {attempts} token checks against 2 replicas, "
          f"{len(failures)} refused; {unreachable} probes hit a pod being replaced; pod rollouts "
          f"{len(follower.rollouts)}")  # fmt: skip
    assert failures == [], failures[:5]
    sizes = {size for _, size in keys_seen}
    assert pki.TOKEN_KEY_SIZE in sizes
    if served_before_switch:
        assert sizes == {4096, pki.TOKEN_KEY_SIZE}, sizes
    assert [p for _, p in phases.seen if p != "?"][:1] != [c.ROLLOVER_STABLE] or len(phases.seen) > 2
    # The legacy key was replaced through the rollover, whose end the test always sees.
    for phase in (c.ROLLOVER_RETIRING, c.ROLLOVER_STABLE):
        assert phase in str(phases), phases
    assert attempts > 50


def _sts_exists(api: Client, namespace: str) -> bool:
    try:
        api.get(STATEFULSETS, "tok", namespace)
    except NotFound:
        return False
    return True
