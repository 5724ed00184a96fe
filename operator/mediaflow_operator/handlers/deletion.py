"""The finalizer: on delete, remove the media's Qdrant points and artifacts first."""

from __future__ import annotations

import asyncio

import kopf

from mediaflow_operator import metrics, runtime
from mediaflow_operator.jobs import job_name, media_id_for


async def delete_media(name: str, namespace: str, body: kopf.Body, logger, **_) -> None:
    rt = runtime.current()
    media_id = media_id_for(namespace, name)
    await asyncio.to_thread(rt.pipeline.delete, media_id)
    rt.jobs.forget(namespace, job_name(name))
    rt.phases.pop(f"{namespace}/{name}", None)
    metrics.publish_phases(rt.phases)
    logger.info("deleted points and artifacts of media %s", media_id)
