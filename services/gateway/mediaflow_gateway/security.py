"""Security headers on every response.

The UI has no inline script or style (everything is in ``ui/static``), so the
Content-Security-Policy allows this origin only; ``frame-ancestors 'none'`` (and
``X-Frame-Options`` for old browsers) keeps the pages out of frames. A response
that sets its own policy (the API docs, which load their assets from a CDN) keeps it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def content_security_policy(asset_origin: str | None = None) -> str:
    """This origin only; plus ``asset_origin`` for scripts, styles and images when the
    UI's assets are served from elsewhere (``public_base_url``)."""
    assets = f"'self' {asset_origin}" if asset_origin else "'self'"
    return "; ".join([
        "default-src 'self'",
        f"script-src {assets}",
        f"style-src {assets}",
        f"img-src {assets} data:",
        "media-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def security_headers(asset_origin: str | None = None) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(asset_origin),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",  # stream URLs carry a signature in their query
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


class SecurityHeadersMiddleware:
    """Adds ``headers`` to every HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]):
        self.app = app
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {bytes(k).lower() for k, _ in headers}
                headers += [(k, v) for k, v in self.headers if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
