"""Embedded backend: jobs run in this process, by the core Pipeline, in a bounded pool.

One Pipeline (models loaded once, one embedded-Qdrant client) is shared by every
worker thread and request; the ``index`` stage and every search hold the index lock.

Jobs survive a restart: each is recorded in the store's job journal (``tracker.JobJournal``)
at every stage transition. At start, finished jobs are known again (GET /v1/jobs/<id>, and
the same bytes answer ``existing``), and a job a dead gateway left Pending or Running is
resumed: queued again under its id, its finished stages kept (``cached``: neither probed,
transcribed nor embedded again), the interrupted stage run anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mediaflow.errors import InvalidMediaError, MediaflowError, NotFoundError
from mediaflow.models import ProbeResult, SourceRecord
from mediaflow.pipeline import StageEvent
from mediaflow.spec import MediaJobSpec
from mediaflow.stages import STAGES
from mediaflow_gateway.api.errors import ApiError
from mediaflow_gateway.api.schemas import TERMINAL_PHASES, JobView
from mediaflow_gateway.backends.base import Backend, outputs_for
from mediaflow_gateway.backends.tracker import JOB_LEASE_REFRESH_SECONDS, JobJournal, JobTracker

log = logging.getLogger(__name__)


class EmbeddedBackend(Backend):
    kind = "embedded"

    def __init__(self, settings, pipeline, *, owns_pipeline: bool = False):
        super().__init__(settings, pipeline, owns_pipeline=owns_pipeline)
        self._pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="mediaflow-job")
        self._tracker: JobTracker | None = None
        self._journal: JobJournal | None = None
        self._heartbeat: asyncio.Task | None = None
        self._warmup: asyncio.Future | None = None

    async def start(self) -> None:
        await super().start()
        self._journal = JobJournal(self.store).__enter__()
        self._tracker = JobTracker(asyncio.get_running_loop(), self._journal)
        await asyncio.to_thread(self._recover)
        self._heartbeat = asyncio.create_task(self._keep_leases(), name="job-leases")
        # Load the embedding model now, so the first search does not wait for it.
        self._warmup = asyncio.get_running_loop().run_in_executor(None, lambda: self.pipeline.engines.embedder)

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._journal is not None:  # jobs it left Pending are resumed by the next start
            self._journal.__exit__(None, None, None)
        await super().stop()

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(JOB_LEASE_REFRESH_SECONDS)
            await asyncio.to_thread(self.tracker.persist_active)

    def _recover(self) -> None:
        """Know the journal's jobs again; resume those a dead gateway left unfinished."""
        assert self._journal is not None
        resumed = 0
        for entry in self._journal.load():
            try:
                resumed += self._recover_one(entry)
            except Exception:  # noqa: BLE001 - one bad record must not keep the gateway from starting
                log.exception("could not recover job %s", entry.job.id)
        if resumed:
            log.info("resumed %d job(s) interrupted by a restart", resumed)

    def _recover_one(self, entry) -> bool:
        """Restore one journal record; True when its job was queued again (resumed)."""
        assert self._journal is not None
        job = entry.job
        if job.phase in TERMINAL_PHASES:
            if self.store.exists(job.media_id, "source.json"):
                self.tracker.restore(job, entry.spec)
            else:  # its media was deleted (or never stored: a refused source): forget it
                self._journal.drop(job.id)
            return False
        if JobJournal.owner_alive(entry.owner, entry.age):
            log.info("job %s is run by a live gateway (%s): not resumed here", job.id, entry.owner.get("host"))
            return False
        if entry.spec is None:  # nothing to resume it with: uploading the bytes again makes a new job
            log.warning("job %s was interrupted and has no spec recorded: dropped", job.id)
            self._journal.drop(job.id)
            return False
        interrupted = f" while {job.stage}" if job.stage else ""
        job = job.model_copy(update={
            "phase": "Pending", "stage": None,
            "message": f"resumed after the gateway restarted (interrupted{interrupted})",
            "conditions": [c for c in job.conditions if c.status == "True"]})
        self.tracker.restore(job, entry.spec, persist=True)
        self._pool.submit(self._run, job.id, entry.spec, resume=True)
        return True

    @property
    def tracker(self) -> JobTracker:
        assert self._tracker is not None, "the backend has not been started"
        return self._tracker

    # -- jobs ------------------------------------------------------------------
    async def submit(self, job_id: str, spec: MediaJobSpec) -> JobView:
        if self.tracker.active() >= self.settings.max_queued_jobs:
            raise ApiError(503, "too many jobs queued; try again later", headers={"Retry-After": "30"})
        job = self.tracker.create(job_id, self.media_id_for_job(job_id), spec.source.title, spec, persist=False)
        try:
            await asyncio.to_thread(self.tracker.persist, job_id)
            self._pool.submit(self._run, job_id, spec)
        except BaseException:
            await asyncio.to_thread(self.tracker.remove, job_id)
            raise
        return job

    def _ingested(self, media_id: str, spec: MediaJobSpec) -> bool:
        """Whether ``spec``'s source was ingested as ``media_id`` already (a resumed job)."""
        src = self.store.read_model(media_id, "source.json", SourceRecord)
        if src is None or self.store.read_model(media_id, "probe.json", ProbeResult) is None:
            return False
        uri = spec.source.uri
        return src.uri == uri or ("://" not in uri and Path(src.uri).resolve() == Path(uri).resolve())

    def _run(self, job_id: str, spec: MediaJobSpec, *, resume: bool = False) -> None:
        """One job, in a worker thread: the core's stages in order, resumable, with events.
        ``resume``: a job interrupted by a restart; a source ingested already is not again."""
        media_id, pipeline, tracker = job_id, self.pipeline, self.tracker
        emit = lambda event: tracker.on_event(job_id, event)  # noqa: E731
        stage = "probe"
        try:
            if resume and self._ingested(media_id, spec):
                emit(StageEvent(media_id, stage, "cached", fraction=1.0))
            else:
                emit(StageEvent(media_id, stage, "started"))
                pipeline.ingest(spec.source.uri, media_id=media_id, title=spec.source.title)
                emit(StageEvent(media_id, stage, "done", fraction=1.0))
            pipeline.store.write_text(media_id, "job.json", spec.model_dump_json(by_alias=True, indent=2))
            for stage in (s.name for s in STAGES[1:]):
                with self.index_lock if stage == "index" else contextlib.nullcontext():
                    pipeline.run_stage(media_id, stage, spec, on_event=emit)
        except MediaflowError as exc:
            if stage == "probe":  # run_stage reports its own failures; ingest does not
                emit(StageEvent(media_id, stage, "failed", message=str(exc)))
            if isinstance(exc, InvalidMediaError):  # unusable input: keep nothing of it
                with self.index_lock:
                    pipeline.delete(media_id)
            tracker.finish(job_id, error=str(exc))
        except Exception as exc:  # a bug or a broken dependency: report it on the job, keep serving
            log.exception("job %s failed", job_id)
            tracker.finish(job_id, error=f"internal error: {type(exc).__name__}: {exc}")
        else:
            tracker.finish(job_id, outputs=outputs_for(media_id, pipeline.store))

    async def get_job(self, job_id: str) -> JobView:
        job = self.tracker.get(job_id)
        if job is None:
            raise NotFoundError(f"no such job: {job_id}")
        return job

    async def list_jobs(self) -> list[JobView]:
        return self.tracker.all()

    def job_counts(self) -> dict[str, int] | None:
        counts: dict[str, int] = {}
        for job in self.tracker.all():
            counts[job.phase] = counts.get(job.phase, 0) + 1
        return counts

    async def watch_job(self, job_id: str) -> AsyncIterator[JobView]:
        async for job in self.tracker.watch(job_id):
            yield job

    async def forget_job(self, job_id: str) -> None:
        job = self.tracker.get(job_id)
        if job is not None and job.phase not in TERMINAL_PHASES:
            raise ApiError(409, f"job {job_id} is still {job.phase.lower()}; delete it when it has finished")
        await asyncio.to_thread(self.tracker.remove, job_id)

