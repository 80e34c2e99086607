"""Leader election state machine on a fake clock and an in-memory lock."""

from __future__ import annotations

import copy
import itertools
import queue
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from registry_operator.kube import metrics
from registry_operator.kube.client import Client
from registry_operator.kube.clock import FakeClock
from registry_operator.kube.errors import (
    AlreadyExists,
    Conflict,
    ConnectionFailed,
    DeadlineExceeded,
    NotFound,
    ServerError,
)
from registry_operator.kube.leaderelection import (
    ElectionOutcome,
    LeaderElectionConfig,
    LeaderElectionRecord,
    LeaderElector,
    LeaseLock,
    default_identity,
)
from registry_operator.kube.watch import WatchEvent

_leases = itertools.count()


class FakeLock:
    """An in-memory Lease with resourceVersion checks, shared by several electors."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.fail: Exception | None = None
        self.calls: list[str] = []

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if self.fail is not None:
            raise self.fail

    def get(self, deadline: float) -> tuple[LeaderElectionRecord, dict[str, Any]]:
        self._check("get")
        if self.lease is None:
            raise NotFound(404, "NotFound", "lease not found")
        return LeaderElectionRecord.from_lease(self.lease), copy.deepcopy(self.lease)

    def create(self, record: LeaderElectionRecord, deadline: float) -> dict[str, Any]:
        self._check("create")
        if self.lease is not None:
            raise AlreadyExists(409, "AlreadyExists", "exists")
        return self._write(record)

    def update(
        self, current: dict[str, Any], record: LeaderElectionRecord, deadline: float
    ) -> dict[str, Any]:
        self._check("update")
        if self.lease is None or current["metadata"]["resourceVersion"] != str(self.rv):
            raise Conflict(409, "Conflict", "the object has been modified")
        return self._write(record)

    def _write(self, record: LeaderElectionRecord) -> dict[str, Any]:
        self.rv += 1
        self.lease = {
            "metadata": {"name": "lease", "resourceVersion": str(self.rv)},
            "spec": record.to_spec(),
        }
        return copy.deepcopy(self.lease)

    def held_by(self, holder: str, duration: int = 15, renewed: datetime | None = None) -> None:
        """Another replica writes the lease (its timestamps are deliberately nonsense)."""
        stamp = renewed or datetime(2000, 1, 1, tzinfo=UTC)
        transitions = LeaderElectionRecord.from_lease(self.lease).leader_transitions if self.lease else 0
        self._write(LeaderElectionRecord(holder, duration, stamp, stamp, transitions))

    @property
    def spec(self) -> dict[str, Any]:
        assert self.lease is not None
        spec: dict[str, Any] = self.lease["spec"]
        return spec


def make_elector(
    lock: FakeLock, clock: FakeClock, identity: str = "me", lease_name: str | None = None, **kwargs: Any
) -> LeaderElector:
    config = LeaderElectionConfig(lease_name or f"lease-{next(_leases)}", "ns", identity=identity)
    return LeaderElector(config, lock, clock=clock, **kwargs)


def master_status(elector: LeaderElector) -> float:
    return metrics.sample_value("leader_election_master_status", {"name": elector.config.lease_name})


# --- configuration ----------------------------------------------------------------------------------
def test_identity_is_the_pod_name_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "registry-operator-7d9f-abcde")
    assert default_identity() == "registry-operator-7d9f-abcde"
    assert LeaderElectionConfig("lease", "ns").identity == "registry-operator-7d9f-abcde"
    monkeypatch.setenv("POD_NAME", "")
    assert re.fullmatch(r".+_[0-9a-f-]{36}", default_identity())


def test_write_margin_defaults_to_the_time_a_leader_may_keep_failing() -> None:
    assert LeaderElectionConfig("lease", "ns").work_margin == 3.0
    assert LeaderElectionConfig("lease", "ns", write_margin=5).work_margin == 5
    with pytest.raises(ValueError, match="write margin"):
        LeaderElectionConfig("lease", "ns", write_margin=15)


def test_defaults_and_validation() -> None:
    config = LeaderElectionConfig("lease", "ns")
    assert (config.lease_duration, config.renew_deadline, config.retry_period, config.jitter_factor) == (
        15.0,
        10.0,
        2.0,
        1.2,
    )
    assert config.request_timeout == 5.0
    assert re.fullmatch(r".+_[0-9a-f-]{36}", config.identity)
    assert default_identity() != default_identity()
    with pytest.raises(ValueError, match="greater than the renew deadline"):
        LeaderElectionConfig("lease", "ns", lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match="retry period"):
        LeaderElectionConfig("lease", "ns", renew_deadline=2.4, retry_period=2)
    with pytest.raises(ValueError, match="positive"):
        LeaderElectionConfig("lease", "ns", retry_period=0)
    with pytest.raises(ValueError):
        LeaderElectionConfig("", "ns")


# --- acquire and renew ------------------------------------------------------------------------------
def test_acquires_a_missing_lease() -> None:
    lock, clock = FakeLock(), FakeClock()
    started: list[bool] = []
    elector = make_elector(lock, clock, on_started_leading=lambda: started.append(True))
    assert master_status(elector) == 0
    assert elector.tick() == 2.0
    assert elector.is_leader()
    assert started == [True]
    assert master_status(elector) == 1
    assert lock.spec["holderIdentity"] == "me"
    assert lock.spec["leaseDurationSeconds"] == 15
    assert lock.spec["leaseTransitions"] == 0
    assert lock.spec["acquireTime"] == lock.spec["renewTime"] == "2030-01-01T00:00:00.000000Z"


def test_renewal_moves_renew_time_only_and_skips_the_read() -> None:
    lock, clock = FakeLock(), FakeClock()
    elector = make_elector(lock, clock)
    elector.tick()
    acquired = lock.spec["acquireTime"]
    lock.calls.clear()
    clock.step(2)
    assert elector.tick() == 2.0
    assert lock.calls == ["update"], "a valid leader renews without a GET"
    assert lock.spec["acquireTime"] == acquired
    assert lock.spec["renewTime"] == "2030-01-01T00:00:02.000000Z"
    assert lock.spec["leaseTransitions"] == 0


def test_another_holders_valid_lease_blocks_until_it_expires_by_observed_time() -> None:
    lock, clock = FakeLock(), FakeClock()
    lock.held_by("other")  # renewTime in the year 2000: must not be trusted
    elector = make_elector(lock, clock, rand=lambda: 1.0)
    assert elector.tick() == pytest.approx(4.4), "follower polls every retry period + jitter 1.2"
    assert not elector.is_leader()
    assert elector.leader_identity == "other"
    clock.step(14.9)
    elector.tick()
    assert not elector.is_leader(), "15 s have not passed since we first saw this record"
    clock.step(0.2)
    elector.tick()
    assert elector.is_leader()
    assert lock.spec["holderIdentity"] == "me"
    assert lock.spec["leaseTransitions"] == 1


def test_a_holder_that_keeps_renewing_keeps_the_lease() -> None:
    lock, clock = FakeLock(), FakeClock()
    elector = make_elector(lock, clock)
    for second in range(0, 60, 2):
        lock.held_by("other", renewed=datetime(2000, 1, 1, 0, 0, second % 60, tzinfo=UTC))
        elector.tick()
        assert not elector.is_leader()
        clock.step(2)


def test_validity_uses_the_records_lease_duration() -> None:
    lock, clock = FakeLock(), FakeClock()
    lock.held_by("other", duration=60)
    elector = make_elector(lock, clock)
    elector.tick()
    clock.step(30)
    elector.tick()
    assert not elector.is_leader()
    clock.step(30.1)
    elector.tick()
    assert elector.is_leader()


def test_released_lease_is_taken_at_once() -> None:
    lock, clock = FakeLock(), FakeClock()
    lock.held_by("")
    elector = make_elector(lock, clock)
    elector.tick()
    assert elector.is_leader()


def test_losing_the_update_race_does_not_make_us_leader() -> None:
    lock, clock = FakeLock(), FakeClock()
    lock.held_by("")
    elector = make_elector(lock, clock)
    real_update = lock.update

    def racing_update(
        current: dict[str, Any], record: LeaderElectionRecord, deadline: float
    ) -> dict[str, Any]:
        lock.held_by("faster")  # someone else wrote between our GET and our UPDATE
        return real_update(current, record, deadline)

    lock.update = racing_update  # type: ignore[method-assign]
    elector.tick()
    assert not elector.is_leader()
    assert lock.spec["holderIdentity"] == "faster"


# --- losing leadership ------------------------------------------------------------------------------
def test_leadership_is_lost_when_no_renewal_succeeds_within_the_renew_deadline() -> None:
    lock, clock = FakeLock(), FakeClock()
    stopped: list[bool] = []
    elector = make_elector(lock, clock, on_stopped_leading=lambda: stopped.append(True))
    elector.tick()
    clock.step(2)
    lock.fail = ServerError(503, "ServiceUnavailable", "apiserver down")
    failing_since = clock.now()
    while elector.is_leader():
        delay = elector.tick()
        if elector.is_leader():
            assert clock.now() - failing_since < 10
            clock.step(delay)
    assert clock.now() - failing_since == pytest.approx(10)
    assert stopped == [True]
    assert master_status(elector) == 0


def test_leadership_is_lost_at_once_when_another_holder_is_seen() -> None:
    lock, clock = FakeLock(), FakeClock()
    elector = make_elector(lock, clock)
    elector.tick()
    lock.held_by("usurper")  # e.g. our renewals stalled long enough for the lease to look expired
    clock.step(2)
    elector.tick()
    assert not elector.is_leader()
    assert clock.now() == pytest.approx(1002), "no waiting for the renew deadline"


def test_a_renewal_that_succeeds_before_the_deadline_keeps_leadership() -> None:
    lock, clock = FakeLock(), FakeClock()
    elector = make_elector(lock, clock)
    elector.tick()
    for _ in range(3):  # fail for 8 s, then recover, three times in a row
        lock.fail = ServerError(500, "InternalError", "blip")
        for _ in range(5):
            clock.step(2)
            elector.tick()
        lock.fail = None
        clock.step(2)
        elector.tick()
        assert elector.is_leader()


# --- release ----------------------------------------------------------------------------------------
def test_release_empties_the_lease_and_a_standby_takes_it_immediately() -> None:
    lock, clock = FakeLock(), FakeClock()
    leader = make_elector(lock, clock, identity="leader")
    standby = make_elector(lock, clock, identity="standby")
    leader.tick()
    standby.tick()
    assert not standby.is_leader()
    assert leader.release()
    assert not leader.is_leader()
    assert master_status(leader) == 0
    assert lock.spec["holderIdentity"] == ""
    assert lock.spec["leaseDurationSeconds"] == 1
    assert lock.spec["leaseTransitions"] == 0
    standby.tick()
    assert standby.is_leader()
    assert lock.spec["leaseTransitions"] == 1


def test_release_is_a_no_op_for_a_follower() -> None:
    lock, clock = FakeLock(), FakeClock()
    lock.held_by("other")
    follower = make_elector(lock, clock)
    follower.tick()
    lock.calls.clear()
    assert follower.release() is False
    assert lock.calls == []
    assert lock.spec["holderIdentity"] == "other"


def test_follower_wakes_at_the_observed_expiry_instead_of_its_next_poll() -> None:
    lock, clock = FakeLock(), FakeClock()
    lock.held_by("other")
    follower = make_elector(lock, clock, rand=lambda: 1.0)
    follower.tick()
    clock.step(13.2)  # three polls of 4.4 s
    follower.tick()
    assert follower.wake_time(clock.now() + 4.4) == pytest.approx(clock.now() + 1.8 + 0.01)


# --- run loop ---------------------------------------------------------------------------------------
def test_run_returns_stopped_and_releases_after_stop() -> None:
    lock, clock = FakeLock(), FakeClock()
    elector: LeaderElector | None = None

    def started() -> None:
        assert elector is not None
        elector.stop()

    elector = make_elector(lock, clock, on_started_leading=started)
    assert elector.run() is ElectionOutcome.STOPPED
    assert lock.spec["holderIdentity"] == ""


def test_run_returns_lost_when_renewals_fail() -> None:
    lock, clock = FakeLock(), FakeClock()

    def started() -> None:
        lock.fail = ServerError(503, "ServiceUnavailable", "down")

    elector = make_elector(lock, clock, on_started_leading=started)
    outcome: list[ElectionOutcome] = []
    runner = threading.Thread(target=lambda: outcome.append(elector.run()))
    runner.start()
    for _ in range(1000):
        if not runner.is_alive():
            break
        clock.step(0.5)
        runner.join(0.005)
    runner.join(5)
    assert outcome == [ElectionOutcome.LOST]
    assert elector.lost


class WatchableLock(FakeLock):
    """A FakeLock whose watch() delivers events the test pushes."""

    def __init__(self) -> None:
        super().__init__()
        self.events: queue.Queue[WatchEvent | None] = queue.Queue()

    def watch(self, timeout_seconds: int) -> Any:
        lock = self

        class Stream:
            def __enter__(self) -> Stream:
                return self

            def __exit__(self, *exc: object) -> None:
                pass

            def close(self) -> None:
                lock.events.put(None)

            def __iter__(self) -> Iterator[WatchEvent]:
                while (event := lock.events.get()) is not None:
                    yield event

        return Stream()


def test_follower_watch_observes_renewals_as_they_happen() -> None:
    lock, clock = WatchableLock(), FakeClock()
    lock.held_by("other")
    follower = make_elector(lock, clock)
    runner = threading.Thread(target=follower.run)
    runner.start()
    try:
        deadline = threading.Event()
        for _ in range(500):  # wait for the first poll
            if follower.leader_identity == "other":
                break
            deadline.wait(0.002)
        clock.step(3)
        lock.held_by("other", renewed=datetime(2000, 1, 1, 0, 0, 3, tzinfo=UTC))
        assert lock.lease is not None
        lock.events.put(WatchEvent("MODIFIED", copy.deepcopy(lock.lease)))
        for _ in range(500):
            if follower.wake_time(1e9) == pytest.approx(clock.now() + 15.01):
                break
            deadline.wait(0.002)
        # Observed at t=3 through the watch: valid until t=18, not t=15.
        assert follower.wake_time(1e9) == pytest.approx(clock.now() + 15.01)
    finally:
        follower.stop()
        clock.step(1)
        runner.join(5)
    assert not runner.is_alive()


# --- hung lease calls (issue 17) ----------------------------------------------------------------------
class HangingLock(FakeLock):
    """A partitioned API server: each call hangs for its whole timeout, then fails.

    The timeout is what the real LeaseLock would send: min(request timeout, deadline - now). With
    `reads_answer`, GETs still answer at once (only writes hang), so one attempt makes
    PUT, GET, PUT: the case where per-call timeouts used to add up past the lease.
    """

    def __init__(self, clock: FakeClock, request_timeout: float) -> None:
        super().__init__()
        self.clock = clock
        self.request_timeout = request_timeout
        self.hanging = False
        self.reads_answer = False
        self.ended: list[tuple[str, float, float]] = []  # call, end time, its deadline

    def _hang(self, call: str, deadline: float) -> None:
        remaining = deadline - self.clock.now()
        if remaining <= 0:
            raise DeadlineExceeded(f"{call}: not sent")
        self.clock.step(min(self.request_timeout, remaining))
        self.ended.append((call, self.clock.now(), deadline))
        raise ConnectionFailed(f"{call}: timed out")

    def get(self, deadline: float) -> tuple[LeaderElectionRecord, dict[str, Any]]:
        if self.hanging and not self.reads_answer:
            self._hang("get", deadline)
        return super().get(deadline)

    def update(
        self, current: dict[str, Any], record: LeaderElectionRecord, deadline: float
    ) -> dict[str, Any]:
        if self.hanging:
            self._hang("update", deadline)
        return super().update(current, record, deadline)


@pytest.mark.parametrize("reads_answer", [False, True], ids=["every call hangs", "writes hang"])
@pytest.mark.parametrize("hang_after", [0.0, 6.0], ids=["at once", "after 6s of fast failures"])
def test_hung_lease_calls_end_at_the_round_deadline_and_the_leader_gives_up_in_time(
    reads_answer: bool, hang_after: float
) -> None:
    clock = FakeClock()
    config = LeaderElectionConfig(f"lease-{next(_leases)}", "ns", identity="me")
    lock = HangingLock(clock, config.request_timeout)
    lost_at: list[float] = []
    elector = LeaderElector(config, lock, clock=clock, on_stopped_leading=lambda: lost_at.append(clock.now()))
    elector.tick()
    assert elector.is_leader()
    last_renewal = clock.now()
    assert elector.work_deadline() == last_renewal + 15 - 3

    clock.step(elector.tick())  # one more successful renewal
    last_renewal = clock.now() - 2.0
    lock.fail = ServerError(503, "ServiceUnavailable", "apiserver down")  # fast failures first
    round_start = clock.now()
    while elector.is_leader():
        if clock.now() - round_start >= hang_after:
            lock.fail, lock.hanging, lock.reads_answer = None, True, reads_answer
        delay = elector.tick()
        if elector.is_leader():
            assert elector.work_deadline() == last_renewal + 12, "only a success moves the work deadline"
            clock.step(delay)

    assert lock.ended, "the lease calls did hang"
    round_deadline = round_start + config.renew_deadline
    assert all(end <= deadline <= round_deadline for _, end, deadline in lock.ended)
    assert lost_at == [clock.now()]
    print(
        f"\nleader gave up {lost_at[0] - round_start:.1f}s into the renew round, "
        f"{lost_at[0] - last_renewal:.1f}s after its last successful renewal "
        f"(lease {config.lease_duration:g}s)"
    )
    assert lost_at[0] - round_start <= config.renew_deadline
    assert lost_at[0] - last_renewal < config.lease_duration
    assert elector.work_deadline() == float("-inf"), "no request of the deposed leader is sent any more"


def test_the_lease_lock_turns_the_round_deadline_into_request_timeouts() -> None:
    clock = FakeClock()
    sent: list[float] = []

    class RecordingClient(Client):
        def __init__(self) -> None:  # no server: only the timeout each call would be sent with
            pass

        def get(
            self, resource: Any, name: str, namespace: str | None = None, **kwargs: Any
        ) -> dict[str, Any]:
            sent.append(kwargs["timeout"])
            return {"metadata": {"name": name}, "spec": {"holderIdentity": "x"}}

    lock = LeaseLock(RecordingClient(), "ns", "lease", request_timeout=5.0, clock=clock)
    lock.get(clock.now() + 60)
    lock.get(clock.now() + 1.5)
    assert sent == [5.0, 1.5]
    with pytest.raises(DeadlineExceeded):
        lock.get(clock.now())
    assert len(sent) == 2, "a call whose deadline has passed is not sent"
