"""Scheduled garbage collection (`spec.garbageCollection`): distribution's `registry garbage-collect`
run as a Job, with the registry read-only for the duration.

Why read-only: the collector marks every blob some manifest references, then sweeps the rest. A push
that lands between the two (a layer uploaded, its manifest not yet written) loses its blobs — the
race distribution's documentation warns about. So each run goes
`Idle → ReadOnly → Collecting → Idle`, recorded in `status.garbageCollection` (the phase is written
before it acts, and each step is idempotent, so an operator restart resumes a run where it was):

1. ReadOnly: the rendered config gets `storage.maintenance.readonly.enabled: true` and the pods roll
   to it (pulls keep working; pushes get 405 while it lasts). The run waits until every pod runs the
   read-only template (`READ_ONLY_TIMEOUT`, then it fails and the registry goes back to read-write).
2. Collecting: a Job runs the collector with the same config and storage (the claim, or the bucket
   with the same credentials from the Secret). It writes a short report to its termination
   message: exit code, the collector's summary line, and, on a volume, its size before and after.
3. Idle: the report becomes `status.garbageCollection.lastRun`; the config goes back to read-write.

Missed runs (operator down) collapse into one, as a CronJob's would. A run only starts when the
schedule fires after the last one (or after the registry was created).
"""

from __future__ import annotations

import contextlib
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import structlog

from registry_operator import cron, dockerauth
from registry_operator.api import constants as c
from registry_operator.api import names
from registry_operator.api.imageregistry import (
    GarbageCollectionRun,
    GarbageCollectionSpec,
    GarbageCollectionStatus,
    ImageRegistrySpec,
)
from registry_operator.controllers.common import Object
from registry_operator.controllers.imageregistry.base import RegistryPart
from registry_operator.controllers.imageregistry.context import (
    CONFIG_KEY_REGISTRY,
    REGISTRY_CONFIG_DIR,
    REGISTRY_CONFIG_FILE,
    STORAGE_DIR,
    RegistryContext,
    child_metadata,
)
from registry_operator.controllers.imageregistry.readiness import rollout_state
from registry_operator.controllers.imageregistry.rollout import would_roll
from registry_operator.controllers.imageregistry.storage import storage_env, storage_mounts, storage_volumes
from registry_operator.controllers.imageregistry.workload import (
    container_security_context,
    pod_security_context,
)
from registry_operator.controllers.resources import JOBS
from registry_operator.controllers.status import Problem
from registry_operator.kube import objects
from registry_operator.kube.errors import AlreadyExists

log = structlog.get_logger(__name__)

PHASE_IDLE: Final = "Idle"
PHASE_READ_ONLY: Final = "ReadOnly"
PHASE_COLLECTING: Final = "Collecting"
CONTAINER_GC: Final = "garbage-collect"
# Label of the collector's pods (not the registry's `app` label: the Service and the
# PodDisruptionBudget must not select them).
LABEL_GC: Final = f"{c.GROUP}/garbage-collection"
READ_ONLY_TIMEOUT: Final = timedelta(minutes=15)
JOB_DEADLINE_SECONDS: Final = 3600
# Finished Jobs (and their pods' logs) stay a day; the report is in the status by then.
JOB_TTL_SECONDS: Final = 24 * 3600
# How soon to look again while a run waits for its pods or its Job (their watches usually come first).
POLL_SECONDS: Final = 10.0
# A Job the cache has not seen this long after it was created is gone.
JOB_APPEAR_TIMEOUT: Final = timedelta(minutes=2)
MESSAGE_MAX: Final = 1024

SUMMARY_PATTERN: Final = re.compile(
    r"^(?P<marked>\d+) blobs marked, (?P<blobs>\d+) blobs and (?P<manifests>\d+) manifests"
    r" eligible for deletion$"
)

# The collector's wrapper: $1 config file, $2 the storage directory ("" for object storage).
# Output goes to the pod log; the report (no secrets: counts, sizes, the last error lines) to the
# termination message, where the operator reads it from the pod status.
GC_SCRIPT: Final = """\
set -u
config=$1
root=${2:-}
report=${TERMINATION_LOG:-/dev/termination-log}
size() { [ -n "$root" ] && du -sk "$root" 2>/dev/null | cut -f1; }
before=$(size)
registry garbage-collect %(flags)s"$config" >/tmp/gc.out 2>/tmp/gc.err
code=$?
after=$(size)
cat /tmp/gc.out /tmp/gc.err
{
  echo "exit-code: $code"
  if [ -n "$before" ] && [ -n "$after" ]; then echo "kib-before: $before"; echo "kib-after: $after"; fi
  grep -E '^[0-9]+ blobs marked, ' /tmp/gc.out | tail -n 1 | sed 's/^/summary: /'
  if [ "$code" -ne 0 ]; then tail -n 3 /tmp/gc.err | cut -c1-300 | sed 's/^/error: /'; fi
} >"$report"
exit $code
"""


def gc_flags(gc: GarbageCollectionSpec) -> list[str]:
    return [*(["--dry-run"] if gc.dry_run else []), *(["--delete-untagged"] if gc.delete_untagged else [])]


def gc_script(gc: GarbageCollectionSpec) -> str:
    flags = "".join(f"{shlex.quote(flag)} " for flag in gc_flags(gc))
    return GC_SCRIPT % {"flags": flags}


def gc_command(spec: ImageRegistrySpec, gc: GarbageCollectionSpec) -> list[str]:
    """The collector's command line inside the registry image (`registry` is on its PATH)."""
    root = "" if spec.uses_s3 else STORAGE_DIR
    config = f"{REGISTRY_CONFIG_DIR}/{REGISTRY_CONFIG_FILE}"
    return ["/bin/sh", "-c", gc_script(gc), CONTAINER_GC, config, root]


@dataclass(frozen=True)
class Report:
    """What the collector's termination message says."""

    exit_code: int | None
    blobs_deleted: int | None
    manifests_deleted: int | None
    bytes_freed: int | None
    summary: str | None
    errors: list[str]


def parse_report(message: str) -> Report:
    fields: dict[str, str] = {}
    errors: list[str] = []
    for line in message.splitlines():
        key, _, value = line.partition(": ")
        if key == "error":
            errors.append(value.strip())
        elif key:
            fields[key] = value.strip()

    def number(key: str) -> int | None:
        value = fields.get(key, "")
        return int(value) if value.isdigit() else None

    summary = fields.get("summary")
    match = SUMMARY_PATTERN.match(summary or "")
    before, after = number("kib-before"), number("kib-after")
    return Report(
        exit_code=number("exit-code"),
        blobs_deleted=int(match["blobs"]) if match else None,
        manifests_deleted=int(match["manifests"]) if match else None,
        bytes_freed=max(before - after, 0) * 1024 if before is not None and after is not None else None,
        summary=summary,
        errors=errors,
    )


def gc_job_name(registry_name: str, scheduled: datetime) -> str:
    # Deterministic per run, so a retried step finds the Job it created; a valid label value (the
    # Job controller labels its pods with it).
    return names.label_value(f"imageregistry-{registry_name}-gc-{scheduled:%Y%m%d%H%M}")


def _read_write_many(spec: ImageRegistrySpec) -> bool:
    claim = spec.persistent_volume_claim
    return claim is None or "ReadWriteMany" in claim.access_modes


def desired_gc_job(ctx: RegistryContext, gc: GarbageCollectionSpec, *, job_name: str, image: str) -> Object:
    """The collector: the registry image, the registry's rendered config and storage, no API access."""
    pod_labels = {LABEL_GC: names.label_value(ctx.name), c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [
            {
                "name": CONTAINER_GC,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": gc_command(ctx.spec, gc),
                "env": [
                    *(
                        {"name": key, "value": value}
                        for key, value in sorted(dockerauth.REGISTRY_ENV.items())
                    ),
                    *storage_env(ctx.spec),
                ],
                "volumeMounts": [
                    *storage_mounts(ctx.spec),
                    {"name": "registry-config", "mountPath": REGISTRY_CONFIG_DIR, "readOnly": True},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
                "terminationMessagePolicy": "File",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
                "securityContext": container_security_context(),
            }
        ],
        "volumes": [
            *storage_volumes(ctx),
            {
                "name": "registry-config",
                "configMap": {
                    "name": names.registry_auth_config_name(ctx.name),
                    "items": [{"key": CONFIG_KEY_REGISTRY, "path": REGISTRY_CONFIG_FILE}],
                },
            },
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if not _read_write_many(ctx.spec):
        # A ReadWriteOnce claim is mounted by the registry pod's node only: run beside it.
        pod_spec["affinity"] = {
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": {c.LABEL_APP: ctx.app_label}},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": child_metadata(ctx, job_name),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": JOB_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


@dataclass
class Plan:
    """This reconcile's garbage collection state: what to write to the status, whether the config
    is rendered read-only, and when to look again."""

    status: GarbageCollectionStatus | None
    read_only: bool = False
    requeue_after: float | None = None
    problem: Problem | None = None


def _finished(
    status: GarbageCollectionStatus, now: datetime, result: str, message: str, **report: Any
) -> GarbageCollectionStatus:
    run = GarbageCollectionRun(
        start_time=status.phase_time or now,
        completion_time=now,
        result=result,  # type: ignore[arg-type]
        job_name=status.job_name,
        message=message[:MESSAGE_MAX],
        **report,
    )
    return GarbageCollectionStatus(
        phase=PHASE_IDLE, phase_time=now, scheduled_time=status.scheduled_time, last_run=run
    )


def _job_condition(job: Mapping[str, Any]) -> str | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return str(condition["type"])
    return None


class GarbageCollector(RegistryPart):
    def plan(self, obj: Mapping[str, Any], spec: ImageRegistrySpec, now: datetime) -> Plan:
        """Before the config is rendered: start a due run, or carry on with the current one."""
        raw = (obj.get("status") or {}).get("garbageCollection")
        status = GarbageCollectionStatus.model_validate(raw) if raw else GarbageCollectionStatus()
        running = status.phase != PHASE_IDLE
        gc = spec.garbage_collection
        if gc is None:
            if running:
                return Plan(
                    _finished(status, now, "Failed", "spec.garbageCollection was removed during the run")
                )
            return Plan(status if raw else None)
        try:
            schedule = cron.parse(gc.schedule)
            # Fire times while a run lasted are skipped (a CronJob's concurrencyPolicy: Forbid).
            anchors = [status.scheduled_time, status.last_run.completion_time if status.last_run else None]
            known = [anchor for anchor in anchors if anchor is not None]
            stamp = objects.creation_timestamp(obj)
            created = datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else now
            due = schedule.next_after(max(known) if known else created)
        except (cron.CronError, ValueError) as error:
            problem = Problem(c.REASON_INVALID_SPEC, f"spec.garbageCollection.schedule: {error}")
            if running:
                return Plan(_finished(status, now, "Failed", str(problem)), problem=problem)
            return Plan(status, problem=problem)
        if running:
            return Plan(status, read_only=True)
        if due > now:
            return Plan(status, requeue_after=(due - now).total_seconds() + 1)
        scheduled = schedule.last_at_or_before(due, now)
        log.info("garbage collection: switching the registry to read-only", name=obj["metadata"]["name"])
        started = GarbageCollectionStatus(
            phase=PHASE_READ_ONLY,
            phase_time=now,
            scheduled_time=scheduled,
            job_name=gc_job_name(obj["metadata"]["name"], scheduled),
            last_run=status.last_run,
        )
        return Plan(started, read_only=True, requeue_after=POLL_SECONDS)

    def advance(
        self,
        ctx: RegistryContext,
        plan: Plan,
        *,
        statefulset: Mapping[str, Any] | None,
        desired_statefulset: Mapping[str, Any] | None,
        now: datetime,
    ) -> None:
        """After the StatefulSet was applied: start the Job once every pod is read-only, record the
        Job's outcome once it has one. Updates `plan` in place."""
        status, gc = plan.status, ctx.spec.garbage_collection
        if status is None or gc is None or status.phase == PHASE_IDLE or status.job_name is None:
            return
        since = now - (status.phase_time or now)
        if status.phase == PHASE_READ_ONLY:
            rollout = rollout_state(statefulset, ctx.spec.replicas)
            switched = (
                statefulset is not None
                and desired_statefulset is not None
                and not would_roll(statefulset, desired_statefulset)
                and rollout.ready
            )
            if not switched:
                if since > READ_ONLY_TIMEOUT:
                    plan.status = _finished(
                        status,
                        now,
                        "Failed",
                        f"the registry did not become read-only in time: {rollout.message}",
                    )
                    plan.requeue_after = 0.1  # render the read-write config now
                else:
                    plan.requeue_after = POLL_SECONDS
                return
            job = desired_gc_job(ctx, gc, job_name=status.job_name, image=self._settings.image_registry)
            with contextlib.suppress(AlreadyExists):  # created by an earlier attempt of this run
                self._client.create(JOBS, job, ctx.namespace)
            log.info("garbage collection: collector started", job=status.job_name)
            plan.status = status.model_copy(update={"phase": PHASE_COLLECTING, "phase_time": now})
            plan.requeue_after = POLL_SECONDS
            return
        found = self._stores.jobs.get_by_name(ctx.namespace, status.job_name)
        if found is None:
            if since > JOB_APPEAR_TIMEOUT:
                plan.status = _finished(status, now, "Failed", f"the collector Job {status.job_name} is gone")
                plan.requeue_after = 0.1
            else:
                plan.requeue_after = POLL_SECONDS
            return
        outcome = _job_condition(found)
        if outcome is None:
            plan.requeue_after = POLL_SECONDS
            return
        plan.status = self._recorded(status, found, outcome, gc, now)
        plan.requeue_after = 0.1

    def _recorded(
        self,
        status: GarbageCollectionStatus,
        job: Mapping[str, Any],
        outcome: str,
        gc: GarbageCollectionSpec,
        now: datetime,
    ) -> GarbageCollectionStatus:
        message = self._termination_message(job)
        report = parse_report(message) if message else None
        succeeded = outcome == "Complete" and (report is None or report.exit_code in (0, None))
        if report is None:
            text = "the collector's report is not available (no termination message)"
            if not succeeded:
                reason = next(
                    (
                        str(cond.get("message") or cond.get("reason"))
                        for cond in (job.get("status") or {}).get("conditions") or []
                        if cond.get("type") == "Failed"
                    ),
                    "",
                )
                text = f"the collector Job failed: {reason}" if reason else "the collector Job failed"
            return _finished(status, now, "Succeeded" if succeeded else "Failed", text, dry_run=gc.dry_run)
        text = report.summary or ""
        if not succeeded:
            text = f"registry garbage-collect exited {report.exit_code}: " + " ".join(report.errors)
        log.info(
            "garbage collection finished", job=status.job_name, succeeded=succeeded, summary=report.summary
        )
        return _finished(
            status,
            now,
            "Succeeded" if succeeded else "Failed",
            text,
            dry_run=gc.dry_run,
            blobs_deleted=report.blobs_deleted,
            manifests_deleted=report.manifests_deleted,
            bytes_freed=0 if gc.dry_run and report.bytes_freed is not None else report.bytes_freed,
        )

    def _termination_message(self, job: Mapping[str, Any]) -> str:
        job_name = objects.name(job)
        for pod in self._stores.gc_pods.list(copy=False):
            pod_labels = objects.labels(pod)
            if objects.namespace(pod) != objects.namespace(job) or job_name not in (
                pod_labels.get("job-name"),
                pod_labels.get("batch.kubernetes.io/job-name"),
            ):
                continue
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                terminated = (container.get("state") or {}).get("terminated") or {}
                if container.get("name") == CONTAINER_GC and terminated.get("message"):
                    return str(terminated["message"])
        return ""
