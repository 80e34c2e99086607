"""`spec.tls.issuerRef` with the real cert-manager controller: the operator asks for a Certificate,
cert-manager (CA Issuer) writes the Secret, and the registry serves what it issued.

cert-manager is pinned to v1.11.5 (hack/versions.env), the last release whose controller is part of
the root Go module the module proxy serves; its webhook and cainjector are not run (nothing here needs
them: the CRDs have a single version, and validation is the API server's schema).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from e2e.api.kube import apply
from e2e.controllers.imageregistry_support import (
    condition,
    decoded,
    get_or_none,
    merge_patch,
    pod_template_hash,
    registry_manifest,
    wait_condition,
)
from e2e.kube.support import wait_for
from e2e.support.certmanager import CertManager
from e2e.support.operator import OperatorProcess
from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.controllers.common import now_utc
from registry_operator.controllers.resources import CERTIFICATES, SECRETS, STATEFULSETS
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.client import Client
from registry_operator.kube.resources import Resource

ISSUERS = Resource("cert-manager.io", "v1", "issuers", "Issuer")
# Only what a CA Issuer needs; no ACME, ingress or gateway shims.
CERT_MANAGER_CONTROLLERS = ",".join(
    (
        "issuers",
        "certificaterequests-approver",
        "certificaterequests-issuer-ca",
        "certificates-trigger",
        "certificates-issuing",
        "certificates-key-manager",
        "certificates-request-manager",
        "certificates-readiness",
        "certificates-revision-manager",
    )
)


@pytest.fixture
def cert_manager(cluster: LocalCluster, tmp_path: Path) -> Iterator[CertManager]:
    with CertManager(cluster, tmp_path, controllers=CERT_MANAGER_CONTROLLERS) as manager:
        yield manager


def ca_issuer(api: Client, namespace: str, name: str) -> x509.Certificate:
    """A CA Issuer backed by a fresh CA Secret; returns the CA certificate."""
    bundle = pki.create_ca("e2e cert-manager CA", now_utc(), key_size=2048)
    api.create(
        SECRETS,
        {
            "metadata": {"name": f"{name}-ca", "namespace": namespace},
            "type": c.SECRET_TYPE_TLS,
            "data": {k: base64.b64encode(v).decode() for k, v in bundle.to_secret_data().items()},
        },
    )
    api.create(
        ISSUERS,
        {"metadata": {"name": name, "namespace": namespace}, "spec": {"ca": {"secretName": f"{name}-ca"}}},
    )
    return x509.load_pem_x509_certificate(bundle.cert_pem)


def test_issuer_ref_gets_a_certificate_from_cert_manager_and_the_registry_serves_it(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    volumes: Callable[..., str],
    cert_manager: CertManager,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    # Switching to a certificate from another CA waits this long with both CAs published (see README).
    start_operator(controllers="caroot,imageregistry", env={"OPERATOR_TRUST_OVERLAP": "3s"})
    ca_cert = ca_issuer(api, namespace, "e2e-ca")
    volumes(namespace, "imageregistry-cm-pvc", access_modes=("ReadWriteMany",))
    # First an issuer that does not exist: cert-manager cannot issue, the registry waits for it.
    apply(
        cluster, namespace, registry_manifest("cm", tls={"issuerRef": {"name": "missing", "kind": "Issuer"}})
    )
    registry = wait_condition(api, namespace, "cm", status="False", reason="Pending", timeout=30)
    assert "Certificate imageregistry-cm-tls" in condition(registry, "Ready")["message"]
    assert get_or_none(api, STATEFULSETS, "cm", namespace) is None  # no pods on missing material

    certificate = api.get(CERTIFICATES, "imageregistry-cm-tls", namespace)
    dns_names = [f"cm.{namespace}.svc.cluster.local", f"cm.{namespace}.svc"]
    assert certificate["spec"]["secretName"] == "imageregistry-cm-cm-tls"
    assert certificate["spec"]["dnsNames"] == dns_names
    assert certificate["spec"]["commonName"] == dns_names[0]
    assert certificate["spec"]["duration"] == "2160h"
    assert certificate["spec"]["renewBefore"] == "480h"
    owner = certificate["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ImageRegistry", "cm", True)

    # The real issuer: cert-manager issues, the registry rolls out with the Secret it wrote.
    merge_patch(cluster, namespace, "cm", {"spec": {"tls": {"issuerRef": {"name": "e2e-ca"}}}})
    wait_for(
        lambda: (
            api.get(CERTIFICATES, "imageregistry-cm-tls", namespace)["spec"]["issuerRef"]
            == {"name": "e2e-ca", "kind": "Issuer"}
        ),
        30,
        "the Certificate to follow the new issuerRef",
    )
    try:
        registry = wait_condition(api, namespace, "cm", status="True", reason="Available", timeout=60)
    except AssertionError as error:
        raise AssertionError(f"{error}\ncert-manager log:\n{cert_manager.process.log_tail(40)}") from None
    assert registry["status"]["tlsSecretName"] == "imageregistry-cm-cm-tls"
    secret = api.get(SECRETS, "imageregistry-cm-cm-tls", namespace)
    served = x509.load_pem_x509_certificate(decoded(secret, "tls.crt"))
    assert pki.verify_signed_by(served, ca_cert), "the Secret must hold cert-manager's certificate"
    assert pki.dns_names(served) == dns_names
    pod = api.get(STATEFULSETS, "cm", namespace)["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["tls"]["secret"]["secretName"] == "imageregistry-cm-cm-tls"
    first_hash = pod_template_hash(api, namespace, "cm")

    # A re-issue (here: the Secret lost, cert-manager writes a new one) rolls the pods.
    cluster.kubectl("delete", "-n", namespace, "secret", "imageregistry-cm-cm-tls")
    wait_for(
        lambda: pod_template_hash(api, namespace, "cm") != first_hash, 60, "the pods to roll on re-issue"
    )
    reissued = x509.load_pem_x509_certificate(
        decoded(api.get(SECRETS, "imageregistry-cm-cm-tls", namespace), "tls.crt")
    )
    assert reissued.serial_number != served.serial_number
    wait_condition(api, namespace, "cm", status="True", reason="Available")

    # Switching back to the operator's own CA deletes the Certificate, which would otherwise keep
    # cert-manager writing (and renewing) a secret nobody uses.
    merge_patch(cluster, namespace, "cm", {"spec": {"tls": {"issuerRef": None}}})
    wait_for(
        lambda: get_or_none(api, CERTIFICATES, "imageregistry-cm-tls", namespace) is None,
        30,
        "the Certificate of the former TLS source to be deleted",
    )
    registry = wait_condition(api, namespace, "cm", status="True", reason="Available")
    assert registry["status"]["tlsSecretName"] == "imageregistry-cm-selfsigned-tls"
