"""Embedded backend: jobs run in this process, by the core Pipeline, in a bounded pool.

One Pipeline (models loaded once, one embedded-Qdrant client) is shared by every
worker thread and request; the ``index`` stage and every search hold the index lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from mediaflow.errors import InvalidMediaError, MediaflowError, NotFoundError
from mediaflow.pipeline import StageEvent
from mediaflow.spec import MediaJobSpec
from mediaflow.stages import STAGES
from mediaflow_gateway.api.errors import ApiError
from mediaflow_gateway.api.schemas import TERMINAL_PHASES, JobView
from mediaflow_gateway.backends.base import Backend, outputs_for
from mediaflow_gateway.backends.tracker import JobTracker

log = logging.getLogger(__name__)


class EmbeddedBackend(Backend):
    kind = "embedded"

    def __init__(self, settings, pipeline, *, owns_pipeline: bool = False):
        super().__init__(settings, pipeline, owns_pipeline=owns_pipeline)
        self._pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="mediaflow-job")
        self._tracker: JobTracker | None = None
        self._warmup: asyncio.Future | None = None

    async def start(self) -> None:
        await super().start()
        self._tracker = JobTracker(asyncio.get_running_loop())
        # Load the embedding model now, so the first search does not wait for it.
        self._warmup = asyncio.get_running_loop().run_in_executor(None, lambda: self.pipeline.engines.embedder)

    async def stop(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        await super().stop()

    @property
    def tracker(self) -> JobTracker:
        assert self._tracker is not None, "the backend has not been started"
        return self._tracker

    # -- jobs ------------------------------------------------------------------
    async def submit(self, job_id: str, spec: MediaJobSpec) -> JobView:
        if self.tracker.active() >= self.settings.max_queued_jobs:
            raise ApiError(503, "too many jobs queued; try again later", headers={"Retry-After": "30"})
        job = self.tracker.create(job_id, self.media_id_for_job(job_id), spec.source.title)
        self._pool.submit(self._run, job_id, spec)
        return job

    def _run(self, job_id: str, spec: MediaJobSpec) -> None:
        """One job, in a worker thread: the core's stages in order, resumable, with events."""
        media_id, pipeline, tracker = job_id, self.pipeline, self.tracker
        emit = lambda event: tracker.on_event(job_id, event)  # noqa: E731
        stage = "probe"
        try:
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
        self.tracker.remove(job_id)

