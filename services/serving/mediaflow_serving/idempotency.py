"""Idempotent model work: one run per ``Idempotency-Key``, joined by its retries.

Semantics follow draft-ietf-httpapi-idempotency-key-header, kept simple:

- The client names the work with an ``Idempotency-Key`` header; the server compares
  each request under that key by a *fingerprint* of what it asks for (the audio's
  sha256 and the options that shape the result). The same key with another
  fingerprint is refused (422): a key names one request, not a slot to reuse.
- While the work runs, a request with its key joins it (the draft allows a 409 here;
  joining is what lets a restarted client simply retry). Once it finished, its result
  is replayed for ``ttl_s`` seconds, at most ``max_results`` results (least recently
  used first out). A failed run is not kept: its retry runs again.
- The work is a task of the server, not of the request: a client that disconnects
  (a killed operator, a client timeout, Ray Serve cancelling the request) does not
  cancel it; it completes and its result waits in the cache for the retry.

The cache is per process (per Ray Serve replica): a retry routed to another replica
runs the work again, which is correct, only not free.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from prometheus_client import Counter, Gauge

T = TypeVar("T")
Outcome = Literal["fresh", "joined", "replayed"]

MAX_KEY_LENGTH = 255
WORK = ("mediaflow_serving_idempotent_requests", "Requests for keyed work by outcome: fresh "
        "(ran the work), joined (waited for the same work already running), replayed (from the cache).")
RUNNING = ("mediaflow_serving_work_running", "Model work started and not yet finished.")


class KeyReused(Exception):
    """The key was used before for a request with another fingerprint (→ 422)."""


class InvalidKey(Exception):
    """The header is empty or too long (→ 400)."""


def parse_key(header: str | None) -> str | None:
    """The key of an ``Idempotency-Key`` header: an sf-string (``"…"``); a bare token is taken too."""
    if header is None:
        return None
    key = header.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
    return key


@dataclass
class _Entry:
    fingerprint: str
    task: asyncio.Task | None  # None once finished
    result: Any = None
    finished_at: float = 0.0


class WorkMetrics:
    """The outcome counter and running gauge, in the app's registry (and Ray's, under Serve)."""

    def __init__(self, app_metrics):
        self.app = app_metrics.app_name
        self.outcomes = Counter(*WORK, ["app", "outcome"], registry=app_metrics.registry)
        self.running = Gauge(*RUNNING, ["app"], registry=app_metrics.registry)
        for outcome in ("fresh", "joined", "replayed"):
            self.outcomes.labels(self.app, outcome)
        self.running.labels(self.app)
        self._running = 0
        self.ray = None
        if app_metrics.ray is not None:
            from ray.util import metrics

            self.ray = (metrics.Counter(*WORK, tag_keys=("app", "outcome")),
                        metrics.Gauge(*RUNNING, tag_keys=("app",)))
            for metric in self.ray:
                metric.set_default_tags({"app": self.app})

    def outcome(self, outcome: Outcome) -> None:
        self.outcomes.labels(self.app, outcome).inc()
        if self.ray:
            self.ray[0].inc(1, tags={"outcome": outcome})

    def started(self, delta: int) -> None:
        self._running += delta
        self.running.labels(self.app).set(self._running)
        if self.ray:
            self.ray[1].set(self._running)


class IdempotentWork:
    """Runs keyed work once; joins and replays it (see the module docstring)."""

    def __init__(self, *, max_results: int = 64, ttl_s: float = 3600.0, metrics: WorkMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.max_results, self.ttl_s, self.metrics, self.clock = max_results, ttl_s, metrics, clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._unkeyed: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones

    def __len__(self) -> int:
        return len(self._entries)

    def running(self) -> int:
        return sum(1 for e in self._entries.values() if e.task is not None) + len(self._unkeyed)

    async def run(self, key: str | None, fingerprint: str,
                  start: Callable[[], Awaitable[T]]) -> tuple[T, Outcome]:
        """The work's result and how it was had. ``start()`` is called only for fresh work;
        the coroutine it returns must clean up after itself (the request may be gone).
        Outcomes are counted when decided, so a request whose client left counts too."""
        self._expire()
        if key is None:
            task = self._spawn(start)
            self._unkeyed.add(task)
            task.add_done_callback(self._forget_unkeyed)
            outcome = self._count("fresh")
            return await asyncio.shield(task), outcome
        entry = self._entries.get(key)
        if entry is not None and entry.fingerprint != fingerprint:
            raise KeyReused("this Idempotency-Key was used for a different request; "
                            "a key names one request (audio and options)")
        if entry is not None and entry.task is None:
            self._entries.move_to_end(key)
            return entry.result, self._count("replayed")
        if entry is not None:
            outcome = self._count("joined")
            return await asyncio.shield(entry.task), outcome
        task = self._spawn(start)
        entry = self._entries[key] = _Entry(fingerprint, task)
        task.add_done_callback(lambda t: self._finished(key, entry, t))
        outcome = self._count("fresh")
        return await asyncio.shield(task), outcome

    def _count(self, outcome: Outcome) -> Outcome:
        if self.metrics:
            self.metrics.outcome(outcome)
        return outcome

    def _forget_unkeyed(self, task: asyncio.Task) -> None:
        self._unkeyed.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: its client may be gone, nobody else will

    def _spawn(self, start: Callable[[], Awaitable[T]]) -> asyncio.Task:
        async def tracked():
            if self.metrics:
                self.metrics.started(1)
            try:
                return await start()
            finally:
                if self.metrics:
                    self.metrics.started(-1)

        return asyncio.get_running_loop().create_task(tracked())

    def _finished(self, key: str, entry: _Entry, task: asyncio.Task) -> None:
        if self._entries.get(key) is not entry:
            return
        # a failure (or cancellation at shutdown) is not replayed: a retry runs the work again
        if task.cancelled() or task.exception() is not None or self.max_results == 0:
            del self._entries[key]
            return
        entry.result, entry.task, entry.finished_at = task.result(), None, self.clock()
        self._entries.move_to_end(key)
        self._evict()

    def _evict(self) -> None:
        finished = [k for k, e in self._entries.items() if e.task is None]
        for key in finished[: max(0, len(finished) - self.max_results)]:
            del self._entries[key]

    def _expire(self) -> None:
        horizon = self.clock() - self.ttl_s
        for key in [k for k, e in self._entries.items() if e.task is None and e.finished_at < horizon]:
            del self._entries[key]
