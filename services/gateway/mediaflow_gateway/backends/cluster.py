"""Cluster backend: a job is a ``MediaJob`` (mediaflow.dev/v1alpha1) run by the operator.

The gateway creates, reads and deletes MediaJobs; the operator writes their
``status``. Both use the one status model of the core (:mod:`mediaflow.status`),
and the media id of a MediaJob is what the operator derives from its namespace
and name (:func:`mediaflow.status.mediajob_media_id`): the gateway stores an upload
under that id, so the operator's transcript, summary and index points are found there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from mediaflow.errors import NotFoundError
from mediaflow.spec import STAGE_NAMES, MediaJobSpec
from mediaflow.status import TERMINAL_PHASES, MediaJobStatus, condition_type, mediajob_media_id
from mediaflow_gateway.api.errors import ApiError
from mediaflow_gateway.api.schemas import Condition, JobView
from mediaflow_gateway.backends.base import Backend, outputs_for
from mediaflow_gateway.backends.kube import KubeClient

MANAGED_BY = {"app.kubernetes.io/managed-by": "mediaflow-gateway"}
MEDIA_ID_LABEL = "mediaflow.dev/media-id"
_STAGE_BY_CONDITION = {condition_type(stage): stage for stage in STAGE_NAMES}


def job_from_object(obj: dict[str, Any]) -> JobView:
    meta, spec = obj.get("metadata", {}), obj.get("spec", {})
    status = MediaJobStatus.model_validate(obj.get("status") or {})
    # The API names stage conditions after the stages, as the embedded backend does.
    conditions = [Condition(type=_STAGE_BY_CONDITION[c.type], status=c.status, reason=c.reason,
                            message=c.message, last_transition_time=c.last_transition_time)
                  for c in status.conditions if c.type in _STAGE_BY_CONDITION]
    return JobView(
        id=meta["name"],
        media_id=mediajob_media_id(meta["namespace"], meta["name"]),
        title=(spec.get("source") or {}).get("title"),
        phase=status.phase,
        progress=status.progress_fraction,
        stage=status.current_stage,
        conditions=conditions,
        message=status.message,
        created_at=meta.get("creationTimestamp"),
        updated_at=status.finished_at,
    )


def _managed(obj: dict[str, Any]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in MANAGED_BY.items())


class ClusterBackend(Backend):
    kind = "cluster"

    def __init__(self, settings, pipeline, kube: KubeClient, *, owns_pipeline: bool = False):
        super().__init__(settings, pipeline, owns_pipeline=owns_pipeline)
        self.kube = kube

    async def stop(self) -> None:
        await self.kube.close()
        await super().stop()

    def job_id_for_content(self, sha256: str) -> str:
        # The MediaJob's name: the same bytes are the same MediaJob (and so the same media id).
        return f"m-{sha256[:16]}"

    def media_id_for_job(self, job_id: str) -> str:
        return mediajob_media_id(self.kube.namespace, job_id)

    async def submit(self, job_id: str, spec: MediaJobSpec) -> JobView:
        body = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
        labels = {**MANAGED_BY, MEDIA_ID_LABEL: self.media_id_for_job(job_id)}
        try:
            return job_from_object(await self.kube.create(job_id, body, labels))
        except ApiError as exc:
            if exc.status != 409:
                raise
        # Created meanwhile (another replica, the same bytes): that MediaJob is this job.
        try:
            return job_from_object(await self._own(job_id))
        except NotFoundError:
            raise ApiError(409, f"a MediaJob named {job_id} exists that this gateway did not create") from None

    async def _own(self, job_id: str) -> dict[str, Any]:
        """A MediaJob this gateway created; any other in the namespace is not its business."""
        obj = await self.kube.get(job_id)
        if not _managed(obj):
            raise NotFoundError(f"no such job: {job_id}")
        return obj

    async def get_job(self, job_id: str) -> JobView:
        job = job_from_object(await self._own(job_id))
        if job.phase == "Succeeded":
            job.outputs = await asyncio.to_thread(outputs_for, job.media_id, self.store)
        return job

    async def _mediajobs(self) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
        # The label selector is the server's filter; checked here too, as a server may ignore it.
        return [o for o in await self.kube.list(label_selector=selector) if _managed(o)]

    async def list_jobs(self) -> list[JobView]:
        jobs = [job_from_object(o) for o in await self._mediajobs()]
        return sorted(jobs, key=lambda j: (j.created_at is None, j.created_at), reverse=True)

    async def job_id_for_media(self, media_id: str) -> str | None:
        for obj in await self._mediajobs():
            meta = obj["metadata"]
            if mediajob_media_id(meta["namespace"], meta["name"]) == media_id:
                return meta["name"]
        return None

    async def watch_job(self, job_id: str) -> AsyncIterator[JobView]:
        # Polling keeps this small; a watch would save requests at many subscribers.
        last = None
        while True:
            job = await self.get_job(job_id)
            if job != last:
                yield job
                last = job
            if job.phase in TERMINAL_PHASES:
                return
            await asyncio.sleep(self.settings.job_poll_seconds)

    async def forget_job(self, job_id: str) -> None:
        """Delete the MediaJob and wait for the operator's finalizer, which removes the
        media's Job, points and artifacts once nothing of the pipeline writes any more."""
        try:
            job = job_from_object(await self._own(job_id))
        except NotFoundError:
            return
        if job.phase not in TERMINAL_PHASES:
            raise ApiError(409, f"job {job_id} is still {job.phase.lower()}; delete it when it has finished")
        try:
            await self.kube.delete(job_id)
        except NotFoundError:
            return
        deadline = time.monotonic() + self.settings.delete_wait_seconds
        while time.monotonic() < deadline:
            try:
                await self.kube.get(job_id)
            except NotFoundError:
                return
            await asyncio.sleep(self.settings.job_poll_seconds)
        raise ApiError(503, f"MediaJob {job_id} is being deleted: the operator has not finished cleaning up yet",
                       headers={"Retry-After": "10"})

    async def delete(self, media_id: str) -> None:
        job_id = await self.job_id_for_media(media_id)
        if job_id is not None:
            # The operator's finalizer cleans the media once its pipeline has stopped; what
            # remains after the MediaJob is gone (none was added: no operator ran) nothing writes.
            await self.forget_job(job_id)
            await self._in_thread_locked(self.pipeline.delete, media_id)
        elif not await self._in_thread_locked(self.pipeline.delete, media_id):
            raise NotFoundError(f"no such media: {media_id}")

    async def readiness(self) -> dict[str, str]:
        checks = await super().readiness()
        try:
            await self.kube.ping()
            checks["kubernetes"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["kubernetes"] = f"unreachable: {exc}"
        return checks
