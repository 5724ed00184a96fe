"""``/v1/media``: upload (multipart, streamed) or submit a URL; read, stream and delete."""

from __future__ import annotations

import asyncio
import posixpath
import uuid
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from pydantic import ValidationError

from mediaflow.errors import InvalidMediaError, InvalidSourceError
from mediaflow.models import Transcript
from mediaflow.sources import check_under_roots, check_url_source
from mediaflow.languages import LANGUAGES
from mediaflow.spec import MediaJobSpec
from mediaflow.stages.probe import probe_file
from mediaflow.subtitles import RENDERERS
from mediaflow_gateway.api.deps import BackendDep, CallerDep, MediaIdPath, SignerDep, require_api_key
from mediaflow_gateway.api.errors import ApiError
from mediaflow_gateway.api.ranges import ranged_response
from mediaflow_gateway.api.schemas import (
    CreateMediaFromUrl,
    ErrorBody,
    JobView,
    MediaCreated,
    MediaList,
    MediaView,
    SummaryView,
)
from mediaflow_gateway.api.upload import StagedUpload, adopt, discard, receive_upload
from mediaflow_gateway.backends.base import Backend, MediaInfo

router = APIRouter(prefix="/v1/media", tags=["media"])
ERRORS = {code: {"model": ErrorBody} for code in (401, 403, 404, 422, 429)}
TEXT_TYPES = {"srt": "application/x-subrip", "vtt": "text/vtt", "txt": "text/plain"}

UPLOAD_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"},
                               "title": {"type": "string"}, "language": {"type": "string"}},
            }},
            "application/json": {"schema": {"$ref": "#/components/schemas/CreateMediaFromUrl"}},
        },
    }
}


def new_job_id() -> str:
    # A URL's bytes are only known once the job has fetched them: a random id.
    return uuid.uuid4().hex[:16]


def media_view(info: MediaInfo, signer) -> MediaView:
    return MediaView(**info.__dict__, language_name=LANGUAGES[info.language].title() if info.language in LANGUAGES
                     else None, stream_url=signer.sign(info.media_id), page_url=f"/media/{info.media_id}")


def _created(media_id: str, job: JobView, *, existing: bool = False) -> MediaCreated:
    return MediaCreated(media_id=media_id, job_id=job.id, job_url=f"/v1/jobs/{job.id}",
                        events_url=f"/v1/jobs/{job.id}/events", existing=existing)


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=MediaCreated,
             openapi_extra=UPLOAD_OPENAPI,
             responses={**ERRORS, 200: {"model": MediaCreated, "description": "These bytes were uploaded "
                                        "before: their existing job (not processed again)."},
                        413: {"model": ErrorBody}, 415: {"model": ErrorBody}, 503: {"model": ErrorBody}})
async def create_media(request: Request, response: Response, backend: BackendDep, caller: CallerDep) -> MediaCreated:
    """Upload a file (multipart ``file``, optional ``title``, ``language``) or submit ``{url}``.

    An upload's media id derives from its bytes (sha256): the same bytes again answer 200
    with the job they already have, whatever its phase, and are neither stored nor
    processed again (to process them anew, DELETE the media first). A new job is 202."""
    if request.headers.get("content-type", "").startswith("application/json"):
        return await _submit_url(request, backend)
    upload = await receive_upload(request, backend.store, backend.max_upload_bytes)
    try:
        job_id = backend.job_id_for_content(upload.sha256)
        media_id = backend.media_id_for_job(job_id)
        spec = await _upload_spec(backend, upload, media_id)
        async with backend.submitting(job_id):
            existing = await backend.existing_job(job_id)
            if existing is not None:
                response.status_code = status.HTTP_200_OK
                return _created(media_id, existing, existing=True)
            job = await _store_and_submit(backend, upload, job_id, media_id, spec)
    finally:  # moved into the store, or refused: the staging dir goes either way
        await asyncio.to_thread(discard, backend.store, upload.staging_dir)
    return _created(media_id, job)


async def _submit_url(request: Request, backend: Backend) -> MediaCreated:
    job_id = new_job_id()
    media_id = backend.media_id_for_job(job_id)
    try:
        body = CreateMediaFromUrl.model_validate_json(await request.body())
    except ValidationError as exc:
        # located like FastAPI's own body errors: ["body", field, ...]
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors(include_url=False, include_context=False)]) from None
    if "://" not in body.url:  # a path on this server: only under a configured media root
        try:
            check_under_roots(Path(body.url), backend.settings.media_roots)
        except InvalidSourceError as exc:
            raise ApiError(422, f"{exc}: the API takes uploads and http(s)/s3 URLs") from None
    elif body.url.startswith(("http://", "https://")):
        try:  # an address literal is refused now; a name when the job fetches it (pinned, rebinding-safe)
            check_url_source(body.url, allow_private=backend.pipeline.settings.allow_private_urls)
        except InvalidSourceError as exc:
            raise ApiError(422, str(exc)) from None
    spec = MediaJobSpec(source={"uri": body.url, "title": body.title}, language=body.language,
                        stages=body.stages)
    try:
        job = await backend.submit(job_id, spec)
    except BaseException:
        # Not accepted (queue full, API unreachable, ...): keep nothing of the request.
        await asyncio.to_thread(backend.store.delete_media, media_id)
        raise
    return _created(media_id, job)


async def _upload_spec(backend: Backend, upload: StagedUpload, media_id: str) -> MediaJobSpec:
    """The job's spec, once ffprobe has confirmed what the magic bytes suggested (415 if not)."""
    try:
        if backend.store.is_local:
            await asyncio.to_thread(probe_file, Path(upload.path))
        return MediaJobSpec.model_validate({
            "source": {"uri": backend.source_uri(media_id, upload.artifact),
                       "title": (upload.fields.get("title") or upload.filename)[:256]},
            "language": upload.fields.get("language") or None,
        })
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
    except InvalidMediaError as exc:
        raise ApiError(415, str(exc)) from None


async def _store_and_submit(backend: Backend, upload: StagedUpload, job_id: str, media_id: str,
                            spec: MediaJobSpec) -> JobView:
    store = backend.store
    media_dir = posixpath.dirname(store.path(media_id, upload.artifact))
    had_dir = await asyncio.to_thread(store.fs.exists, media_dir)
    moved = await asyncio.to_thread(adopt, store, upload, media_id)
    try:
        return await backend.submit(job_id, spec)
    except BaseException:
        # Not accepted (queue full, API unreachable, ...): keep nothing this request added.
        if not had_dir:
            await asyncio.to_thread(store.delete_media, media_id)
        elif moved:
            await asyncio.to_thread(store.delete, media_id, upload.artifact)
        raise


@router.get("", response_model=MediaList, responses=ERRORS)
async def list_media(backend: BackendDep, signer: SignerDep, caller: CallerDep) -> MediaList:
    return MediaList(items=[media_view(m, signer) for m in await backend.list_media()])


@router.get("/{media_id}", response_model=MediaView, responses=ERRORS)
async def get_media(media_id: MediaIdPath, backend: BackendDep, signer: SignerDep, caller: CallerDep) -> MediaView:
    return media_view(await backend.media(media_id), signer)


@router.get("/{media_id}/transcript", response_model=Transcript, responses=ERRORS)
async def get_transcript(
    media_id: MediaIdPath, backend: BackendDep, caller: CallerDep,
    format: Annotated[Literal["json", "srt", "vtt", "txt"], Query(description="Rendering.")] = "json",
):
    """The timed transcript: JSON segments, or SRT / WebVTT / plain text."""
    transcript = await backend.transcript(media_id)
    if format == "json":
        return transcript
    return PlainTextResponse(RENDERERS[format](transcript), media_type=TEXT_TYPES[format],
                             headers={"Content-Disposition": f'inline; filename="{media_id}.{format}"'})


@router.get("/{media_id}/summary", response_model=SummaryView, responses=ERRORS)
async def get_summary(media_id: MediaIdPath, backend: BackendDep, caller: CallerDep) -> SummaryView:
    record, markdown = await backend.summary(media_id)
    return SummaryView(media_id=media_id, model=record.model, text=record.text, markdown=markdown)


@router.get("/{media_id}/stream", responses={**ERRORS, 206: {"description": "Partial content"},
                                              416: {"model": ErrorBody}})
async def stream_media(
    request: Request, media_id: MediaIdPath, backend: BackendDep, signer: SignerDep,
    expires: Annotated[str | None, Query(max_length=20, description="Signed URL: expiry (Unix time).")] = None,
    sig: Annotated[str | None, Query(max_length=128, description="Signed URL: signature.")] = None,
):
    """The media bytes with range requests. Bearer key, or the signed URL from the media view."""
    if not signer.verify(media_id, expires, sig):
        require_api_key(request)
    source = await backend.source_file(media_id)
    return ranged_response(source.open, source.size, source.mime, request.headers.get("range"),
                           filename=f"{media_id}{source.extension}")


@router.delete("/{media_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={**ERRORS, 409: {"model": ErrorBody}})
async def delete_media(media_id: MediaIdPath, backend: BackendDep, caller: CallerDep) -> Response:
    """Delete the media's artifacts, its indexed chunks and its job."""
    await backend.delete(media_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
