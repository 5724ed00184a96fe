"""``/v1/jobs``: phase, conditions, progress and outputs; live progress over SSE."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.sse import EventSourceResponse, ServerSentEvent

from mediaflow_gateway.api.deps import BackendDep, CallerDep, MediaIdPath
from mediaflow_gateway.api.schemas import ErrorBody, JobList, JobView

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
ERRORS = {code: {"model": ErrorBody} for code in (401, 403, 404, 429)}


@router.get("", response_model=JobList, responses=ERRORS)
async def list_jobs(backend: BackendDep, caller: CallerDep) -> JobList:
    return JobList(items=await backend.list_jobs())


@router.get("/{job_id}", response_model=JobView, responses=ERRORS)
async def get_job(job_id: MediaIdPath, backend: BackendDep, caller: CallerDep) -> JobView:
    return await backend.get_job(job_id)


async def existing_job_id(job_id: MediaIdPath, backend: BackendDep) -> str:
    # A dependency runs before the response starts, so an unknown job is still a 404.
    await backend.get_job(job_id)
    return job_id


@router.get("/{job_id}/events", response_class=EventSourceResponse, responses=ERRORS)
async def job_events(
    caller: CallerDep, job_id: Annotated[str, Depends(existing_job_id)], backend: BackendDep,
) -> AsyncIterable[ServerSentEvent]:
    """Server-Sent Events: ``event: job`` with the job at every change; ends at Succeeded/Failed."""
    n = 0
    async for job in backend.watch_job(job_id):
        n += 1
        yield ServerSentEvent(event="job", id=str(n), data=job.model_dump(mode="json"))
