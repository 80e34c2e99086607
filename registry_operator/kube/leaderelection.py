"""Leader election on a coordination.k8s.io/v1 Lease, with client-go semantics.

- Defaults: lease 15 s, renew deadline 10 s, retry period 2 s, jitter factor 1.2; validated as
  lease > renew deadline > 1.2 x retry period > 0.
- Timestamps in the Lease are never trusted. A lease is valid while
  `observed_time + spec.leaseDurationSeconds > now`, where observed_time is our own monotonic time
  of the moment we first saw the current record. This tolerates any clock offset between replicas.
- A follower also watches the Lease between its polls, so it sees renewals (and releases) as they
  happen: its observed time is then close to the holder's write and failover takes about one lease
  duration after the holder's last renewal, instead of up to one more poll period.
- The leader renews every retry period. A renew round (the attempts since the last success) runs
  under one absolute deadline, round start + renew deadline, that bounds every lease request in
  it: a hung call ends at the deadline, never later, and a call is not sent once it has passed. The
  lease lock's client must not retry at the transport level (`retry.NO_TRANSPORT_RETRY`). If no
  renewal succeeds by the deadline, leadership is lost (the caller must stop all guarded work at
  once).
- `work_deadline()` is the deadline for the leader's own requests (its reconcilers'): the start of
  the last successful renewal + lease duration - `write_margin`, so that no request of this leader
  outlives the moment its lease could pass to another replica; once not leading it has passed.
- On a graceful stop the leader releases the lease (holderIdentity "" and leaseDurationSeconds 1),
  so a standby can take over immediately.

There is no fencing: like client-go, two leaders can briefly coexist if clocks run at very
different rates. `tick()` is the whole state machine, one step at a time, for tests.
"""

from __future__ import annotations

import enum
import logging
import os
import random
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from registry_operator.kube import metrics
from registry_operator.kube.cache import Object
from registry_operator.kube.client import Client
from registry_operator.kube.clock import REAL_CLOCK, Clock
from registry_operator.kube.errors import ApiError, Conflict, DeadlineExceeded, NotFound
from registry_operator.kube.resources import LEASES

log = logging.getLogger(__name__)


def default_identity() -> str:
    """$POD_NAME (so a Lease holder names its pod), else hostname_uuid, unique per process."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4()}"


@dataclass(frozen=True)
class LeaderElectionConfig:
    lease_name: str
    namespace: str
    identity: str = field(default_factory=default_identity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    jitter_factor: float = 1.2
    release_on_cancel: bool = True
    # How long before the lease could pass to another replica the leader's own requests must end
    # (None: lease duration - renew deadline - retry period, at least 1 s; with the defaults 3 s,
    # i.e. they end no later than a leader that stops renewing gives up).
    write_margin: float | None = None

    def __post_init__(self) -> None:
        if not self.lease_name or not self.namespace:
            raise ValueError("leader election needs a lease name and a namespace")
        if not self.identity:
            raise ValueError("leader election identity must not be empty")
        if min(self.lease_duration, self.renew_deadline, self.retry_period) <= 0:
            raise ValueError("lease duration, renew deadline and retry period must be positive")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("lease duration must be greater than the renew deadline")
        if self.renew_deadline <= self.jitter_factor * self.retry_period:
            raise ValueError(f"renew deadline must be greater than {self.jitter_factor} x retry period")
        if not 0 < self.work_margin < self.lease_duration:
            raise ValueError("write margin must be positive and shorter than the lease duration")

    @property
    def work_margin(self) -> float:
        if self.write_margin is not None:
            return self.write_margin
        return max(1.0, self.lease_duration - self.renew_deadline - self.retry_period)

    @property
    def request_timeout(self) -> float:
        """One hung request must not cost the lease: max(renew deadline / 2, 1 s)."""
        return max(self.renew_deadline / 2, 1.0)


# --- the lease record -------------------------------------------------------------------------------
def _format_micro_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_micro_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class LeaderElectionRecord:
    holder_identity: str
    lease_duration_seconds: int
    acquire_time: datetime | None
    renew_time: datetime | None
    leader_transitions: int

    @classmethod
    def from_lease(cls, lease: Object) -> LeaderElectionRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder_identity=spec.get("holderIdentity") or "",
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=_parse_micro_time(spec.get("acquireTime")),
            renew_time=_parse_micro_time(spec.get("renewTime")),
            leader_transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> Object:
        spec: Object = {
            "holderIdentity": self.holder_identity,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "leaseTransitions": self.leader_transitions,
        }
        if self.acquire_time is not None:
            spec["acquireTime"] = _format_micro_time(self.acquire_time)
        if self.renew_time is not None:
            spec["renewTime"] = _format_micro_time(self.renew_time)
        return spec


class ResourceLock(Protocol):
    """Storage of the election record. `get` raises NotFound; writes raise Conflict when stale.

    Every call ends by `deadline` (the elector's clock): sent with a timeout of at most what is
    left of it, not sent at all (DeadlineExceeded) once it has passed.
    """

    def get(self, deadline: float) -> tuple[LeaderElectionRecord, Object]: ...

    def create(self, record: LeaderElectionRecord, deadline: float) -> Object: ...

    def update(self, current: Object, record: LeaderElectionRecord, deadline: float) -> Object: ...


@dataclass(frozen=True)
class LeaseLock:
    """A coordination.k8s.io/v1 Lease as the lock; `watch` lets followers see changes promptly.

    Give it a client without transport retries (`client.with_transport_retry(NO_TRANSPORT_RETRY)`):
    a re-sent lease call would run past the round's deadline. Deadlines are on `clock` (the
    elector's), turned into each request's timeout here: at most `request_timeout`.
    """

    client: Client
    namespace: str
    name: str
    _: KW_ONLY
    request_timeout: float
    clock: Clock = REAL_CLOCK

    def _timeout(self, verb: str, deadline: float) -> float:
        remaining = deadline - self.clock.now()
        if remaining <= 0:
            raise DeadlineExceeded(
                f"{verb} lease {self.namespace}/{self.name}: renew deadline passed, not sent"
            )
        return min(self.request_timeout, remaining)

    def get(self, deadline: float) -> tuple[LeaderElectionRecord, Object]:
        timeout = self._timeout("get", deadline)
        lease = self.client.get(LEASES, self.name, self.namespace, timeout=timeout)
        return LeaderElectionRecord.from_lease(lease), lease

    def create(self, record: LeaderElectionRecord, deadline: float) -> Object:
        body = {"metadata": {"name": self.name, "namespace": self.namespace}, "spec": record.to_spec()}
        return self.client.create(LEASES, body, timeout=self._timeout("create", deadline))

    def update(self, current: Object, record: LeaderElectionRecord, deadline: float) -> Object:
        body = dict(current)
        body["spec"] = {**(current.get("spec") or {}), **record.to_spec()}
        return self.client.update(LEASES, body, timeout=self._timeout("update", deadline))

    def watch(self, timeout_seconds: int) -> Any:
        return self.client.watch(
            LEASES,
            self.namespace,
            field_selector=f"metadata.name={self.name}",
            timeout_seconds=timeout_seconds,
            allow_bookmarks=False,
        )


# --- the elector --------------------------------------------------------------------------------------
class ElectionOutcome(enum.Enum):
    STOPPED = "stopped"  # stop() was called (the lease was released if we held it)
    LOST = "lost"  # we led and failed to renew within the renew deadline


class LeaderElector:
    def __init__(
        self,
        config: LeaderElectionConfig,
        lock: ResourceLock,
        *,
        clock: Clock = REAL_CLOCK,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        on_new_leader: Callable[[str], None] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        """`on_stopped_leading` runs only when leadership is lost, not on a graceful stop."""
        self.config = config
        self._lock = lock
        self._clock = clock
        self._on_started_leading = on_started_leading
        self._on_stopped_leading = on_stopped_leading
        self._on_new_leader = on_new_leader
        self._rand = rand
        self._cond = threading.Condition(threading.RLock())
        self._stop = threading.Event()
        self._leading = False
        self._observed_record: LeaderElectionRecord | None = None
        self._observed_lease: Object | None = None
        self._observed_time = 0.0
        self._reported_leader = ""
        self._renew_round_start: float | None = None
        self._last_renew: float | None = None  # start of the last successful acquire or renewal
        self._lost = False
        self._follow_stream: Any = None
        self._gauge = metrics.LEADER_ELECTION_MASTER_STATUS.labels(name=config.lease_name)
        self._gauge.set(0)

    # --- observation -----------------------------------------------------------------------------
    def _observe(self, record: LeaderElectionRecord, lease: Object) -> None:
        with self._cond:
            if record != self._observed_record:
                self._observed_record = record
                self._observed_time = self._clock.now()
            self._observed_lease = lease
            holder = record.holder_identity
            self._cond.notify_all()
        if holder and holder != self._reported_leader:
            self._reported_leader = holder
            if self._on_new_leader is not None:
                self._on_new_leader(holder)

    def _lease_valid(self, now: float) -> bool:
        record = self._observed_record
        if record is None:
            return False
        return self._observed_time + record.lease_duration_seconds > now

    def is_leader(self) -> bool:
        with self._cond:
            return self._leading

    @property
    def leader_identity(self) -> str:
        """The holder we last observed ("" if none or released)."""
        with self._cond:
            return self._observed_record.holder_identity if self._observed_record else ""

    def work_deadline(self) -> float:
        """The deadline for requests of the leader's work: last renewal + lease - write margin.

        While not leading it has passed (-inf), so such requests are refused without being sent.
        """
        with self._cond:
            if not self._leading or self._last_renew is None:
                return float("-inf")
            return self._last_renew + self.config.lease_duration - self.config.work_margin

    # --- one acquire/renew attempt ---------------------------------------------------------------
    def try_acquire_or_renew(self, deadline: float | None = None) -> bool:
        """One attempt to take or keep the lease, every call ending by `deadline`; True if we hold it.

        Without a deadline, the attempt may take up to the renew deadline.
        """
        started = self._clock.now()
        deadline = deadline if deadline is not None else started + self.config.renew_deadline
        if self._attempt(deadline):
            with self._cond:
                self._last_renew = started
            return True
        return False

    def _attempt(self, deadline: float) -> bool:
        identity = self.config.identity
        now_wall = self._clock.wall()
        desired = LeaderElectionRecord(
            holder_identity=identity,
            lease_duration_seconds=int(self.config.lease_duration),
            acquire_time=now_wall,
            renew_time=now_wall,
            leader_transitions=0,
        )
        with self._cond:
            observed, observed_lease = self._observed_record, self._observed_lease
            fast_path = (
                observed is not None
                and observed_lease is not None
                and observed.holder_identity == identity
                and self._lease_valid(self._clock.now())
            )
        # Fast path: we hold a valid lease; renew it without reading it first.
        if fast_path:
            assert observed is not None and observed_lease is not None
            renewed = replace(
                desired, acquire_time=observed.acquire_time, leader_transitions=observed.leader_transitions
            )
            try:
                self._observe(renewed, self._lock.update(observed_lease, renewed, deadline))
                return True
            except ApiError as error:
                log.info("lease %s: renewing failed, re-reading: %s", self.config.lease_name, error)

        try:
            current, lease = self._lock.get(deadline)
        except NotFound:
            try:
                self._observe(desired, self._lock.create(desired, deadline))
                return True
            except ApiError as error:
                log.info("lease %s: creating failed: %s", self.config.lease_name, error)
                return False
        except ApiError as error:
            log.info("lease %s: reading failed: %s", self.config.lease_name, error)
            return False

        self._observe(current, lease)
        with self._cond:
            held_by_other = (
                current.holder_identity != ""
                and current.holder_identity != identity
                and self._lease_valid(self._clock.now())
            )
        if held_by_other:
            return False

        if current.holder_identity == identity:
            desired = replace(
                desired, acquire_time=current.acquire_time, leader_transitions=current.leader_transitions
            )
        else:
            desired = replace(desired, leader_transitions=current.leader_transitions + 1)
        try:
            self._observe(desired, self._lock.update(lease, desired, deadline))
            return True
        except ApiError as error:
            log.info("lease %s: taking the lease failed: %s", self.config.lease_name, error)
            return False

    # --- the state machine -----------------------------------------------------------------------
    def _follower_delay(self) -> float:
        return self.config.retry_period * (1.0 + self._rand() * self.config.jitter_factor)

    def tick(self) -> float:
        """Run one step; return the seconds to wait before the next one."""
        config = self.config
        if not self.is_leader():
            if self.try_acquire_or_renew():
                with self._cond:
                    self._leading = True
                    self._renew_round_start = None
                self._gauge.set(1)
                log.info("lease %s: became leader as %s", config.lease_name, config.identity)
                if self._on_started_leading is not None:
                    self._on_started_leading()
                return config.retry_period
            return self._follower_delay()

        now = self._clock.now()
        round_start = self._renew_round_start if self._renew_round_start is not None else now
        round_deadline = min(round_start + config.renew_deadline, self.work_deadline())
        if self.try_acquire_or_renew(round_deadline):
            self._renew_round_start = None
            return config.retry_period
        self._renew_round_start = round_start
        now = self._clock.now()
        holder = self.leader_identity
        if holder and holder != config.identity:
            # Someone else took the lease (ours must have looked expired to them): stop at once
            # rather than keep working until the renew deadline.
            self._lose()
            return 0.0
        if now + config.retry_period > round_deadline:
            self._lose()
            return 0.0
        return config.retry_period

    def _lose(self) -> None:
        with self._cond:
            self._leading = False
        self._gauge.set(0)
        log.error(
            "lease %s: leadership lost (no renewal within %ss)",
            self.config.lease_name,
            self.config.renew_deadline,
        )
        if self._on_stopped_leading is not None:
            self._on_stopped_leading()

    @property
    def lost(self) -> bool:
        return self._lost

    def run(self) -> ElectionOutcome:
        """Acquire, then renew, until `stop()` or the loss of leadership. Blocks."""
        watcher = threading.Thread(target=self._follow, name="leader-election-watch", daemon=True)
        watcher.start()
        try:
            while not self._stop.is_set():
                was_leader = self.is_leader()
                delay = self.tick()
                if was_leader and not self.is_leader():
                    self._lost = True
                    return ElectionOutcome.LOST
                self._wait(delay)
            if self.is_leader() and self.config.release_on_cancel:
                self.release()
            return ElectionOutcome.STOPPED
        finally:
            self._stop.set()
            with self._cond:
                self._cond.notify_all()

    def _wait(self, delay: float) -> None:
        """Sleep until the next tick; a follower wakes early when the observed lease expires."""
        with self._cond:
            deadline = self._clock.now() + delay
            while not self._stop.is_set():
                wake_at = self.wake_time(deadline)
                if self._clock.now() >= wake_at:
                    return
                self._clock.wait_until(self._cond, wake_at)

    def wake_time(self, deadline: float) -> float:
        """When to try next: at `deadline`, or earlier if the observed lease expires (or was released)."""
        with self._cond:
            record = self._observed_record
            if self._leading or record is None:
                return deadline
            if not record.holder_identity:
                return self._clock.now()
            expiry = self._observed_time + record.lease_duration_seconds
            return min(deadline, expiry + 0.01)

    def _follow(self) -> None:
        """While following, watch the Lease so renewals are observed when they happen."""
        watch = getattr(self._lock, "watch", None)
        if watch is None:
            return
        while not self._stop.is_set():
            if self.is_leader():
                self._clock.sleep(self.config.retry_period, self._stop)
                continue
            try:
                with watch(60) as stream:
                    self._follow_stream = stream
                    for event in stream:
                        if event.type in ("ADDED", "MODIFIED"):
                            self._observe(LeaderElectionRecord.from_lease(event.object), event.object)
                        if self._stop.is_set() or self.is_leader():
                            break
            except Exception as error:
                log.debug("lease %s: watch ended: %s", self.config.lease_name, error)
                self._clock.sleep(self.config.retry_period, self._stop)

    def stop(self) -> None:
        """Make `run()` return (releasing the lease if we hold it and release_on_cancel is set)."""
        self._stop.set()
        stream = self._follow_stream
        if stream is not None:
            stream.close()
        with self._cond:
            self._cond.notify_all()

    def release(self) -> bool:
        """Give the lease up (holder "", duration 1 s) if we hold it; True if released."""
        with self._cond:
            observed, lease = self._observed_record, self._observed_lease
            was_leading = self._leading
            self._leading = False
        self._gauge.set(0)
        if observed is None or lease is None or observed.holder_identity != self.config.identity:
            return False
        now_wall = self._clock.wall()
        released = LeaderElectionRecord(
            holder_identity="",
            lease_duration_seconds=1,
            acquire_time=now_wall,
            renew_time=now_wall,
            leader_transitions=observed.leader_transitions,
        )
        deadline = self._clock.now() + self.config.request_timeout  # the whole release, retry included
        for _ in range(2):
            try:
                self._observe(released, self._lock.update(lease, released, deadline))
                log.info("lease %s: released", self.config.lease_name)
                return True
            except Conflict:
                # Someone wrote in between: release only if it is still ours.
                try:
                    current, lease = self._lock.get(deadline)
                except ApiError:
                    return False
                if current.holder_identity != self.config.identity:
                    return False
            except ApiError as error:
                log.warning(
                    "lease %s: release failed: %s (was leading: %s)",
                    self.config.lease_name,
                    error,
                    was_leading,
                )
                return False
        return False
