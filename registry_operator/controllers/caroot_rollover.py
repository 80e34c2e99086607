"""The root CA's rollover with overlap, step by step (pure; the caroot controller writes the steps).

`tls.crt`/`tls.key` is the CA that signs, `ca.crt` the bundle clients trust; annotations
`rollover-phase`/`-since`/`-reason` say where it stands (and `rollover-waiting` what it waits for):
* `Stable` → `Distributing` when renewal is due, the NameConstraints differ from the wanted ones
  (the DNS zone, the cluster's service names, `OPERATOR_CA_PERMITTED_DNS`; a CA without them is
  rolled over too) or a new value of the `registry.mgoltzsche.github.com/rotate` annotation appears:
  a next CA is generated (`next.crt`/`next.key`) and `ca.crt` = current + next. Registries put it in
  their `status.caBundle`, hence in every push/pull Secret and on the nodes; certificates are still
  signed by the current CA.
* `Distributing` → `Retiring` once the bundle is out: `OPERATOR_TRUST_OVERLAP` has passed, every
  registry using the root CA lists the next CA in its status for that long, and no Secret derived
  for clients (push/pull/ImageBuildEnv) trusts the current CA without the next one. A registry not
  Ready for longer than the overlap holds neither phase (`trust.is_stalled`). The next CA
  signs from now on (`tls.crt`/`tls.key`), the previous one stays in `ca.crt` and `previous.crt`;
  registries re-issue their certificates from it.
* `Retiring` → `Stable` once no registry's pods serve a certificate the previous CA signed (their
  `status.trust.served`) and each has served its new one for the retire grace (`trust.retire_grace`:
  pods still draining, endpoints catching up), or at the latest when every such certificate has
  expired (the server certificate lifetime after `Retiring` began): `ca.crt` = the new CA alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography import x509

from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.api.base import format_time
from registry_operator.controllers import trust
from registry_operator.controllers.common import decode_secret_data, parse_time
from registry_operator.kube import objects

# How often a rollover in progress looks again without a change of a registry (whose status it watches).
ROLLOVER_RECHECK: Final = timedelta(seconds=5)


def stable_annotations(now: datetime, reason: str) -> dict[str, str]:
    return {
        c.ANNOTATION_ROLLOVER_PHASE: c.ROLLOVER_STABLE,
        c.ANNOTATION_ROLLOVER_SINCE: format_time(now),
        c.ANNOTATION_ROLLOVER_REASON: reason,
    }


@dataclass(frozen=True)
class RegistryView:
    """What the rollover needs to know of the registries that use the root CA, and the Secrets."""

    registries: Sequence[Mapping[str, Any]] = ()
    derived_secrets: Sequence[Mapping[str, Any]] = ()
    # Not Ready for longer than the overlap (`trust.is_stalled`): left out of the two above.
    stalled: Sequence[str] = ()


@dataclass(frozen=True)
class RolloverStep:
    """A write the rollover needs (data + annotations), or why it waits (`data` None)."""

    data: dict[str, bytes] | None
    annotations: dict[str, str] = field(default_factory=dict)
    message: str = ""
    recheck_at: datetime | None = None


def rollover_trigger(
    secret: Mapping[str, Any], parsed: pki.ParsedBundle, now: datetime, permitted: Sequence[str]
) -> str | None:
    """Why a usable managed CA must be rolled over (None: it stays)."""
    if pki.needs_renewal(parsed.cert, now):
        return f"renewal was due at {pki.renewal_time(parsed.cert).isoformat()}"
    current = pki.permitted_dns_of(parsed.cert)
    wanted = tuple(sorted(set(permitted))) or None
    if current != wanted:
        shown = "none" if current is None else ", ".join(current)
        return f"NameConstraints ({shown}) differ from the wanted {', '.join(wanted or ('none',))}"
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    requested = annotations.get(c.ANNOTATION_ROTATE)
    if requested and requested != annotations.get(c.ANNOTATION_ROTATE_HANDLED):
        return f"requested by the {c.ANNOTATION_ROTATE} annotation ({requested!r})"
    return None


def _not_waiting_for(view: RegistryView) -> str:
    if not view.stalled:
        return ""
    return (
        f" (not waiting for {len(view.stalled)} registries not Ready for longer than "
        f"OPERATOR_TRUST_OVERLAP, e.g. {view.stalled[0]}: each distributes the new CA once fixed)"
    )


def plan_rollover(
    secret: Mapping[str, Any],
    parsed: pki.ParsedBundle,
    now: datetime,
    *,
    permitted: Sequence[str],
    overlap: timedelta,
    view: RegistryView,
    new_ca: Callable[[], pki.TLSBundle],
) -> RolloverStep:
    """The next step of a rollover of the (managed, usable) root CA; see the module docstring."""
    data = decode_secret_data(secret)
    annotations = dict((secret.get("metadata") or {}).get("annotations") or {})
    phase = annotations.get(c.ANNOTATION_ROLLOVER_PHASE) or c.ROLLOVER_STABLE
    since = parse_time(annotations.get(c.ANNOTATION_ROLLOVER_SINCE)) or now
    reason = annotations.get(c.ANNOTATION_ROLLOVER_REASON) or ""
    signer = parsed.cert
    signer_fp = pki.cert_fingerprint(signer)
    base = {pki.TLS_CERT_KEY: data[pki.TLS_CERT_KEY], pki.TLS_KEY_KEY: data[pki.TLS_KEY_KEY]}

    if phase == c.ROLLOVER_DISTRIBUTING:
        following = pki.parse_tls_secret_data(
            {
                pki.TLS_CERT_KEY: data.get(c.SECRET_KEY_NEXT_CERT, b""),
                pki.TLS_KEY_KEY: data.get(c.SECRET_KEY_NEXT_KEY, b""),
            },
            require_ca=False,
        )
        if not isinstance(following, pki.PkiError):
            next_fp = pki.cert_fingerprint(following.cert)
            waiting = [
                objects.key(registry)
                for registry in view.registries
                if not trust.bundle_is_out(registry, next_fp, now, overlap)
            ]
            behind = trust.secrets_behind(view.derived_secrets, old={signer_fp}, new={next_fp})
            if now < since + overlap or waiting or behind:
                if now < since + overlap:
                    until = (since + overlap).isoformat()
                    why = f"the next CA is distributed until {until} (OPERATOR_TRUST_OVERLAP)"
                elif waiting:
                    why = (
                        f"{len(waiting)} registries have not distributed the next CA for long enough, "
                        f"e.g. {waiting[0]}"
                    )
                else:
                    why = f"{len(behind)} Secrets do not hold the next CA yet, e.g. {behind[0]}"
                recheck_at = since + overlap if now < since + overlap else now + ROLLOVER_RECHECK
                return RolloverStep(None, message=why, recheck_at=recheck_at)
            return RolloverStep(
                {
                    pki.TLS_CERT_KEY: following.bundle.cert_pem,
                    pki.TLS_KEY_KEY: following.bundle.key_pem,
                    pki.CA_CERT_KEY: pki.pem_bundle([following.cert, signer]),
                    c.SECRET_KEY_PREVIOUS_CERT: pki.cert_pem(signer),
                },
                {
                    **annotations,
                    c.ANNOTATION_ROLLOVER_PHASE: c.ROLLOVER_RETIRING,
                    c.ANNOTATION_ROLLOVER_SINCE: format_time(now),
                },
                "the next root CA is out: it signs the registries' certificates from now on; the previous "
                "one stays trusted until no registry serves a certificate it signed" + _not_waiting_for(view),
            )
    if phase == c.ROLLOVER_RETIRING:
        previous = pki.bundle_certs(data.get(c.SECRET_KEY_PREVIOUS_CERT))
        if previous:
            previous_fp = pki.cert_fingerprint(previous[0])
            serving = [
                objects.key(registry)
                for registry in view.registries
                if trust.serves_certificate_from(registry, previous_fp) is not False
            ]
            # Serving the new certificate, but only for less than the retire grace (pods draining).
            draining: dict[str, datetime] = {}
            grace = trust.retire_grace(overlap)
            for registry in view.registries:
                switched = trust.served_since(registry)
                if switched is not None and switched + grace > now:
                    draining[objects.key(registry)] = switched + grace
            expired_by = since + pki.SERVER_LIFETIME
            if (serving or draining) and now < expired_by:
                if serving:
                    why = f"{len(serving)} registries may still serve a certificate of the previous CA"
                    example, recheck_at = serving[0], now + ROLLOVER_RECHECK
                else:
                    why = f"{len(draining)} registries switched certificates less than the retire grace ago"
                    example, recheck_at = next(iter(draining)), min(draining.values())
                return RolloverStep(
                    None, message=f"{why}, e.g. {example}", recheck_at=min(expired_by, recheck_at)
                )
            return RolloverStep(
                {**base, pki.CA_CERT_KEY: pki.cert_pem(signer)},
                {
                    **annotations,
                    c.ANNOTATION_ROLLOVER_PHASE: c.ROLLOVER_STABLE,
                    c.ANNOTATION_ROLLOVER_SINCE: format_time(now),
                },
                "no registry serves a certificate of the previous root CA any more: it is no longer trusted"
                + _not_waiting_for(view),
            )
    trigger = rollover_trigger(secret, parsed, now, permitted)
    if trigger is None:
        if (
            phase != c.ROLLOVER_STABLE
            or data.get(pki.CA_CERT_KEY) != pki.cert_pem(signer)
            or set(data) - {pki.TLS_CERT_KEY, pki.TLS_KEY_KEY, pki.CA_CERT_KEY}
        ):
            # An interrupted rollover (next/previous unreadable) or a CA from before rollovers: settle.
            return RolloverStep(
                {**base, pki.CA_CERT_KEY: pki.cert_pem(signer)},
                {**annotations, **stable_annotations(now, reason)},
                "",
            )
        return RolloverStep(None, recheck_at=pki.renewal_time(signer))
    upcoming = new_ca()
    upcoming_cert = x509.load_pem_x509_certificate(upcoming.cert_pem)
    started = {
        **annotations,
        c.ANNOTATION_ROLLOVER_PHASE: c.ROLLOVER_DISTRIBUTING,
        c.ANNOTATION_ROLLOVER_SINCE: format_time(now),
        c.ANNOTATION_ROLLOVER_REASON: trigger,
    }
    requested = annotations.get(c.ANNOTATION_ROTATE)
    if requested:
        started[c.ANNOTATION_ROTATE_HANDLED] = requested
    return RolloverStep(
        {
            **base,
            pki.CA_CERT_KEY: pki.pem_bundle([signer, upcoming_cert]),
            c.SECRET_KEY_NEXT_CERT: upcoming.cert_pem,
            c.SECRET_KEY_NEXT_KEY: upcoming.key_pem,
        },
        started,
        f"root CA rollover started ({trigger}): the next CA is distributed beside the current one",
    )
