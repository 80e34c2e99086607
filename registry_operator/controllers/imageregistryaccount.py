"""ImageRegistryAccount: delete every account whose TTL has passed (REFERENCE-BEHAVIOUR §3.4).

An account with `spec.ttl` expires at `creationTimestamp + ttl`. Until then the reconcile requeues
itself for exactly that moment (plus a small slack); afterwards it deletes the account, conditional
on its uid, so an account re-created under the same name in between is never deleted by mistake
(it gets a reconcile of its own). Accounts without a TTL (static, user-created ones) are left alone.
This applies to every account, operator-generated or not.

The authn sidecar already refuses expired accounts at login; deleting them keeps the namespace tidy
and makes the expiry visible to users. Until then the Ready condition of an account made by hand says
until when it is valid (written only when that changes, so a steady state makes no writes). Accounts
issued for an ImagePushSecret or ImagePullSecret get no status: their printer columns (TTL, Age) say
the same, and the write would cost one request per issued credential.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Final

import structlog

from registry_operator.api import constants as c
from registry_operator.api.imageregistryaccount import ImageRegistryAccountStatus
from registry_operator.config import Settings
from registry_operator.controllers.common import EventSink, Object, now_utc, parse_time
from registry_operator.controllers.imagesecret_desired import account_ttl, is_issued_account
from registry_operator.controllers.resources import IMAGE_REGISTRY_ACCOUNTS
from registry_operator.controllers.status import ConditionValue, read_status, update_status
from registry_operator.goduration import DurationError
from registry_operator.kube import objects
from registry_operator.kube.cache import Store
from registry_operator.kube.client import Client
from registry_operator.kube.controller import Controller, Request, Result
from registry_operator.kube.errors import Conflict, NotFound
from registry_operator.kube.manager import Manager

log = structlog.get_logger(__name__)

CONTROLLER_NAME: Final = "imageregistryaccount"
# creationTimestamp has whole seconds and timers may fire a little early: the requeue lands this
# much after the expiry, so the pass finds the account expired instead of requeueing once more.
EXPIRY_SLACK_SECONDS: Final = 0.5
WORKERS: Final = 2


class AccountExpiryReconciler:
    def __init__(
        self,
        client: Client,
        accounts: Store,
        events: EventSink,
        *,
        now: Callable[[], datetime] = now_utc,
        slack_seconds: float = EXPIRY_SLACK_SECONDS,
    ) -> None:
        self.client = client
        self.accounts = accounts
        self.events = events
        self.now = now
        self.slack_seconds = slack_seconds

    def reconcile(self, request: Request) -> Result | None:
        account = self.accounts.get_by_name(request.namespace, request.name)
        if account is None or objects.is_deleting(account):
            return None
        try:
            ttl = account_ttl(account)
        except DurationError:
            # The CRD schema only admits Go durations, so this is an old or hand-made object.
            log.warning(
                "account has an unreadable spec.ttl; it never expires", ttl=str(account["spec"]["ttl"])
            )
            self._report(
                account,
                ConditionValue.false(
                    c.REASON_INVALID_SPEC, "spec.ttl is not a Go duration such as 24h or 90m"
                ),
            )
            return None
        created = parse_time(objects.creation_timestamp(account))
        issued = is_issued_account(account)
        if ttl is None or created is None:
            if not issued:
                self._report(
                    account, ConditionValue.true(c.REASON_AVAILABLE, "no spec.ttl: valid until deleted")
                )
            return None  # a static account
        expiry = created + ttl
        remaining = (expiry - self.now()).total_seconds()
        if remaining >= 0:  # expired means now > expiry, as the authn sidecar and the original define it
            if not issued:
                self._report(
                    account, ConditionValue.true(c.REASON_AVAILABLE, f"valid until {expiry.isoformat()}")
                )
            return Result(requeue_after=remaining + self.slack_seconds)
        try:
            self.client.delete(
                IMAGE_REGISTRY_ACCOUNTS,
                request.name,
                request.namespace,
                uid=objects.uid(account),
                missing_ok=True,
            )
        except Conflict:
            # Another account of that name replaced this one; its own event brings it here.
            return None
        log.info("deleted expired account", expired_at=expiry.isoformat())
        self.events.normal(
            account,
            c.REASON_EXPIRED,
            f"Deleted: its TTL {account['spec']['ttl']} ended at {expiry.isoformat()}",
        )
        return None

    def _report(self, account: Object, ready: ConditionValue) -> None:
        status = read_status(ImageRegistryAccountStatus, account)
        with contextlib.suppress(NotFound):  # deleted meanwhile: nothing left to report on
            update_status(self.client, IMAGE_REGISTRY_ACCOUNTS, account, status, self.now(), ready)


def setup(manager: Manager, settings: Settings) -> None:
    accounts = manager.informers.informer(IMAGE_REGISTRY_ACCOUNTS, namespace=settings.watch_namespace or None)
    reconciler = AccountExpiryReconciler(
        manager.client, accounts.store, manager.event_recorder(CONTROLLER_NAME)
    )
    controller = Controller(CONTROLLER_NAME, reconciler, max_concurrent_reconciles=WORKERS)
    controller.watch_for(accounts)
    manager.add_controller(controller)
