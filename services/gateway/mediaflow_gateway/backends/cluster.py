"""Cluster backend: a job is a ``MediaJob`` (mediaflow.dev/v1alpha1) run by the operator.

The gateway only creates and reads MediaJobs; the operator owns the CRD and
writes ``status`` (phase, conditions, progress). The MediaJob's name is the
media id, so results are found in the shared artifact store and Qdrant.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mediaflow.errors import NotFoundError
from mediaflow.spec import MediaJobSpec
from mediaflow_gateway.api.schemas import TERMINAL_PHASES, Condition, JobView
from mediaflow_gateway.backends.base import Backend, outputs_for
from mediaflow_gateway.backends.kube import KubeClient

MANAGED_BY = {"app.kubernetes.io/managed-by": "mediaflow-gateway"}
MEDIA_ID_LABEL = "mediaflow.dev/media-id"


class _Status(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class KubeCondition(_Status):
    type: str
    status: Literal["True", "False", "Unknown"] = "Unknown"
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None


class MediaJobStatus(_Status):
    """What the gateway reads of a MediaJob's status (the operator writes it)."""

    phase: str = "Pending"
    progress: float = Field(default=0.0, ge=0, le=1)
    stage: str | None = None
    conditions: list[KubeCondition] = []
    message: str | None = None


def job_from_object(obj: dict[str, Any]) -> JobView:
    meta, spec = obj.get("metadata", {}), obj.get("spec", {})
    status = MediaJobStatus.model_validate(obj.get("status") or {})
    phase = status.phase if status.phase in ("Pending", "Running", "Succeeded", "Failed") else "Running"
    name = meta["name"]
    return JobView(
        id=name,
        media_id=meta.get("labels", {}).get(MEDIA_ID_LABEL, name),
        title=(spec.get("source") or {}).get("title"),
        phase=phase,
        progress=1.0 if phase == "Succeeded" else status.progress,
        stage=status.stage,
        conditions=[Condition(**c.model_dump()) for c in status.conditions],
        message=status.message,
        created_at=meta.get("creationTimestamp"),
    )


class ClusterBackend(Backend):
    kind = "cluster"

    def __init__(self, settings, pipeline, kube: KubeClient, *, owns_pipeline: bool = False):
        super().__init__(settings, pipeline, owns_pipeline=owns_pipeline)
        self.kube = kube

    async def stop(self) -> None:
        await self.kube.close()
        await super().stop()

    async def submit(self, media_id: str, spec: MediaJobSpec) -> JobView:
        body = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
        obj = await self.kube.create(media_id, body, {**MANAGED_BY, MEDIA_ID_LABEL: media_id})
        return job_from_object(obj)

    async def get_job(self, job_id: str) -> JobView:
        job = job_from_object(await self.kube.get(job_id))
        if job.phase == "Succeeded":
            job.outputs = await asyncio.to_thread(outputs_for, job.media_id, self.store)
        return job

    async def list_jobs(self) -> list[JobView]:
        objects = await self.kube.list(label_selector="app.kubernetes.io/managed-by=mediaflow-gateway")
        jobs = [job_from_object(o) for o in objects]
        return sorted(jobs, key=lambda j: (j.created_at is None, j.created_at), reverse=True)

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
        with contextlib.suppress(NotFoundError):
            await self.kube.delete(job_id)

    async def readiness(self) -> dict[str, str]:
        checks = await super().readiness()
        try:
            await self.kube.ping()
            checks["kubernetes"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["kubernetes"] = f"unreachable: {exc}"
        return checks
