"""One daemon per MediaJob drives its stages; all state is read back from the object.

Resume rules (operator restarted mid-way): a stage whose condition is True is
skipped; the worker Job has a deterministic name, so an existing one is followed
rather than created again; pipeline stages skip work whose artifact already
validates, and Qdrant point ids are deterministic, so nothing is duplicated.

A Failed job keeps its daemon: it waits for a rerun request (:mod:`.rerun`), then runs
again by the same rules, so only the stages not done run (a failed worker Job is
deleted first and made again under its name).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import kopf
from pydantic import ValidationError

from mediaflow.status import TERMINAL_PHASES, MediaJobStatus, StageTiming, condition_type, mediajob_media_id
from mediaflow.errors import EngineRequestError, EngineUnavailableError, MediaflowError
from mediaflow.models import ChunkSet, IndexRecord, ProbeResult, SummaryRecord, Transcript
from mediaflow.spec import MediaJobSpec
from mediaflow.stages import STAGES
from mediaflow_operator import metrics, runtime
from mediaflow_operator.conditions import is_true, now, set_condition
from mediaflow_operator.handlers import rerun
from mediaflow_operator.jobs import JOB_STAGES, extract_job, job_name, job_namespace, job_outcome

TOTAL_WEIGHT = sum(s.weight for s in STAGES)


def _duration(started: datetime | None, finished: datetime) -> str | None:
    if started is None:
        return None
    seconds = int((finished - started).total_seconds())
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class MediaJobRun:
    """The status of one MediaJob as the daemon builds it, patched after each step."""

    def __init__(self, body: kopf.Body, logger):
        self.body = body
        self.logger = logger
        self.name = body["metadata"]["name"]
        self.namespace = body["metadata"]["namespace"]
        self.generation = body["metadata"].get("generation")
        self.media_id = mediajob_media_id(self.namespace, self.name)
        self.job_namespace = job_namespace(self.namespace, runtime.current().settings)
        self.status = MediaJobStatus.model_validate(dict(body.get("status") or {}))
        self.rt = runtime.current()
        self.unsaved = False  # a routine step is not patched yet (see save)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def deleting(self) -> bool:
        """The finalizer has begun: start nothing more (it waits for what already runs)."""
        return self.key in self.rt.deleting

    async def save(self, *, urgent: bool = True) -> None:
        """Patch the status now; a routine step (``urgent=False``) is left to the next patch.

        Each patch is a watch event for every watcher and a request to the API server. A routine
        step (a stage done) is always followed soon by a patch that carries it: the next stage's
        once it has run ``status_grace_seconds``, a failure, the finish, or :meth:`flush` when
        the daemon stops early. A burst of short stages thus costs a patch or two per MediaJob,
        while phase changes, failures and long stages show at once.
        """
        if not urgent:
            self.unsaved = True
            return
        self.unsaved = False
        self.status.observed_generation = self.generation
        self.rt.note_phase(self.key, self.status.phase)
        await self.rt.kube.patch_status(
            self.namespace, self.name, self.status.model_dump(by_alias=True, mode="json", exclude_none=True))

    async def flush(self) -> None:
        """Patch what routine steps left unsaved (the daemon stops before its next patch)."""
        if self.unsaved and not self.deleting:
            await self.save()

    def condition(self, type_: str, status: str, reason: str, message: str = "") -> None:
        self.status.conditions = set_condition(
            self.status.conditions, type_, status, reason, message, self.generation)

    def done(self, stage: str) -> bool:
        return is_true(self.status.conditions, condition_type(stage))

    def update_progress(self) -> None:
        finished = sum(s.weight for s in STAGES if self.done(s.name))
        self.status.progress = int(100 * finished / TOTAL_WEIGHT)

    async def finish(self, phase: str, reason: str, message: str) -> None:
        finished = now()
        self.status.phase, self.status.reason, self.status.message = phase, reason, message
        self.status.finished_at = finished
        self.status.duration = _duration(self.status.started_at, finished)
        self.condition("Ready", "True" if phase == "Succeeded" else "False", reason, message)
        if phase == "Failed":
            # What the finished stages made stays (transcript, chunks, points): a rerun resumes from it.
            try:
                await _read_outputs(self)
            except Exception as exc:  # the failure is reported all the same
                self.logger.warning("outputs of media %s not read: %s", self.media_id, exc)
        await self.save()
        (kopf.info if phase == "Succeeded" else kopf.warn)(self.body, reason=reason, message=message)


async def run_mediajob(body: kopf.Body, spec, stopped, retry: int, logger, **_) -> None:
    run = MediaJobRun(body, logger)
    task = asyncio.current_task()
    run.rt.daemons[run.key] = task  # the finalizer waits for this task to end
    try:
        try:
            job_spec = MediaJobSpec.model_validate(dict(spec))
        except ValidationError as exc:
            # The CRD schema catches most of this; the model also checks what CEL cannot see.
            await run.finish("Failed", "InvalidSpec", str(exc)[:1000])
            return
        if run.status.started_at is None:
            # A rerun annotation the MediaJob was created with asks for nothing.
            run.status.observed_rerun = rerun.requested(body)
        while not stopped:
            if run.status.phase not in TERMINAL_PHASES:
                retries = max(0, retry - run.rt.retry_base.get(run.key, 0))
                await _process(run, job_spec, retries, stopped)
                await run.flush()  # stopped or deleted mid-way; a no-op after the finish
                if run.status.phase not in TERMINAL_PHASES:
                    return  # stopped, or the MediaJob is being deleted
            if (value := _rerun_wanted(run)) is not None:
                run.rt.retry_base[run.key] = retry  # the rerun's stages get every retry again
                if await _rerun(run, value, stopped):
                    continue
                return
            if not await _idle(run, job_spec, stopped):
                return
    finally:
        if run.rt.daemons.get(run.key) is task:
            del run.rt.daemons[run.key]
            run.rt.reruns.pop(run.key, None)


def _rerun_wanted(run: MediaJobRun) -> str | None:
    """The new rerun annotation value of a Failed job, if there is one."""
    value = rerun.requested(run.body)
    if run.status.phase != "Failed" or value is None or value == run.status.observed_rerun:
        return None
    return value


async def _rerun(run: MediaJobRun, value: str, stopped) -> bool:
    """Back to Pending, keeping every True condition; False when stopped meanwhile."""
    if not run.done("extract_audio") and not await _drop_failed_job(run, stopped):
        return False
    run.status.observed_rerun = value
    message = f"{rerun.RERUN_ANNOTATION}={value}: running the stages not done"
    run.status.phase, run.status.reason, run.status.message = "Pending", "RerunRequested", message
    run.status.started_at, run.status.finished_at, run.status.duration = now(), None, None
    for cond in list(run.status.conditions):
        if cond.status == "False" or cond.type == "Ready":
            run.condition(cond.type, "Unknown", "RerunRequested", message)
    await run.save()
    kopf.info(run.body, reason="RerunRequested", message=message)
    return True


async def _drop_failed_job(run: MediaJobRun, stopped) -> bool:
    """Delete the failed worker Job (foreground) and wait until it is gone, so it can be made again."""
    rt, name, namespace = run.rt, job_name(run.namespace, run.name), run.job_namespace
    job = rt.jobs.latest(namespace, name) or await rt.kube.get_job(namespace, name)
    if job is None or (job_outcome(job) or ("",))[0] == "True":
        return True  # gone already (its TTL), or it completed: followed as it is
    await rt.kube.delete_job(namespace, name)
    deadline = time.monotonic() + 120  # foreground: until its pods have ended too
    while await rt.kube.get_job(namespace, name) is not None:
        if stopped or run.deleting:
            return False
        if time.monotonic() > deadline:
            raise kopf.TemporaryError(f"waiting for the failed Job {name} to go", delay=5)
        await rt.jobs.wait(namespace, name, timeout=1.0)
    rt.jobs.forget(namespace, name)  # its last state must not be taken for the new Job's
    return True


async def _until(stopped) -> None:
    await stopped.wait()


async def _idle(run: MediaJobRun, spec: MediaJobSpec, stopped) -> bool:
    """A finished job waits for a rerun request, its ttlSecondsAfterFinished or the operator's stop.

    True: look at the rerun annotation again. False: the daemon ends (stopped, or the
    MediaJob was deleted at its TTL; the finalizer cleans up).
    """
    ttl = spec.ttl_seconds_after_finished
    left = None
    if ttl is not None and run.status.finished_at is not None:
        left = max(0.0, ttl - (now() - run.status.finished_at).total_seconds())
    elif run.status.phase == "Succeeded":
        return False  # nothing more can happen to it: no task kept per finished job
    wakeup = rerun.wakeup(run.key)
    waiters = {asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(_until(stopped))}
    try:
        done, _ = await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    wakeup.clear()
    if stopped or run.deleting:
        return False
    if not done:  # the TTL ran out
        await run.rt.kube.delete_mediajob(run.namespace, run.name)
        return False
    return True


async def _process(run: MediaJobRun, spec: MediaJobSpec, retry: int, stopped) -> None:
    async def waiting() -> None:
        run.status.phase, run.status.reason = "Pending", "WaitingForSlot"
        run.status.message = f"{run.rt.settings.max_running} MediaJobs already running"
        await run.save()

    async with run.rt.slots.hold(run.key, spec.priority, on_wait=waiting):
        if run.status.phase != "Running":
            # Saved together with the first stage's start: one status patch, not two.
            run.status.phase, run.status.reason, run.status.message = "Running", "Processing", ""
            run.status.started_at = run.status.started_at or now()
            run.status.outputs.media_id = run.media_id
        if not run.done("extract_audio"):
            if run.deleting or not await _worker_job(run, spec, stopped):
                return
        for stage in STAGES:
            if stage.name in JOB_STAGES or run.done(stage.name):
                continue
            if run.deleting or not await _remote_stage(run, spec, stage.name, retry):
                return
        await _read_outputs(run)
        await run.finish("Succeeded", "Completed", f"media {run.media_id} transcribed, indexed and summarized")


def _begin(run: MediaJobRun, stage: str, reason: str, message: str) -> None:
    timing = run.status.stages.get(stage) or StageTiming()
    run.status.stages[stage] = StageTiming(started_at=timing.started_at or now())
    run.condition(condition_type(stage), "Unknown", reason, message)


def _end(run: MediaJobRun, stage: str, reason: str, message: str) -> None:
    run.status.stages[stage] = StageTiming(started_at=run.status.stages[stage].started_at,
                                           finished_at=now())
    run.condition(condition_type(stage), "True", reason, message)
    run.update_progress()


async def _worker_job(run: MediaJobRun, spec: MediaJobSpec, stopped) -> bool:
    """probe + extract_audio as a Kubernetes Job of the worker image; True once it completed."""
    rt, name, namespace = run.rt, job_name(run.namespace, run.name), run.job_namespace
    started = time.perf_counter()
    job = rt.jobs.latest(namespace, name)
    if job is None:
        # The worker reads the spec from the artifact store (no ConfigMap per MediaJob).
        await asyncio.to_thread(rt.pipeline.store.write_text, run.media_id, "job.json",
                                spec.model_dump_json(by_alias=True))
        # Created blindly: after an operator restart the POST answers 409 and the existing
        # Job (deterministic name) is adopted, so there is never a second one.
        job, created = await rt.kube.create_job(extract_job(run.body, run.media_id, spec, rt.settings))
        for stage in JOB_STAGES:
            if not run.done(stage):
                _begin(run, stage, "JobCreated", f"Job {name} created")
        await run.save()
        if created:
            kopf.info(run.body, reason="JobCreated", message=f"processing media {run.media_id}: created Job {name}")
    while (outcome := job_outcome(job)) is None:
        if stopped or run.deleting:
            return False
        await rt.jobs.wait(namespace, name, timeout=rt.settings.job_recheck_seconds)
        job = rt.jobs.latest(namespace, name) or await rt.kube.get_job(namespace, name)
        if job is None:
            raise kopf.TemporaryError(f"Job {name} disappeared; recreating", delay=1)
    ok, reason, message = outcome
    seconds = time.perf_counter() - started
    if ok != "True":
        for stage in JOB_STAGES:
            if not run.done(stage):
                run.condition(condition_type(stage), "False", reason, message)
        metrics.STAGE_FAILURES.labels("extract_audio").inc()
        await run.finish("Failed", reason, message)
        return False
    for stage in JOB_STAGES:
        if stage not in run.status.stages:
            _begin(run, stage, "JobCreated", f"Job {name} created")
        _end(run, stage, reason, message)
    metrics.STAGE_SECONDS.labels("extract_audio").observe(seconds)
    await run.save(urgent=False)
    kopf.info(run.body, reason="AudioExtracted", message=message)
    return True


async def _remote_stage(run: MediaJobRun, spec: MediaJobSpec, stage: str, retry: int) -> bool:
    """A pipeline stage whose engine is a serving endpoint (or Qdrant); True when done."""
    _begin(run, stage, "Running", f"{stage} started")
    started = time.perf_counter()
    work = asyncio.ensure_future(run.rt.run_stage_async(run.media_id, stage, spec))
    try:
        # A stage that ends within the grace period is reported once, when it ends: a burst of
        # MediaJobs then costs half the status patches (and watch events) it otherwise would.
        done, _ = await asyncio.wait({work}, timeout=run.rt.settings.status_grace_seconds)
        if not done:
            await run.save()
        await work
    except EngineUnavailableError as exc:
        if retry < run.rt.settings.stage_retries:
            metrics.STAGE_RETRIES.labels(stage).inc()
            run.condition(condition_type(stage), "Unknown", "EngineUnavailable", str(exc))
            await run.save()
            kopf.warn(run.body, reason="Retrying", message=f"{stage}: {exc}")
            raise kopf.TemporaryError(str(exc), delay=run.rt.settings.retry_delay_seconds * 2**retry) from exc
        await _fail_stage(run, stage, "EngineUnavailable", str(exc))
        return False
    except EngineRequestError as exc:
        await _fail_stage(run, stage, "RequestRejected", str(exc))
        raise kopf.PermanentError(str(exc)) from exc
    except MediaflowError as exc:
        await _fail_stage(run, stage, "StageFailed", str(exc))
        return False
    metrics.STAGE_SECONDS.labels(stage).observe(time.perf_counter() - started)
    _end(run, stage, "Completed", f"{stage} done")
    await run.save(urgent=False)
    return True


async def _fail_stage(run: MediaJobRun, stage: str, reason: str, message: str) -> None:
    metrics.STAGE_FAILURES.labels(stage).inc()
    run.condition(condition_type(stage), "False", reason, message)
    await run.finish("Failed", reason, f"{stage}: {message}")


async def _read_outputs(run: MediaJobRun) -> None:
    """Fill ``status.outputs`` from the artifacts, off the event loop, in the stage pool: in a
    burst, the default executor is where new MediaJobs write the job.json their Job reads."""
    await asyncio.get_running_loop().run_in_executor(run.rt.stage_pool, _fill_outputs, run)


def _fill_outputs(run: MediaJobRun) -> None:
    store, media_id, out = run.rt.pipeline.store, run.media_id, run.status.outputs
    for artifact in ("audio.wav", "transcript.json", "transcript.srt", "transcript.vtt", "chunks.json",
                     "summary.md"):
        if store.exists(media_id, artifact):
            out.artifacts[artifact.replace(".", "_")] = store.uri(media_id, artifact)
    if probe := store.read_model(media_id, "probe.json", ProbeResult):
        out.duration_seconds = probe.duration
    if transcript := store.read_model(media_id, "transcript.json", Transcript):
        out.language, out.segments = transcript.language, len(transcript.segments)
        out.language_probability = transcript.language_probability
    if chunks := store.read_model(media_id, "chunks.json", ChunkSet):
        out.chunks = len(chunks.chunks)
    if index := store.read_model(media_id, "index.json", IndexRecord):
        out.points = index.points
    if summary := store.read_model(media_id, "summary.json", SummaryRecord):
        out.summary_excerpt = summary.text[:500]
        out.summary_method, out.summary_dropped = summary.method, summary.dropped
