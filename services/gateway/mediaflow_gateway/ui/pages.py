"""Server-rendered pages. They are shells: data comes from ``/v1`` with the user's key.

Asset URLs are root-relative (``/static/...``), or under ``public_base_url`` when set:
never built from the request's ``Host`` (or forwarded) header, which a client chooses.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from mediaflow_gateway.api.deps import MediaIdPath
from mediaflow_gateway.settings import GatewaySettings

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def asset_base(settings: GatewaySettings) -> str:
    return (settings.public_base_url or "").rstrip("/")


def asset_origin(settings: GatewaySettings) -> str | None:
    """The origin the assets come from when it is not this one (for the CSP)."""
    if not settings.public_base_url:
        return None
    parts = urlsplit(settings.public_base_url)
    return f"{parts.scheme}://{parts.netloc}"


def _context(request: Request) -> dict:
    settings: GatewaySettings = request.app.state.settings
    base = asset_base(settings)
    return {
        "auth_required": request.app.state.keyring.enabled,
        "docs_enabled": settings.docs_enabled,
        "static": lambda path: f"{base}/static/{path}",
    }


@router.get("/", response_class=HTMLResponse)
async def library(request: Request):
    return templates.TemplateResponse(request, "library.html", _context(request))


@router.get("/media/{media_id}", response_class=HTMLResponse)
async def media_page(request: Request, media_id: MediaIdPath):
    return templates.TemplateResponse(request, "media.html", {**_context(request), "media_id": media_id})
