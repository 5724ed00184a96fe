"""Rerun a Failed MediaJob: ``kubectl annotate mediajob NAME mediaflow.dev/rerun=<new value>``.

The spec is immutable (the chart's admission policy), so a rerun is asked for with an
annotation, like ``kubectl rollout restart`` does. The MediaJob's daemon does the work: after a failure it
stays alive and waits, and when the annotation's value differs from
``status.observedRerun`` (the value when the job started or was last rerun) it records the
new value, goes back to Pending and runs only the stages whose condition is not True.
This handler only wakes that daemon; the daemon also checks the annotation when it
starts, so a request made while the operator was down is not lost.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mediaflow_operator import runtime

RERUN_ANNOTATION = "mediaflow.dev/rerun"
# kopf splits a dotted string into a path; the annotation key has dots of its own.
RERUN_FIELD = ("metadata", "annotations", RERUN_ANNOTATION)


def requested(body: Any) -> str | None:
    """The rerun annotation's value on ``body`` (a live kopf body or a plain dict), if any."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(RERUN_ANNOTATION)
    return None if value is None else str(value)


def wakeup(key: str) -> asyncio.Event:
    """The event the daemon of MediaJob ``key`` ("ns/name") waits on between runs."""
    return runtime.current().reruns.setdefault(key, asyncio.Event())


async def rerun_requested(name: str, namespace: str, new, logger, **_) -> None:
    """``@kopf.on.field`` of the annotation: wake the daemon, which decides.

    A coroutine: kopf runs plain functions in a thread, and an asyncio.Event is not thread-safe."""
    if new is not None:
        logger.info("rerun requested (%s=%s)", RERUN_ANNOTATION, new)
    # Only a waiting daemon has an event; a busy one reads the annotation before it waits.
    if (event := runtime.current().reruns.get(f"{namespace}/{name}")) is not None:
        event.set()
