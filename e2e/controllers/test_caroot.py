"""The caroot controller against the real API server: create, re-create, renew on time, adopt a
user's CA, refuse (without a crash loop) to overwrite an invalid user secret."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509

from e2e.kube.support import wait_for
from e2e.support.operator import OPERATOR_NAMESPACE, OperatorProcess
from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.controllers.common import now_utc
from registry_operator.controllers.resources import SECRETS
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.client import Client
from registry_operator.kube.errors import NotFound
from registry_operator.kube.resources import EVENTS


@pytest.fixture
def api(cluster: LocalCluster) -> Iterator[Client]:
    client = Client.from_kubeconfig(cluster.kubeconfig)
    yield client
    # Leave no hand-made root CA behind: the next operator start generates a fresh one.
    client.delete(SECRETS, c.ROOT_CA_SECRET_NAME, OPERATOR_NAMESPACE, missing_ok=True)


def root_ca(api: Client) -> dict[str, Any] | None:
    try:
        return api.get(SECRETS, c.ROOT_CA_SECRET_NAME, OPERATOR_NAMESPACE)
    except NotFound:
        return None


def fingerprint(secret: dict[str, object]) -> str:
    data = secret["data"]
    assert isinstance(data, dict)
    return pki.cert_fingerprint(x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"])))


def encoded(bundle: pki.TLSBundle) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in bundle.to_secret_data().items()}


def events(api: Client, reason: str) -> list[dict[str, object]]:
    listed = api.list(
        EVENTS, OPERATOR_NAMESPACE, field_selector=f"involvedObject.name={c.ROOT_CA_SECRET_NAME}"
    )
    return [event for event in listed["items"] if event.get("reason") == reason]


def replace_secret(api: Client, *, data: dict[str, str], labels: dict[str, str]) -> None:
    current = root_ca(api)
    assert current is not None
    metadata: dict[str, Any] = {**current["metadata"]}
    metadata["labels"] = labels
    api.update(SECRETS, {**current, "metadata": metadata, "data": data})


def test_root_ca_lifecycle(
    cluster: LocalCluster, api: Client, start_operator: Callable[..., OperatorProcess]
) -> None:
    api.delete(SECRETS, c.ROOT_CA_SECRET_NAME, OPERATOR_NAMESPACE, missing_ok=True)
    operator = start_operator(controllers="caroot")

    # Created at start-up, with the original's layout and labels.
    wait_for(lambda: root_ca(api) is not None, 30, "the root CA secret")
    secret = root_ca(api)
    assert secret is not None
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["labels"] == {
        "name": "image-registry-operator",
        "app.kubernetes.io/managed-by": "image-registry-operator",
    }
    parsed = pki.parse_tls_secret_data(secret["data"])
    assert not isinstance(parsed, pki.PkiError)
    assert pki.is_ca(parsed.cert)
    assert parsed.bundle.ca_pem == parsed.bundle.cert_pem
    assert parsed.cert.subject.rfc4514_string() == "CN=image-registry-operator.caroot.local"
    first = fingerprint(secret)

    # Deleted → generated again (the controller watches the one secret).
    api.delete(SECRETS, c.ROOT_CA_SECRET_NAME, OPERATOR_NAMESPACE)
    wait_for(lambda: (s := root_ca(api)) is not None and fingerprint(s) != first, 30, "a new root CA")

    # A managed CA close to its renewal time starts a rollover at that time (the next CA beside it),
    # and, should it expire before the rollover ends, is replaced then: nothing verifies against it.
    now = now_utc()
    # renewal = NotBefore + 75 % of (NotAfter - NotBefore), NotBefore = now - BACKDATE, NotAfter = now
    # + lifetime, i.e. now + 0.75 lifetime - 0.25 BACKDATE: due 4 s from now with this lifetime.
    lifetime = (timedelta(seconds=4) + pki.BACKDATE * 0.25) / 0.75
    # With the NameConstraints the operator wants, so that only the renewal time starts a rollover.
    wanted = ("svc", "svc.cluster.local")
    short_lived = pki.create_ca(
        c.ROOT_CA_COMMON_NAME, now, key_size=2048, lifetime=lifetime, permitted_dns=wanted
    )
    replace_secret(api, data=encoded(short_lived), labels=dict(secret["metadata"]["labels"]))
    short_fp = pki.cert_fingerprint(x509.load_pem_x509_certificate(short_lived.cert_pem))
    wait_for(lambda: fingerprint(root_ca(api) or {}) == short_fp, 10, "the short-lived CA in place")
    renewal = pki.renewal_time(x509.load_pem_x509_certificate(short_lived.cert_pem))
    wait_for(lambda: c.SECRET_KEY_NEXT_CERT in ((root_ca(api) or {}).get("data") or {}), 30, "the rollover")
    rolled_at = now_utc()
    annotations = (root_ca(api) or {})["metadata"]["annotations"]
    assert annotations[c.ANNOTATION_ROLLOVER_PHASE] == c.ROLLOVER_DISTRIBUTING
    assert fingerprint(root_ca(api) or {}) == short_fp  # still the signing CA
    # NotAfter is ~100 s away (the back-dated NotBefore stretches the lifetime).
    expiry = x509.load_pem_x509_certificate(short_lived.cert_pem).not_valid_after_utc
    wait_seconds = (expiry - now_utc()).total_seconds() + 30
    wait_for(lambda: fingerprint(root_ca(api) or {}) != short_fp, wait_seconds, "the replacement at expiry")
    renewed_at = now_utc()
    print(f"\nrollover {(rolled_at - renewal).total_seconds():.1f}s after the renewal time, replaced "
          f"{(renewed_at - renewal).total_seconds():.1f}s after it")  # fmt: skip
    assert rolled_at >= renewal
    assert renewed_at >= expiry

    # A valid user-provided (unmanaged) CA is adopted as-is.
    user_ca = pki.create_ca("my company CA", now_utc(), key_size=2048)
    replace_secret(api, data=encoded(user_ca), labels={})
    wait_for(lambda: bool(events(api, "AdoptedRootCA")), 30, "the AdoptedRootCA event")
    user_fp = pki.cert_fingerprint(x509.load_pem_x509_certificate(user_ca.cert_pem))
    assert fingerprint(root_ca(api) or {}) == user_fp

    # An invalid unmanaged secret is refused: Warning event, one error line, untouched, no crash loop.
    broken = {
        "tls.crt": base64.b64encode(b"not a certificate").decode(),
        "tls.key": base64.b64encode(b"x").decode(),
    }
    replace_secret(api, data=broken, labels={})
    wait_for(lambda: bool(events(api, "InvalidRootCA")), 30, "the InvalidRootCA event")
    time.sleep(2)  # would-be retries happen in the first seconds with backoff
    assert root_ca(api)["data"] == broken  # type: ignore[index]
    assert operator.process.running()
    log = operator.log()
    assert log.count("refusing to overwrite") == 1, log[-2000:]
    assert "Traceback" not in log
    metrics = operator.metrics()
    assert 'controller_runtime_reconcile_errors_total{controller="caroot"} 0.0' in metrics
    warning = events(api, "InvalidRootCA")[0]
    assert warning["type"] == "Warning"
    assert "not managed by the operator" in str(warning["message"])
