"""What the handlers share for the operator's lifetime: API client, pipeline, slots, Job watch."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from mediaflow.pipeline import Pipeline
from mediaflow.spec import MediaJobSpec
from mediaflow_operator import metrics
from mediaflow_operator.kube import KubeApi
from mediaflow_operator.settings import OperatorSettings

# (media_id, stage name, spec) -> None; runs one pipeline stage (blocking, in a thread).
StageRunner = Callable[[str, str, MediaJobSpec], Any]


class Slots:
    """At most ``limit`` MediaJobs run at once; waiters are served by priority, then age."""

    def __init__(self, limit: int):
        self.limit = limit
        self.running: set[str] = set()
        self._waiters: list[tuple[int, int, str, asyncio.Future]] = []
        self._order = itertools.count()

    @asynccontextmanager
    async def hold(self, key: str, priority: int, on_wait: Callable[[], Any] | None = None):
        if key not in self.running:
            if len(self.running) >= self.limit:
                future = asyncio.get_running_loop().create_future()
                heapq.heappush(self._waiters, (-priority, next(self._order), key, future))
                if on_wait:
                    await on_wait()
                try:
                    await future
                except asyncio.CancelledError:
                    self._waiters = [w for w in self._waiters if w[2] != key]
                    heapq.heapify(self._waiters)
                    if future.done() and not future.cancelled():
                        self._release(key)
                    raise
            else:
                self.running.add(key)
        try:
            yield
        finally:
            self._release(key)

    def _release(self, key: str) -> None:
        self.running.discard(key)
        while self._waiters and len(self.running) < self.limit:
            _, _, next_key, future = heapq.heappop(self._waiters)
            if not future.done():
                self.running.add(next_key)
                future.set_result(None)


class JobWatch:
    """Latest seen name and status of worker Jobs, fed by the Job watch; daemons wait on it."""

    def __init__(self):
        self._latest: dict[tuple[str, str], dict[str, Any]] = {}
        self._changed: dict[tuple[str, str], asyncio.Event] = {}

    def seen(self, namespace: str, name: str, body: dict[str, Any] | None) -> None:
        key = (namespace, name)
        if body is None:
            # Gone (finalizer, TTL): wake a waiter, keep nothing. A DELETED event that comes after
            # the finalizer's forget() would otherwise leave an Event behind for good.
            self._latest.pop(key, None)
            if (event := self._changed.pop(key, None)) is not None:
                event.set()
            return
        # Only what the daemons read (job_outcome): at thousands of MediaJobs, whole Job
        # manifests (pod template, env, volumes) kept until their TTL are most of the memory.
        kept: dict[str, Any] = {"metadata": {"name": body["metadata"]["name"]}}
        if status := body.get("status"):
            kept["status"] = status
        self._latest[key] = kept
        self._changed.setdefault(key, asyncio.Event()).set()

    def latest(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._latest.get((namespace, name))

    async def wait(self, namespace: str, name: str, timeout: float) -> None:
        event = self._changed.setdefault((namespace, name), asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        event.clear()

    def forget(self, namespace: str, name: str) -> None:
        self._latest.pop((namespace, name), None)
        self._changed.pop((namespace, name), None)


@dataclass
class Runtime:
    settings: OperatorSettings
    kube: KubeApi
    pipeline: Pipeline
    slots: Slots
    jobs: JobWatch = field(default_factory=JobWatch)
    phases: dict[str, str] = field(default_factory=dict)  # "ns/name" -> phase, for metrics
    phase_counts: Counter[str] = field(default_factory=Counter)  # phase -> MediaJobs in it
    # Deletion must not race the pipeline: the finalizer marks the MediaJob, waits for its
    # daemon to end and for a stage thread still writing (a thread cannot be cancelled), and
    # only then deletes the worker Job and cleans up. Keys are "ns/name"; stages by media id.
    deleting: set[str] = field(default_factory=set)
    daemons: dict[str, asyncio.Task] = field(default_factory=dict)
    stages_in_flight: dict[str, Future] = field(default_factory=dict)
    run_stage: StageRunner | None = None
    # Rerun requests (the mediaflow.dev/rerun annotation): the handler wakes the MediaJob's daemon,
    # which waits after a failure. kopf counts a daemon's retries for its whole life, so a rerun
    # notes the count it began at: each rerun gets the full stage_retries again.
    reruns: dict[str, asyncio.Event] = field(default_factory=dict)
    retry_base: dict[str, int] = field(default_factory=dict)
    metrics_server: Any = None  # prometheus_client's WSGI server, shut down at cleanup
    # Stages block a thread for seconds to minutes; their own pool keeps them from starving
    # the short artifact-store calls queued on the loop's default executor.
    stage_pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.stage_pool = ThreadPoolExecutor(self.settings.max_running, thread_name_prefix="stage")
        metrics.publish_phase_counts(self.phase_counts)  # a restarted operator starts from zero

    def note_phase(self, key: str, phase: str | None) -> None:
        """Record MediaJob ``key``'s phase (None: it is gone) for the metrics and probes."""
        old = self.phases.pop(key, None) if phase is None else self.phases.get(key)
        if old == phase:
            return
        if phase is not None:
            self.phases[key] = phase
            self.phase_counts[phase] += 1
        if old is not None:
            self.phase_counts[old] -= 1
        metrics.publish_phase_counts(self.phase_counts, [p for p in (old, phase) if p is not None])

    async def run_stage_async(self, media_id: str, stage: str, spec: MediaJobSpec) -> Any:
        future = self.stage_pool.submit(self.stage_runner(), media_id, stage, spec)
        self.stages_in_flight[media_id] = future
        future.add_done_callback(lambda done: self._stage_ended(media_id, done))
        return await asyncio.wrap_future(future)

    def _stage_ended(self, media_id: str, future: Future) -> None:
        if self.stages_in_flight.get(media_id) is future:
            del self.stages_in_flight[media_id]

    def stage_runner(self) -> StageRunner:
        return self.run_stage or (lambda media_id, stage, spec: self.pipeline.run_stage(media_id, stage, spec))


_current: Runtime | None = None


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("the operator has not started")
    return _current


def install(runtime: Runtime | None) -> None:
    global _current
    _current = runtime
