"""Continuous batching of requests into one model call: what arrives while the model is busy
goes together into its next call.

Why not ``@serve.batch``: Ray Serve's batch queue (2.60) cuts the next batch as soon as its
wait expires, whether or not the previous batch is still running; with one batch at a time
(``max_concurrent_batches=1``) the batches it cut wait on a semaphore instead of growing. On a
loaded replica that made almost every batch one request (305 calls for 342 requests from 8
concurrent clients, measured with ``bench/serving.py``), each encoding its 32 texts alone:
many small padded batches instead of one sorted by length. Here a batch is cut only when the
model is free to take it, so under load it holds everything that queued meanwhile (up to
``max_requests`` requests and ``max_inputs`` inputs), and an idle model starts at once (or
after ``wait_s``, to gather a burst).

Why a cap on inputs: a call that took every client's request would answer them all at once,
and the model would sit idle until the first of them came back; a call of a few requests
leaves the others' requests queued behind it, so the model always has its next batch.

The same queue runs under Ray Serve and under plain uvicorn: the app batches the same way
wherever it is served.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class ContinuousBatcher(Generic[Item, Result]):
    """``await batcher(item)`` → ``call_many([... item ...])[i]``, one ``call_many`` at a time.

    ``call_many`` gets a list of items and returns one result per item, in order. A failure of
    the call fails every request in it (each caller sees the exception); a request whose
    caller went away (cancelled) before its batch was cut is left out of it."""

    def __init__(self, call_many: Callable[[list[Item]], Awaitable[list[Result]]], *,
                 max_requests: int = 64, max_inputs: int | None = None,
                 inputs_of: Callable[[Item], int] = lambda item: 1, wait_s: float = 0.0):
        if max_requests < 1:
            raise ValueError("max_requests must be at least 1")
        self.call_many = call_many
        self.max_requests = max_requests
        self.max_inputs = max_inputs
        self.inputs_of = inputs_of
        self.wait_s = wait_s
        self._pending: deque[tuple[Item, asyncio.Future]] = deque()
        self._runner: asyncio.Task | None = None
        self._in_call = 0

    def running(self) -> int:
        """Requests queued or inside the model call now: the replica's health check runs no
        probe of its own on the model meanwhile (``mediaflow_serving.health``)."""
        return self._in_call + sum(not future.done() for _, future in self._pending)

    async def __call__(self, item: Item) -> Result:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="mediaflow-batcher")
        return await future

    def _cut(self) -> list[tuple[Item, asyncio.Future]]:
        """The next batch: queued requests in order, while under both caps (at least one)."""
        batch, inputs = [], 0
        while self._pending and len(batch) < self.max_requests:
            item, future = self._pending[0]
            if future.done():  # cancelled: its caller is gone
                self._pending.popleft()
                continue
            size = self.inputs_of(item)
            if batch and self.max_inputs is not None and inputs + size > self.max_inputs:
                break
            self._pending.popleft()
            batch.append((item, future))
            inputs += size
        return batch

    async def _run(self) -> None:
        # The model was idle: a short wait lets a burst go in one call.
        if self.wait_s > 0:
            await asyncio.sleep(self.wait_s)
        while self._pending:
            batch = self._cut()
            if not batch:
                continue
            self._in_call = len(batch)
            try:
                results = await self.call_many([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} requests got {len(results)} results")
            except asyncio.CancelledError:  # the server is stopping: no caller waits forever
                for _, future in [*batch, *self._pending]:
                    future.cancel()
                raise
            except Exception as exc:  # every request of the batch fails with it, none hangs
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self._in_call = 0
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
