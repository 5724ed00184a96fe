"""Server-rendered pages. They are shells: data comes from ``/v1`` with the user's key."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from mediaflow_gateway.api.deps import MediaIdPath

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def _context(request: Request) -> dict:
    return {"auth_required": request.app.state.keyring.enabled}


@router.get("/", response_class=HTMLResponse)
async def library(request: Request):
    return templates.TemplateResponse(request, "library.html", _context(request))


@router.get("/media/{media_id}", response_class=HTMLResponse)
async def media_page(request: Request, media_id: MediaIdPath):
    return templates.TemplateResponse(request, "media.html", {**_context(request), "media_id": media_id})
