"""The root CA controller's decisions and writes, with a fixed clock and an in-memory API."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.controllers.caroot import (
    REFUSED_RECHECK,
    RENEWAL_MARGIN,
    Action,
    CARootReconciler,
    assess_root_ca,
    desired_root_ca_secret,
    root_ca_field_selector,
)
from registry_operator.kube.cache import Store
from registry_operator.kube.client import Client
from registry_operator.kube.controller import ReconcileError, Request
from registry_operator.kube.errors import AlreadyExists, Conflict
from registry_operator.kube.events import EventRecorder

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NAMESPACE = "registry-operator"
KEY_SIZE = 1024
OVERLAP = timedelta(hours=1)
MANAGED = {c.LABEL_NAME: c.OPERATOR_NAME_VALUE, c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE}


def secret(
    bundle: pki.TLSBundle | None, *, labels: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    data = {k: base64.b64encode(v).decode() for k, v in bundle.to_secret_data().items()} if bundle else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": c.ROOT_CA_SECRET_NAME,
            "namespace": NAMESPACE,
            "uid": "uid-1",
            "resourceVersion": "7",
            "labels": dict(MANAGED if labels is None else labels),
        },
        "type": c.SECRET_TYPE_TLS,
        "data": data,
        **extra,
    }


def ca(now: datetime = NOW, lifetime: timedelta = pki.CA_LIFETIME) -> pki.TLSBundle:
    return pki.create_ca(c.ROOT_CA_COMMON_NAME, now, key_size=KEY_SIZE, lifetime=lifetime)


def server_cert() -> pki.TLSBundle:
    parsed = pki.parse_bundle(ca())
    assert not isinstance(parsed, pki.PkiError)
    return pki.create_server_cert(parsed, ["x.example"], NOW, key_size=KEY_SIZE)


BROKEN = {"tls.crt": base64.b64encode(b"garbage").decode(), "tls.key": base64.b64encode(b"x").decode()}


# --- assessment ------------------------------------------------------------------------------------


def test_a_missing_secret_is_created() -> None:
    assert assess_root_ca(None, NOW).action is Action.CREATE


def test_a_valid_managed_ca_is_kept_until_its_renewal_time() -> None:
    bundle = ca(NOW - timedelta(days=10))
    assessment = assess_root_ca(secret(bundle), NOW)
    assert assessment.action is Action.KEEP
    parsed = pki.parse_bundle(bundle)
    assert not isinstance(parsed, pki.PkiError)
    assert assessment.renewal_at == pki.renewal_time(parsed.cert)


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (secret(None, data=BROKEN), "tls.crt: no well-formed PEM block found"),
        (secret(server_cert()), "tls.crt is not a CA certificate"),
        (secret(ca(NOW - timedelta(days=10), timedelta(days=5))), "it is not valid at"),
        (secret(ca(), type="Opaque"), "type is 'Opaque'"),
    ],
    ids=["malformed", "not-a-ca", "expired", "wrong-type"],
)
def test_a_managed_secret_that_cannot_serve_is_replaced(obj: dict[str, Any], reason: str) -> None:
    assessment = assess_root_ca(obj, NOW)
    assert assessment.action is Action.REPLACE
    assert reason in assessment.reason


def test_a_valid_user_provided_ca_is_adopted() -> None:
    assert assess_root_ca(secret(ca(), labels={}), NOW).action is Action.ADOPT


@pytest.mark.parametrize(
    "obj",
    [
        secret(None, labels={}, data=BROKEN),
        secret(server_cert(), labels={}),
        secret(ca(NOW - timedelta(days=1500)), labels={}),
    ],
    ids=["malformed", "not-a-ca", "renewal-due"],
)
def test_an_unusable_user_secret_is_refused_with_a_message_saying_what_to_do(obj: dict[str, Any]) -> None:
    assessment = assess_root_ca(obj, NOW)
    assert assessment.action is Action.REFUSE
    assert "not managed by the operator" in assessment.reason
    assert "delete it to let the operator generate one" in assessment.reason


def test_desired_secret_has_the_originals_layout() -> None:
    bundle = ca()
    desired = desired_root_ca_secret(NAMESPACE, bundle)
    assert desired["metadata"] == {
        "name": "image-registry-root-ca",
        "namespace": NAMESPACE,
        "labels": MANAGED,
    }
    assert desired["type"] == "kubernetes.io/tls"
    assert desired["data"]["ca.crt"] == desired["data"]["tls.crt"]
    assert set(desired["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    assert root_ca_field_selector() == "metadata.name=image-registry-root-ca"


# --- reconciler ------------------------------------------------------------------------------------


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_create: Exception | None = None

    def create(self, resource: Any, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        self.calls.append(("create", copy.deepcopy(obj)))
        if self.fail_create is not None:
            raise self.fail_create
        return {**obj, "metadata": {**obj["metadata"], "uid": "new", "resourceVersion": "1"}}

    def update(self, resource: Any, obj: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("update", copy.deepcopy(obj)))
        return obj

    def delete(
        self, resource: Any, name: str, namespace: str | None = None, *, uid: str | None = None
    ) -> None:
        self.calls.append(("delete", {"name": name, "uid": uid}))


class FakeRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def normal(self, obj: dict[str, Any], reason: str, message: str) -> None:
        self.events.append(("Normal", reason, message))

    def warning(self, obj: dict[str, Any], reason: str, message: str) -> None:
        self.events.append(("Warning", reason, message))


class Harness:
    def __init__(self) -> None:
        self.api = FakeApi()
        self.store = Store()
        self.registries = Store()
        self.secrets = Store()
        self.recorder = FakeRecorder()
        self.now = NOW
        self.reconciler = CARootReconciler(
            cast(Client, self.api),
            self.store,
            cast(EventRecorder, self.recorder),
            NAMESPACE,
            now=lambda: self.now,
            key_size=KEY_SIZE,
            overlap=OVERLAP,
            registries=self.registries,
            secrets=self.secrets,
        )

    def reconcile(self) -> Any:
        return self.reconciler.reconcile(Request(NAMESPACE, c.ROOT_CA_SECRET_NAME))


@pytest.fixture
def harness() -> Harness:
    return Harness()


def written_ca(obj: dict[str, Any]) -> pki.ParsedBundle:
    parsed = pki.parse_tls_secret_data(obj["data"])
    assert not isinstance(parsed, pki.PkiError)
    return parsed


def test_creates_the_ca_and_requeues_at_its_renewal_time(harness: Harness) -> None:
    result = harness.reconcile()
    [(verb, obj)] = harness.api.calls
    assert verb == "create"
    assert obj["metadata"]["labels"] == MANAGED
    parsed = written_ca(obj)
    assert pki.is_ca(parsed.cert)
    assert parsed.cert.subject.rfc4514_string() == "CN=image-registry-operator.caroot.local"
    expected = (pki.renewal_time(parsed.cert) - NOW + RENEWAL_MARGIN).total_seconds()
    assert result.requeue_after == pytest.approx(expected)
    assert [e[:2] for e in harness.recorder.events] == [("Normal", "CreatedRootCA")]


def test_keeps_a_valid_ca_without_writing(harness: Harness) -> None:
    bundle = ca(NOW - timedelta(days=100))
    harness.store.upsert(secret(bundle))
    result = harness.reconcile()
    assert harness.api.calls == []
    parsed = pki.parse_bundle(bundle)
    assert not isinstance(parsed, pki.PkiError)
    assert result.requeue_after == pytest.approx(
        (pki.renewal_time(parsed.cert) - NOW + RENEWAL_MARGIN).total_seconds()
    )


def test_at_the_renewal_time_a_rollover_distributes_the_next_ca_beside_the_current_one(
    harness: Harness,
) -> None:
    bundle = ca(NOW - timedelta(days=100))
    harness.store.upsert(secret(bundle, labels={**MANAGED, "extra": "kept"}))
    parsed = pki.parse_bundle(bundle)
    assert not isinstance(parsed, pki.PkiError)
    harness.now = pki.renewal_time(parsed.cert) + timedelta(seconds=1)
    harness.reconcile()
    [(verb, obj)] = harness.api.calls
    assert verb == "update"
    assert obj["metadata"]["resourceVersion"] == "7"  # a concurrent change fails with Conflict
    assert obj["metadata"]["labels"] == {**MANAGED, "extra": "kept"}
    assert obj["metadata"]["annotations"][c.ANNOTATION_ROLLOVER_PHASE] == c.ROLLOVER_DISTRIBUTING
    assert written_ca(obj).cert == parsed.cert  # still signing
    trusted = pki.bundle_certs(base64.b64decode(obj["data"]["ca.crt"]))
    following = pki.bundle_certs(base64.b64decode(obj["data"][c.SECRET_KEY_NEXT_CERT]))
    assert trusted == [parsed.cert, *following] and len(following) == 1
    assert [e[1] for e in harness.recorder.events] == ["RootCARollover"]

    # Waiting for the overlap: said once on the Secret, not on every look.
    harness.store.upsert({**obj, "metadata": {**obj["metadata"], "resourceVersion": "8"}})
    harness.api.calls.clear()
    harness.now += timedelta(minutes=1)
    harness.reconcile()
    [(verb, waiting)] = harness.api.calls
    assert (
        verb == "update"
        and "OPERATOR_TRUST_OVERLAP" in waiting["metadata"]["annotations"][c.ANNOTATION_ROLLOVER_WAITING]
    )
    harness.store.upsert(waiting)
    harness.api.calls.clear()
    harness.reconcile()
    assert harness.api.calls == []


def test_a_managed_secret_of_another_type_is_replaced_by_delete_and_create(harness: Harness) -> None:
    harness.store.upsert(secret(ca(), type="Opaque"))
    harness.reconcile()
    assert [verb for verb, _ in harness.api.calls] == ["delete", "create"]
    assert harness.api.calls[0][1] == {"name": c.ROOT_CA_SECRET_NAME, "uid": "uid-1"}


def test_adopts_a_user_ca_untouched_and_reports_it_once(harness: Harness) -> None:
    harness.store.upsert(secret(ca(), labels={}))
    first = harness.reconcile()
    second = harness.reconcile()
    assert harness.api.calls == []
    assert first.requeue_after == second.requeue_after > 0
    assert [e[:2] for e in harness.recorder.events] == [("Normal", "AdoptedRootCA")]


def test_refuses_an_invalid_user_secret_once_without_raising_and_rechecks_later(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    harness.store.upsert(secret(None, labels={}, data=BROKEN))
    results = [harness.reconcile() for _ in range(3)]
    assert harness.api.calls == []
    assert all(result.requeue_after == REFUSED_RECHECK.total_seconds() for result in results)
    [event] = harness.recorder.events
    assert event[:2] == ("Warning", "InvalidRootCA")
    assert "refusing to overwrite" in event[2] and "tls.crt" in event[2]
    assert capsys.readouterr().out.count("refusing to overwrite") == 1  # one log line, not one per retry

    # The user changes the secret (new resourceVersion) but it is still broken: reported again.
    changed = secret(None, labels={}, data=BROKEN)
    changed["metadata"]["resourceVersion"] = "8"
    harness.store.upsert(changed)
    harness.reconcile()
    assert len(harness.recorder.events) == 2


def test_a_concurrent_creation_is_retried_on_fresh_data(harness: Harness) -> None:
    harness.api.fail_create = AlreadyExists(409, "AlreadyExists", "exists")
    with pytest.raises(ReconcileError):
        harness.reconcile()


def test_a_conflicting_renewal_propagates_for_a_retry(harness: Harness) -> None:
    harness.store.upsert(secret(None, data=BROKEN))

    def conflict(resource: Any, obj: dict[str, Any]) -> dict[str, Any]:
        raise Conflict(409, "Conflict", "modified")

    harness.api.update = conflict  # type: ignore[method-assign]
    with pytest.raises(Conflict):
        harness.reconcile()


def test_ignores_requests_for_other_objects(harness: Harness) -> None:
    assert harness.reconciler.reconcile(Request(NAMESPACE, "other")) is None
    assert harness.reconciler.reconcile(Request("elsewhere", c.ROOT_CA_SECRET_NAME)) is None
    assert harness.api.calls == []


def registry_status(name: str, *, not_ready_since: datetime | None, authorities: list[str]) -> dict[str, Any]:
    conditions = []
    if not_ready_since is not None:
        conditions = [
            {
                "type": "Ready",
                "status": "False",
                "reason": "InvalidSecret",
                "message": "x",
                "lastTransitionTime": not_ready_since.isoformat(),
            }
        ]
    trust = {"authorities": [{"fingerprint": fp, "since": NOW.isoformat()} for fp in authorities]}
    return {
        "metadata": {"name": name, "namespace": "team"},
        "spec": {},
        "status": {"hostname": f"{name}.team.svc", "conditions": conditions, "trust": trust},
    }


def pull_secret(hostname: str, ca_pem: bytes) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "team",
            "name": f"imagepullsecret-{hostname}",
            "ownerReferences": [{"apiVersion": f"{c.GROUP}/v1alpha1", "kind": "ImagePullSecret"}],
        },
        "data": {
            "ca.crt": base64.b64encode(ca_pem).decode(),
            c.SECRET_KEY_REGISTRY: base64.b64encode(hostname.encode()).decode(),
        },
    }


@pytest.mark.parametrize(("not_ready_for", "holds"), [(timedelta(minutes=10), True), (2 * OVERLAP, False)])
def test_a_registry_not_ready_for_longer_than_the_overlap_does_not_hold_the_rollover(
    harness: Harness, not_ready_for: timedelta, holds: bool
) -> None:
    """Its reconciles fail, so it never lists the next CA and its Secrets keep the current one; it
    must not hold every registry's CA renewal (it distributes the new CA itself once fixed)."""
    bundle = ca(NOW - timedelta(days=100))
    rotate = secret(bundle)
    rotate["metadata"]["annotations"] = {c.ANNOTATION_ROTATE: "now"}
    harness.store.upsert(rotate)
    harness.reconcile()
    [(_, distributing)] = harness.api.calls
    next_fp = pki.cert_fingerprint(
        pki.bundle_certs(base64.b64decode(distributing["data"][c.SECRET_KEY_NEXT_CERT]))[0]
    )
    current_fp = pki.cert_fingerprint(pki.bundle_certs(bundle.cert_pem)[0])
    harness.store.upsert({**distributing, "metadata": {**distributing["metadata"], "resourceVersion": "8"}})
    harness.now = NOW + OVERLAP + timedelta(seconds=1)
    harness.registries.upsert(
        registry_status("healthy", not_ready_since=None, authorities=[current_fp, next_fp])
    )
    harness.registries.upsert(
        registry_status("broken", not_ready_since=harness.now - not_ready_for, authorities=[current_fp])
    )
    harness.secrets.upsert(pull_secret("broken.team.svc", bundle.cert_pem))
    harness.api.calls.clear()
    harness.recorder.events.clear()
    harness.reconcile()
    [(_, written)] = harness.api.calls
    phase = written["metadata"]["annotations"][c.ANNOTATION_ROLLOVER_PHASE]
    if holds:
        assert phase == c.ROLLOVER_DISTRIBUTING
        assert "team/broken" in written["metadata"]["annotations"][c.ANNOTATION_ROLLOVER_WAITING]
    else:
        assert phase == c.ROLLOVER_RETIRING
        [(_, _, message)] = harness.recorder.events
        assert "not waiting for 1 registries" in message and "team/broken" in message
