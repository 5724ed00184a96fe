"""A budget of bytes shared by concurrent requests: each holds its share while it works.

The transcription app decodes a whole file into memory (WhisperX's VAD and batching need the
whole waveform). With ``max_ongoing_requests`` requests on a replica, each decoding before it
waits for the engine, memory would grow with the queue; under a budget, a request decodes only
once its share is free, so decoded audio never takes more than the budget at once.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager


class OverBudget(ValueError):
    """One request alone needs more than the whole budget."""


class ByteBudget:
    def __init__(self, total: int):
        self.total = total
        self.in_use = 0
        self._freed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, amount: int):
        if amount > self.total:
            raise OverBudget(f"needs {amount} bytes, over the budget of {self.total}")
        async with self._freed:
            # first come, first served is not promised: a small request may pass a large one
            await self._freed.wait_for(lambda: self.in_use + amount <= self.total)
            self.in_use += amount
        try:
            yield
        finally:
            async with self._freed:
                self.in_use -= amount
                self._freed.notify_all()
