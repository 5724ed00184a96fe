"""``/docs`` (Swagger UI) and ``/redoc``, when ``docs_enabled``: FastAPI's pages, with a
Content-Security-Policy of their own. They load their assets from a CDN and carry one
inline script (allowed by its hash, not by ``'unsafe-inline'``); ReDoc injects its
styles at run time, so their ``style-src`` allows inline styles."""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

CDN = "https://cdn.jsdelivr.net"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def _hashes(html: str) -> str:
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html))


def docs_csp(html: str) -> str:
    return "; ".join([
        "default-src 'self'",
        f"script-src 'self' {CDN} {_hashes(html)}".rstrip(),
        f"style-src 'self' {CDN} https://fonts.googleapis.com 'unsafe-inline'",
        "font-src 'self' https://fonts.gstatic.com",
        f"img-src 'self' data: {CDN} https://fastapi.tiangolo.com",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def _page(response: HTMLResponse) -> HTMLResponse:
    html = response.body.decode()
    return HTMLResponse(html, headers={"Content-Security-Policy": docs_csp(html)})


def docs_router(title: str, openapi_url: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    async def swagger() -> HTMLResponse:
        return _page(get_swagger_ui_html(openapi_url=openapi_url, title=f"{title} - API",
                                         oauth2_redirect_url=None))

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return _page(get_redoc_html(openapi_url=openapi_url, title=f"{title} - ReDoc"))

    return router
