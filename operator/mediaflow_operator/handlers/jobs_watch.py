"""Follow the worker Jobs: every change wakes the MediaJob daemon waiting on that Job."""

from __future__ import annotations

from mediaflow_operator import runtime


def job_event(event: dict, name: str, namespace: str, **_) -> None:
    rt = runtime.current()
    rt.jobs.seen(namespace, name, None if event.get("type") == "DELETED" else event.get("object"))
