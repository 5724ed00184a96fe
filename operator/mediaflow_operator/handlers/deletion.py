"""The finalizer: stop the pipeline, then remove the worker Job, Qdrant points and artifacts.

kopf runs this while it is still stopping the MediaJob's daemon, and neither a stage
thread nor a running Job's pod can be interrupted. Cleaning at once would let them
write after the cleanup (orphaned points and artifacts). So, in order: mark the
MediaJob as deleting (the daemon starts nothing more), wait for the daemon to end,
wait for a stage still running in a thread, delete the Job and wait until it and its
pods are gone (foreground deletion), and only then delete what the media left behind.
Each wait is bounded; if it runs out, kopf retries the handler a little later.
"""

from __future__ import annotations

import asyncio

import kopf

from mediaflow.status import mediajob_media_id
from mediaflow_operator import runtime
from mediaflow_operator.jobs import job_name, job_namespace

WAIT_SECONDS = 10.0
RETRY_DELAY = 2.0


async def delete_media(name: str, namespace: str, logger, **_) -> None:
    rt = runtime.current()
    key, media_id = f"{namespace}/{name}", mediajob_media_id(namespace, name)
    rt.deleting.add(key)

    daemon = rt.daemons.get(key)
    if daemon is not None and not daemon.done():
        await asyncio.wait({daemon}, timeout=WAIT_SECONDS)
        if not daemon.done():
            raise kopf.TemporaryError("waiting for the pipeline of this MediaJob to stop", delay=RETRY_DELAY)

    stage = rt.stages_in_flight.get(media_id)
    if stage is not None and not stage.done():
        await asyncio.wait({asyncio.wrap_future(stage)}, timeout=WAIT_SECONDS)
        if not stage.done():
            raise kopf.TemporaryError("waiting for a running stage to finish writing", delay=RETRY_DELAY)

    jobs_ns, job = job_namespace(namespace, rt.settings), job_name(namespace, name)
    if await rt.kube.get_job(jobs_ns, job) is not None:
        await rt.kube.delete_job(jobs_ns, job)
        if await rt.kube.get_job(jobs_ns, job) is not None:
            raise kopf.TemporaryError(f"waiting for Job {job} and its pods to go", delay=RETRY_DELAY)

    await asyncio.to_thread(rt.pipeline.delete, media_id)
    rt.jobs.forget(jobs_ns, job)
    rt.deleting.discard(key)
    rt.reruns.pop(key, None)
    rt.retry_base.pop(key, None)
    rt.note_phase(key, None)
    logger.info("deleted the Job, points and artifacts of media %s", media_id)
