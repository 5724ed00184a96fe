"""Follow the worker Jobs: every change wakes the MediaJob daemon waiting on that Job."""

from __future__ import annotations

from mediaflow_operator import runtime


async def job_event(event: dict, name: str, namespace: str, **_) -> None:
    # A coroutine: kopf runs plain functions in a thread, and the JobWatch's asyncio.Events
    # may only be set from the operator's event loop.
    rt = runtime.current()
    rt.jobs.seen(namespace, name, None if event.get("type") == "DELETED" else event.get("object"))
