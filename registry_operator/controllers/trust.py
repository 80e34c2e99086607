"""Which CAs clients of a registry are given, and when a new one counts as "out" (pure).

A registry's clients trust what the operator hands out: `status.caBundle` of the ImageRegistry, copied
into the `ca.crt` of every push and pull Secret (and from there into ImageBuildEnv Secrets), and written
by the node agent to the nodes. When the serving certificate is to change to one that a CA signed
which the clients may not have yet (a root CA rollover, another `spec.tls.secretName`, cert-manager
output from another CA), the new CA is first added to that bundle and the pods keep serving the
previous certificate until the bundle is out:

* every Secret the operator derives from it (owned by an ImagePushSecret, ImagePullSecret or
  ImageBuildEnv) holds the new CA in its `ca.crt`/`ca-<i>.crt` — observed in the API, and
* the new CA has been in the bundle for `OPERATOR_TRUST_OVERLAP` (default 1h), which covers what the
  API cannot show: kubelet refreshing Secret volumes (~1-2 min), the node agent's resync (30 s),
  jobs that read `ca.crt` once at start.

The previous CA leaves the bundle once the pods serve the new certificate (a complete rollout).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography import x509

from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.api.imageregistry import ServedCertificate, TrustedAuthority, TrustPhase, TrustStatus
from registry_operator.kube import objects

# Kinds whose Secrets carry a registry's CA to clients.
DERIVED_SECRET_OWNER_KINDS: Final = frozenset(
    {c.KIND_IMAGE_PUSH_SECRET, c.KIND_IMAGE_PULL_SECRET, c.KIND_IMAGE_BUILD_ENV}
)
_CA_KEY = re.compile(r"^ca(-[0-9]+)?\.crt$")
# The longest a CA only the previous serving certificate needed stays trusted after the switch.
RETIRE_GRACE_MAX: Final = timedelta(seconds=30)


def _decoded(secret: Mapping[str, Any], key: str) -> bytes:
    value = (secret.get("data") or {}).get(key)
    if not isinstance(value, str):
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def is_derived_secret(secret: Mapping[str, Any]) -> bool:
    return any(
        ref.get("kind") in DERIVED_SECRET_OWNER_KINDS and str(ref.get("apiVersion", "")).startswith(c.GROUP)
        for ref in objects.owner_references(secret)
    )


def secret_authorities(secret: Mapping[str, Any]) -> list[set[str]]:
    """Fingerprints of the CAs in each `ca.crt` / `ca-<i>.crt` of a Secret."""
    return [
        pki.fingerprints(pki.bundle_certs(_decoded(secret, key)))
        for key in (secret.get("data") or {})
        if _CA_KEY.match(key)
    ]


def secrets_behind(
    secrets: Iterable[Mapping[str, Any]], *, old: set[str], new: set[str], hostname: str | None = None
) -> list[str]:
    """`namespace/name` of derived Secrets holding a CA file that trusts one of `old` but not all of
    `new` (with `hostname`: only Secrets for that registry, by their `registry` key)."""
    behind = []
    for secret in secrets:
        if not is_derived_secret(secret):
            continue
        if hostname is not None and secret_hostname(secret) != hostname:
            continue
        for authorities in secret_authorities(secret):
            if authorities & old and not new <= authorities:
                behind.append(objects.key(secret))
                break
    return behind


def issuer_of(leaf: x509.Certificate, candidates: Sequence[x509.Certificate]) -> x509.Certificate | None:
    for candidate in candidates:
        if pki.verify_signed_by(leaf, candidate):
            return candidate
    return None


@dataclass(frozen=True)
class CurrentTls:
    """The serving certificate the registry's TLS Secret holds now."""

    secret_name: str
    fingerprint: str  # what the pod template's hash covers
    leaf: x509.Certificate
    authorities: tuple[x509.Certificate, ...]  # what clients must trust for it (and for what is next)


@dataclass(frozen=True)
class TrustPlan:
    bundle: bytes  # status.caBundle
    status: TrustStatus
    hold: ServedCertificate | None  # keep the pods on this served certificate (None: roll freely)
    recheck_at: datetime | None = None  # when a CA kept for the retire grace leaves the bundle


def retire_grace(overlap: timedelta) -> timedelta:
    """How long the CAs only the previous certificate needed stay trusted after every pod serves the
    new one: a pod counted Ready may still be draining connections of the old template, endpoints and
    node agents catch up, and a client that reads the bundle right then must not lose the CA the last
    old pod still presents. Capped by the overlap, so a short overlap keeps a rollover short."""
    return min(overlap, RETIRE_GRACE_MAX)


def _served_for(current: CurrentTls, since: datetime | None) -> ServedCertificate:
    issuer = issuer_of(current.leaf, current.authorities)
    return ServedCertificate(
        secret_name=current.secret_name,
        fingerprint=current.fingerprint,
        issuer=pki.cert_fingerprint(issuer) if issuer is not None else None,
        authorities=sorted(pki.fingerprints(current.authorities)),
        not_after=current.leaf.not_valid_after_utc,
        since=since,
    )


def plan_trust(
    previous: TrustStatus | None,
    previous_bundle: bytes,
    current: CurrentTls,
    now: datetime,
    *,
    overlap: timedelta,
    settled: bool,
    served_secret_exists: bool,
    derived_secrets: Iterable[Mapping[str, Any]],
    hostname: str,
) -> TrustPlan:
    """The bundle to publish and whether the pods must stay on the served certificate.

    `settled`: the pods run the pod template built from `previous.served` (when held) or from
    `current` (when not), every replica updated and ready.
    """
    served = previous.served if previous is not None else None
    changing = served is not None and (
        served.fingerprint != current.fingerprint or served.secret_name != current.secret_name
    )
    old_certs = pki.bundle_certs(previous_bundle)
    served_cas: list[x509.Certificate] = []
    if changing and served is not None:
        served_cas = [cert for cert in old_certs if pki.cert_fingerprint(cert) in set(served.authorities)]
    bundle_certs = list(current.authorities) + served_cas
    since_of = {a.fingerprint: a.since for a in (previous.authorities if previous is not None else [])}
    hold: ServedCertificate | None = None
    message: str | None = None
    phase: TrustPhase = "Stable"
    if changing and served is not None:
        needed = pki.fingerprints(current.authorities) - set(served.authorities)
        young = [fp for fp in needed if (since_of.get(fp) or now) + overlap > now]
        behind: list[str] = []
        if needed and not young:
            behind = secrets_behind(
                derived_secrets, old=set(served.authorities), new=needed, hostname=hostname
            )
        if needed and (young or behind) and served_secret_exists:
            hold = served
            phase = "Distributing"
            if young:
                until = max((since_of.get(fp) or now) + overlap for fp in young)
                message = (
                    f"the new CA is distributed until {until.isoformat()} (OPERATOR_TRUST_OVERLAP) before "
                    "the pods serve the new certificate"
                )
            else:
                message = f"waiting for {len(behind)} Secrets to hold the new CA, e.g. {behind[0]}"
        elif settled:
            served = _served_for(current, now)
        else:
            phase = "Rolling"
            message = "the pods are moving to the new certificate; clients trust the previous and the new CA"
    elif served is None and settled:
        served = _served_for(current, now)
    elif (
        served is not None and settled and served.authorities != sorted(pki.fingerprints(current.authorities))
    ):
        served = _served_for(current, served.since)  # same certificate, another trust bundle (root CA)
    recheck_at: datetime | None = None
    if phase == "Stable" and served is not None:
        # The pods serve `current`: what only the previous certificate needed leaves after the grace.
        needed_now = pki.fingerprints(current.authorities)
        lingering = [cert for cert in old_certs if pki.cert_fingerprint(cert) not in needed_now]
        until = (served.since or now - overlap) + retire_grace(overlap)
        if lingering and until > now:
            bundle_certs = list(current.authorities) + lingering
            recheck_at = until
            message = f"the previous CA stays trusted until {until.isoformat()} (pods draining)"
        else:
            bundle_certs = list(current.authorities)
    authorities = [
        TrustedAuthority(
            fingerprint=pki.cert_fingerprint(cert),
            subject=cert.subject.rfc4514_string()[:1024],
            since=since_of.get(pki.cert_fingerprint(cert)) or now,
        )
        for cert in pki.unique_certs(bundle_certs)
    ]
    status = TrustStatus(phase=phase, message=message, authorities=authorities, served=served)
    return TrustPlan(bundle=pki.pem_bundle(bundle_certs), status=status, hold=hold, recheck_at=recheck_at)


def bundle_is_out(registry: Mapping[str, Any], authority: str, now: datetime, overlap: timedelta) -> bool:
    """Whether a registry's status says `authority` has been in its bundle for `overlap`."""
    trust = (registry.get("status") or {}).get("trust") or {}
    for entry in trust.get("authorities") or []:
        if entry.get("fingerprint") == authority:
            since = entry.get("since")
            try:
                return since is not None and datetime.fromisoformat(since) + overlap <= now
            except ValueError:
                return False
    return False


def serves_certificate_from(registry: Mapping[str, Any], authority: str) -> bool | None:
    """Whether the registry's pods serve a certificate `authority` signed (None: not known)."""
    served = ((registry.get("status") or {}).get("trust") or {}).get("served")
    if not served:
        return None
    return bool(served.get("issuer") == authority)


def is_stalled(registry: Mapping[str, Any], now: datetime, patience: timedelta) -> bool:
    """Whether the registry has not been Ready for longer than `patience`.

    A root CA rollover does not wait for such a registry: its own trust plan keeps the CAs of the
    certificate its pods last served in its `caBundle` (hence in its clients' Secrets) for as long as
    they serve it, and distributes a new CA for the overlap before its pods serve a certificate of it
    (a registry whose reconciles fail changes neither). Without this, one broken registry would hold
    every registry's CA renewal until the CA expired.
    """
    ready = objects.condition(registry, c.CONDITION_READY)
    if ready is None or ready.get("status") != "False":
        return False
    try:
        since = datetime.fromisoformat(str(ready.get("lastTransitionTime")))
    except ValueError:
        return False
    return since + patience <= now


def registry_hostname(registry: Mapping[str, Any]) -> str | None:
    hostname = (registry.get("status") or {}).get("hostname")
    return hostname if isinstance(hostname, str) and hostname else None


def secret_hostname(secret: Mapping[str, Any]) -> str:
    """The registry a derived Secret is for (its `registry` key)."""
    return _decoded(secret, c.SECRET_KEY_REGISTRY).decode(errors="replace")


def served_since(registry: Mapping[str, Any]) -> datetime | None:
    """When the registry's pods were first seen all serving their current certificate (None: not
    known, e.g. a status written before this was recorded)."""
    served = ((registry.get("status") or {}).get("trust") or {}).get("served") or {}
    try:
        return datetime.fromisoformat(served["since"]) if served.get("since") else None
    except (TypeError, ValueError):
        return None
