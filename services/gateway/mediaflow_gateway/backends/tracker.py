"""Job state from the pipeline's StageEvents, and live updates for SSE subscribers.

Workers run in threads; subscribers are asyncio queues on the server's loop, so
every change is handed over with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from mediaflow.pipeline import StageEvent
from mediaflow.stages import STAGES
from mediaflow_gateway.api.schemas import TERMINAL_PHASES, Condition, JobView

_WEIGHTS = {s.name: s.weight for s in STAGES}
_TOTAL_WEIGHT = sum(_WEIGHTS.values())
_FINISHED = {"done": "Completed", "cached": "AlreadyDone", "skipped": "Skipped"}


def _now() -> datetime:
    return datetime.now(UTC)


class JobTracker:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._jobs: dict[str, JobView] = {}
        self._fractions: dict[str, dict[str, float]] = {}
        self._subscribers: dict[str, set[asyncio.Queue[JobView]]] = {}
        self._lock = threading.Lock()

    # -- writes (any thread) ---------------------------------------------------
    def create(self, job_id: str, media_id: str, title: str | None) -> JobView:
        now = _now()
        job = JobView(id=job_id, media_id=media_id, title=title, phase="Pending", progress=0.0,
                      created_at=now, updated_at=now)
        with self._lock:
            self._jobs[job_id] = job
            self._fractions[job_id] = {}
        return job

    def on_event(self, job_id: str, event: StageEvent) -> None:
        with self._lock:
            job = self._jobs[job_id]
            fractions = self._fractions[job_id]
            conditions = {c.type: c for c in job.conditions}
            update: dict = {"phase": "Running", "stage": event.stage}
            if event.status == "progress":
                fractions[event.stage] = event.fraction
            elif event.status == "started":
                fractions[event.stage] = 0.0
                conditions[event.stage] = Condition(type=event.stage, status="Unknown", reason="Running",
                                                    last_transition_time=_now())
            elif event.status in _FINISHED:
                fractions[event.stage] = 1.0
                conditions[event.stage] = Condition(
                    type=event.stage, status="True", reason=_FINISHED[event.status],
                    message=f"{event.seconds:.2f} s", last_transition_time=_now())
            elif event.status == "failed":
                conditions[event.stage] = Condition(type=event.stage, status="False", reason="Failed",
                                                    message=event.message or "", last_transition_time=_now())
            progress = sum(_WEIGHTS[name] * f for name, f in fractions.items()) / _TOTAL_WEIGHT
            update.update(progress=round(min(progress, 0.999), 4),
                          conditions=[conditions[s.name] for s in STAGES if s.name in conditions])
            self._store(job_id, job.model_copy(update=update))

    def finish(self, job_id: str, *, error: str | None = None, outputs: dict[str, str] | None = None) -> None:
        with self._lock:
            job = self._jobs[job_id]
            if error is None:
                update = {"phase": "Succeeded", "progress": 1.0, "stage": None, "outputs": outputs or {}}
            else:
                update = {"phase": "Failed", "message": error, "stage": None}
            self._store(job_id, job.model_copy(update=update))

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)
            self._fractions.pop(job_id, None)

    def _store(self, job_id: str, job: JobView) -> None:
        job = job.model_copy(update={"updated_at": _now()})
        self._jobs[job_id] = job
        for queue in self._subscribers.get(job_id, ()):
            self._loop.call_soon_threadsafe(queue.put_nowait, job)

    # -- reads -------------------------------------------------------------------
    def get(self, job_id: str) -> JobView | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[JobView]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)

    def active(self) -> int:
        with self._lock:
            return sum(j.phase not in TERMINAL_PHASES for j in self._jobs.values())

    async def watch(self, job_id: str) -> AsyncIterator[JobView]:
        queue: asyncio.Queue[JobView] = asyncio.Queue()
        with self._lock:
            current = self._jobs.get(job_id)
            self._subscribers.setdefault(job_id, set()).add(queue)
        try:
            if current is None:
                return
            yield current
            while current.phase not in TERMINAL_PHASES:
                current = await queue.get()
                yield current
        finally:
            with self._lock:
                self._subscribers.get(job_id, set()).discard(queue)
