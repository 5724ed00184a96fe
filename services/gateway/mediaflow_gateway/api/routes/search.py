"""``/v1/search`` and ``/v1/ask``: semantic search with deep links; answers with citations."""

from __future__ import annotations

from fastapi import APIRouter

from mediaflow_gateway.api.deps import BackendDep, CallerDep
from mediaflow_gateway.api.schemas import (
    AskRequest,
    AskResponse,
    CitationView,
    ErrorBody,
    HitView,
    SearchRequest,
    SearchResponse,
    deep_link,
)

router = APIRouter(prefix="/v1", tags=["search"])
ERRORS = {code: {"model": ErrorBody} for code in (401, 403, 404, 422, 429)}


@router.post("/search", response_model=SearchResponse, responses=ERRORS)
async def search(body: SearchRequest, backend: BackendDep, caller: CallerDep) -> SearchResponse:
    hits = await backend.search(body.query, media_id=body.media_id, top_k=body.top_k)
    return SearchResponse(
        query=body.query,
        hits=[HitView(**h.model_dump(), link=deep_link(h.media_id, h.seek)) for h in hits],
    )


@router.post("/ask", response_model=AskResponse, responses={**ERRORS, 503: {"model": ErrorBody}})
async def ask(body: AskRequest, backend: BackendDep, caller: CallerDep) -> AskResponse:
    answer = await backend.ask(body.question, media_id=body.media_id, top_k=body.top_k)
    return AskResponse(
        question=answer.question,
        answer=answer.answer,
        citations=[CitationView(**c.model_dump(), link=deep_link(c.media_id, c.seek)) for c in answer.citations],
        grounded=answer.grounded,
        min_similarity=answer.min_similarity,
        min_coverage=answer.min_coverage,
        dropped=answer.dropped,
        sentences=answer.support,
    )
