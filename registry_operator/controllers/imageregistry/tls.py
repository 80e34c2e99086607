"""Serving TLS of a registry, by `spec.tls`: a certificate the operator issues from its root CA
(default), the user's Secret (`secretName`, used as is), or a cert-manager Certificate (`issuerRef`).

Yields the Secret the pods mount (`TlsMaterial`) or raises a `Problem` naming what to fix; after a
switch of source it removes what the old one left behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import structlog

from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.api import names
from registry_operator.config import Settings
from registry_operator.controllers.common import Object, controlled_by_uid
from registry_operator.controllers.imageregistry.base import RegistryPart, RegistryStores
from registry_operator.controllers.imageregistry.context import (
    TLS_MODE_ISSUER,
    TLS_MODE_SECRET,
    TLS_MODE_SELF_SIGNED,
    RegistryContext,
    child_metadata,
)
from registry_operator.controllers.imageregistry.keys import GeneratedSecrets, TlsMaterial
from registry_operator.controllers.resources import CERTIFICATES, SECRETS
from registry_operator.controllers.status import Problem
from registry_operator.kube import objects
from registry_operator.kube.client import Client
from registry_operator.kube.errors import NotFound
from registry_operator.kube.events import EventRecorder

log = structlog.get_logger(__name__)

# Certificates cert-manager issues for a registry (the original's values).
CERT_MANAGER_DURATION: Final = "2160h"
CERT_MANAGER_RENEW_BEFORE: Final = "480h"
_MAX_COMMON_NAME: Final = 64
CERT_MANAGER_HINT: Final = (
    " (is cert-manager installed? spec.tls.issuerRef needs its cert-manager.io/v1 Certificate API)"
)
REASON_ISSUED_CERTIFICATE: Final = "IssuedCertificate"


def server_dns_names(name: str, namespace: str, dns_zone: str) -> list[str]:
    """SANs of the serving certificate (the original's order; the first one is the CN)."""
    dns = [f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}.svc"]
    if dns_zone != c.DEFAULT_DNS_ZONE:
        dns.insert(0, names.registry_hostname(name, namespace, dns_zone))
    return dns


def desired_certificate(ctx: RegistryContext, dns_names: Sequence[str]) -> Object:
    """The cert-manager Certificate for `spec.tls.issuerRef` (90 days, renewed 20 days before)."""
    issuer = ctx.spec.tls.issuer_ref
    if issuer is None:
        raise ValueError("desired_certificate needs spec.tls.issuerRef")
    issuer_ref: dict[str, str] = {"name": issuer.name, "kind": issuer.kind}
    if issuer.group:
        issuer_ref["group"] = issuer.group
    spec: dict[str, Any] = {
        "secretName": ctx.tls_secret_name,
        "dnsNames": list(dns_names),
        "duration": CERT_MANAGER_DURATION,
        "renewBefore": CERT_MANAGER_RENEW_BEFORE,
        "issuerRef": issuer_ref,
        "privateKey": {"algorithm": "RSA", "size": 2048, "rotationPolicy": "Always"},
        "usages": ["server auth", "digital signature", "key encipherment"],
    }
    if dns_names and len(dns_names[0]) <= _MAX_COMMON_NAME:
        spec["commonName"] = dns_names[0]
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": child_metadata(ctx, names.registry_certificate_name(ctx.name)),
        "spec": spec,
    }


class ServingTls(RegistryPart):
    """The serving certificate of one registry, from whichever source its spec names."""

    def __init__(
        self,
        client: Client,
        stores: RegistryStores,
        settings: Settings,
        recorder: EventRecorder | None,
        *,
        generated: GeneratedSecrets,
        server_key_size: int,
    ) -> None:
        super().__init__(client, stores, settings, recorder)
        self._generated = generated
        self._server_key_size = server_key_size

    def material(self, ctx: RegistryContext, now: datetime) -> TlsMaterial:
        """The Secret the pods mount for serving TLS, parsed; a Problem when it is not usable."""
        secret_name = ctx.tls_secret_name
        where = f"Secret {ctx.namespace}/{secret_name}"
        if ctx.tls_mode == TLS_MODE_ISSUER:
            certificate = names.registry_certificate_name(ctx.name)
            self._certificate(ctx)
            secret = self._stores.referenced_secrets.get_by_name(ctx.namespace, secret_name)
            if secret is None:
                raise Problem(
                    c.REASON_PENDING,
                    f"waiting for cert-manager to issue Certificate {certificate} into {where}",
                    event_type=None,
                )
            source = f"{where} (written by cert-manager for Certificate {certificate})"
            return TlsMaterial(secret_name, self._parse_tls_secret(secret, source), None)
        if ctx.tls_mode == TLS_MODE_SECRET:
            secret = self._stores.referenced_secrets.get_by_name(ctx.namespace, secret_name)
            if secret is None:
                raise Problem(c.REASON_MISSING_SECRET, f"{where} named in spec.tls.secretName does not exist")
            return TlsMaterial(
                secret_name, self._parse_tls_secret(secret, f"{where} named in spec.tls.secretName"), None
            )
        return self._self_signed_tls(ctx, now)

    @staticmethod
    def _parse_tls_secret(secret: Object, source: str) -> pki.ParsedBundle:
        parsed = pki.parse_tls_secret_data(secret.get("data"), require_ca=False)
        if isinstance(parsed, pki.PkiError):
            raise Problem(
                c.REASON_INVALID_SECRET,
                f"{source} is unusable: {parsed}. It needs PEM `tls.crt` and `tls.key` of one key pair "
                "(and `ca.crt` for clients)",
            )
        return parsed

    def _certificate(self, ctx: RegistryContext) -> None:
        desired = desired_certificate(ctx, server_dns_names(ctx.name, ctx.namespace, self._settings.dns_zone))
        name = desired["metadata"]["name"]
        try:
            current: Object | None = self._client.get(CERTIFICATES, name, ctx.namespace)
        except NotFound:
            current = None
        hint = "" if current is not None else CERT_MANAGER_HINT
        self._apply(CERTIFICATES, desired, current, hint=hint)

    def remove_unused(self, ctx: RegistryContext) -> None:
        """After a switch of TLS source, delete what the old source left: the cert-manager
        Certificate (which would keep writing its secret) and the generated self-signed secret.
        Only objects this registry controls, and only the exact ones seen (uid precondition)."""
        if ctx.tls_mode != TLS_MODE_ISSUER:
            name = names.registry_certificate_name(ctx.name)
            try:
                certificate: Object | None = self._client.get(CERTIFICATES, name, ctx.namespace)
            except NotFound:  # none, or cert-manager is not installed at all
                certificate = None
            if certificate is not None and controlled_by_uid(certificate, ctx.uid):
                self._client.delete(
                    CERTIFICATES, name, ctx.namespace, uid=objects.uid(certificate), missing_ok=True
                )
                log.info("deleted the Certificate of the former TLS source", certificate=name)
        if ctx.tls_mode != TLS_MODE_SELF_SIGNED:
            name = names.registry_tls_secret_name(ctx.name, None, False)
            secret = self._stores.managed_secrets.get_by_name(ctx.namespace, name)
            if secret is not None and name != ctx.tls_secret_name and controlled_by_uid(secret, ctx.uid):
                self._client.delete(SECRETS, name, ctx.namespace, uid=objects.uid(secret), missing_ok=True)
                log.info("deleted the self-signed TLS secret of the former TLS source", secret=name)

    def _self_signed_tls(self, ctx: RegistryContext, now: datetime) -> TlsMaterial:
        operator_namespace = self._settings.operator_namespace
        root_where = f"root CA Secret {operator_namespace}/{c.ROOT_CA_SECRET_NAME}"
        root_secret = self._stores.root_ca.get_by_name(operator_namespace, c.ROOT_CA_SECRET_NAME)
        if root_secret is None:
            raise Problem(
                c.REASON_PENDING,
                f"waiting for the {root_where} (the caroot controller creates it)",
                event_type=None,
            )
        parsed_root = pki.parse_tls_secret_data(root_secret.get("data"), require_ca=False)
        if isinstance(parsed_root, pki.PkiError) or not pki.is_ca(parsed_root.cert):
            problem = (
                parsed_root if isinstance(parsed_root, pki.PkiError) else "tls.crt is not a CA certificate"
            )
            raise Problem(c.REASON_INVALID_SECRET, f"the {root_where} is unusable: {problem}")
        root: pki.ParsedBundle = parsed_root
        dns_names = server_dns_names(ctx.name, ctx.namespace, self._settings.dns_zone)
        root_cert = root.cert
        # The root's trust bundle: during a root CA rollover the current and the next (or previous) CA.
        trusted = pki.pem_bundle(root.ca_certs or [root_cert])

        def cert_problem(parsed: pki.ParsedBundle) -> str | None:
            return pki.server_cert_problem(parsed, dns_names, root_cert, now)

        def problem_of(secret: Object) -> str | None:
            parsed = pki.parse_tls_secret_data(secret.get("data"), require_ca=False)
            if isinstance(parsed, pki.PkiError):
                return str(parsed)
            if parsed.bundle.ca_pem != trusted:
                return cert_problem(parsed) or "the root CA's trust bundle changed"
            return cert_problem(parsed)

        def issue() -> dict[str, bytes]:
            existing = self._stores.managed_secrets.get_by_name(ctx.namespace, ctx.tls_secret_name)
            kept = pki.parse_tls_secret_data((existing or {}).get("data"), require_ca=False)
            if not isinstance(kept, pki.PkiError) and cert_problem(kept) is None:
                # Only the trust bundle changed: the certificate stays, the pods keep serving it.
                return {"tls.crt": kept.bundle.cert_pem, "tls.key": kept.bundle.key_pem, "ca.crt": trusted}
            bundle = pki.create_server_cert(root, dns_names, now, key_size=self._server_key_size)
            # An intermediate CA must be sent along for clients that only trust the root.
            intermediate = b"" if root_cert.issuer == root_cert.subject else pki.cert_pem(root_cert)
            return {"tls.crt": bundle.cert_pem + intermediate, "tls.key": bundle.key_pem, "ca.crt": trusted}

        secret_name = ctx.tls_secret_name
        secret, replaced = self._generated.secret(ctx, secret_name, c.SECRET_TYPE_TLS, problem_of, issue)
        parsed = pki.parse_tls_secret_data(secret.get("data"), require_ca=False)
        assert not isinstance(parsed, pki.PkiError)  # just validated or generated
        renewal_at = pki.renewal_time(parsed.cert)
        if replaced is not None and replaced != "the root CA's trust bundle changed":
            self._event(
                secret,
                "Normal",
                REASON_ISSUED_CERTIFICATE,
                f"issued the serving certificate for {', '.join(dns_names)} ({replaced}); "
                f"renewal at {renewal_at.isoformat()}",
            )
        return TlsMaterial(secret_name, parsed, renewal_at)
