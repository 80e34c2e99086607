"""The root CA rollover's steps (`plan_rollover`) and the NameConstraints of the CA, with a fixed clock."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509

from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.controllers import trust
from registry_operator.controllers.caroot_rollover import RegistryView, plan_rollover, rollover_trigger

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OVERLAP = timedelta(hours=1)
PERMITTED = ("registry.example.org", "svc", "svc.cluster.local")


def new_ca(now: datetime = NOW, permitted: tuple[str, ...] = PERMITTED) -> pki.TLSBundle:
    return pki.create_ca(c.ROOT_CA_COMMON_NAME, now, key_size=1024, permitted_dns=permitted)


def secret(data: dict[str, bytes], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": c.ROOT_CA_SECRET_NAME, "annotations": dict(annotations or {})},
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


def parsed_of(obj: dict[str, Any]) -> pki.ParsedBundle:
    parsed = pki.parse_tls_secret_data(obj["data"], require_ca=False)
    assert not isinstance(parsed, pki.PkiError)
    return parsed


def fingerprint(pem: bytes) -> str:
    return pki.cert_fingerprint(x509.load_pem_x509_certificate(pem))


def registry(
    *, authorities: dict[str, datetime], served_issuer: str | None, served_since: datetime | None = None
) -> dict[str, Any]:
    trust: dict[str, Any] = {
        "authorities": [{"fingerprint": fp, "since": since.isoformat()} for fp, since in authorities.items()]
    }
    if served_issuer is not None:
        trust["served"] = {"secretName": "tls", "fingerprint": "x", "issuer": served_issuer}
        if served_since is not None:
            trust["served"]["since"] = served_since.isoformat()
    return {"metadata": {"name": "registry", "namespace": "team"}, "status": {"trust": trust}}


NO_REGISTRIES = RegistryView()


def step(obj: dict[str, Any], now: datetime, view: RegistryView = NO_REGISTRIES) -> Any:
    return plan_rollover(
        obj, parsed_of(obj), now, permitted=PERMITTED, overlap=OVERLAP, view=view, new_ca=new_ca
    )


def test_the_root_ca_permits_only_the_zone_and_the_cluster_names_and_no_ip() -> None:
    cert = x509.load_pem_x509_certificate(new_ca().cert_pem)
    constraints = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert pki.permitted_dns_of(cert) == PERMITTED
    excluded = constraints.value.excluded_subtrees or []
    assert {str(name.value) for name in excluded} == {"0.0.0.0/0", "::/0"}
    # A server certificate for a permitted name verifies; the CA still signs it the usual way.
    root = pki.parse_bundle(new_ca())
    assert not isinstance(root, pki.PkiError)
    server = pki.create_server_cert(root, ["r.team.svc"], NOW, key_size=1024)
    assert pki.verify_signed_by(x509.load_pem_x509_certificate(server.cert_pem), root.cert)


@pytest.mark.parametrize(
    ("bundle", "annotations", "expected"),
    [
        (new_ca(), {}, None),
        (new_ca(permitted=()), {}, "NameConstraints (none) differ"),
        (new_ca(permitted=("other.example",)), {}, "NameConstraints (other.example) differ"),
        (new_ca(NOW - timedelta(days=1500)), {}, "renewal was due"),
        (new_ca(), {c.ANNOTATION_ROTATE: "1"}, "requested by"),
        (new_ca(), {c.ANNOTATION_ROTATE: "1", c.ANNOTATION_ROTATE_HANDLED: "1"}, None),
    ],
    ids=["valid", "no-constraints", "other-constraints", "renewal-due", "requested", "request-handled"],
)
def test_what_starts_a_rollover(
    bundle: pki.TLSBundle, annotations: dict[str, str], expected: str | None
) -> None:
    obj = secret(bundle.to_secret_data(), annotations)
    trigger = rollover_trigger(obj, parsed_of(obj), NOW, PERMITTED)
    assert (trigger is None) if expected is None else (trigger is not None and expected in trigger)


def test_a_full_rollover_keeps_the_old_root_trusted_until_no_registry_serves_it() -> None:
    old = new_ca(permitted=())  # a CA from before NameConstraints: rolled over, not replaced
    obj = secret(old.to_secret_data())
    old_fp = fingerprint(old.cert_pem)

    # 1. Distributing: both trusted, the old one still signs.
    first = step(obj, NOW)
    assert first.data is not None
    assert first.annotations[c.ANNOTATION_ROLLOVER_PHASE] == c.ROLLOVER_DISTRIBUTING
    assert first.data[pki.TLS_CERT_KEY] == old.cert_pem
    next_fp = fingerprint(first.data[c.SECRET_KEY_NEXT_CERT])
    assert [pki.cert_fingerprint(x) for x in pki.bundle_certs(first.data["ca.crt"])] == [old_fp, next_fp]
    distributing = secret(first.data, first.annotations)

    # Not before the overlap, not while a registry has not published it long enough, not while a
    # derived Secret trusts the old root only.
    assert step(distributing, NOW + OVERLAP / 2).data is None
    late = registry(authorities={old_fp: NOW, next_fp: NOW + OVERLAP / 2}, served_issuer=old_fp)
    waiting = step(distributing, NOW + OVERLAP + timedelta(seconds=1), RegistryView(registries=[late]))
    assert waiting.data is None and "team/registry" in waiting.message
    on_time = registry(authorities={old_fp: NOW, next_fp: NOW}, served_issuer=old_fp)
    stale_secret = {
        "metadata": {
            "namespace": "team",
            "name": "imagepullsecret-x",
            "ownerReferences": [{"apiVersion": f"{c.GROUP}/v1alpha1", "kind": "ImagePullSecret"}],
        },
        "data": {"ca.crt": base64.b64encode(old.cert_pem).decode()},
    }
    view = RegistryView(registries=[on_time], derived_secrets=[stale_secret])
    behind = step(distributing, NOW + OVERLAP + timedelta(seconds=1), view)
    assert behind.data is None and "team/imagepullsecret-x" in behind.message

    # 2. Retiring: the next root signs; the old one stays trusted.
    retiring_step = step(
        distributing, NOW + OVERLAP + timedelta(seconds=1), RegistryView(registries=[on_time])
    )
    assert retiring_step.data is not None
    assert retiring_step.annotations[c.ANNOTATION_ROLLOVER_PHASE] == c.ROLLOVER_RETIRING
    assert fingerprint(retiring_step.data[pki.TLS_CERT_KEY]) == next_fp
    assert pki.fingerprints(pki.bundle_certs(retiring_step.data["ca.crt"])) == {old_fp, next_fp}
    retiring = secret(retiring_step.data, retiring_step.annotations)
    later = NOW + OVERLAP + timedelta(minutes=5)
    assert step(retiring, later, RegistryView(registries=[on_time])).data is None  # still serves the old
    unknown = registry(authorities={}, served_issuer=None)
    assert step(retiring, later, RegistryView(registries=[unknown])).data is None  # not known: wait

    # 3. Stable: once every registry serves a certificate of the new root, or every old one expired.
    moved = registry(authorities={next_fp: NOW}, served_issuer=next_fp)
    done = step(retiring, later, RegistryView(registries=[moved]))
    assert done.data is not None and done.annotations[c.ANNOTATION_ROLLOVER_PHASE] == c.ROLLOVER_STABLE
    assert [pki.cert_fingerprint(x) for x in pki.bundle_certs(done.data["ca.crt"])] == [next_fp]
    expired = step(retiring, later + pki.SERVER_LIFETIME, RegistryView(registries=[unknown]))
    assert expired.data is not None and c.SECRET_KEY_PREVIOUS_CERT not in expired.data


def test_the_previous_root_stays_trusted_for_the_retire_grace_after_the_pods_switched() -> None:
    """A registry whose pods serve the new root's certificate since just now (counted Ready, maybe
    still draining the old pods) holds the previous root in the bundle until the grace has passed."""
    old = new_ca(permitted=())  # without NameConstraints: rolled over
    distributing_step = step(secret(old.to_secret_data()), NOW)
    assert distributing_step.data is not None
    next_fp = fingerprint(distributing_step.data[c.SECRET_KEY_NEXT_CERT])
    distributing = secret(distributing_step.data, distributing_step.annotations)
    out = registry(authorities={next_fp: NOW}, served_issuer=fingerprint(old.cert_pem))
    retiring_at = NOW + OVERLAP + timedelta(seconds=1)
    retiring_step = step(distributing, retiring_at, RegistryView(registries=[out]))
    assert retiring_step.annotations[c.ANNOTATION_ROLLOVER_PHASE] == c.ROLLOVER_RETIRING
    retiring = secret(retiring_step.data, retiring_step.annotations)

    switched_at = retiring_at + timedelta(seconds=20)
    grace = trust.retire_grace(OVERLAP)
    just_moved = registry(authorities={next_fp: NOW}, served_issuer=next_fp, served_since=switched_at)
    held = step(retiring, switched_at + timedelta(seconds=1), RegistryView(registries=[just_moved]))
    assert held.data is None and "team/registry" in held.message
    assert held.recheck_at == switched_at + grace
    done = step(retiring, switched_at + grace, RegistryView(registries=[just_moved]))
    assert done.data is not None and done.annotations[c.ANNOTATION_ROLLOVER_PHASE] == c.ROLLOVER_STABLE
