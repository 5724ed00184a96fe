"""What every request passes before the app sees it (pure ASGI: nothing of the body is read).

FastAPI parses a JSON body before any dependency runs, so neither the key check nor a
body limit can be a dependency. In order:

1. The path: no ``.``/``..`` segment (also percent-encoded), no control character, at
   most ``MAX_PATH_BYTES`` → 400 / 414.
2. ``/v1``: a stream URL with a valid signature passes; anything else needs a bearer key
   (401 missing, 403 wrong). Failures are charged to the client address (429 once its
   budget is spent); a right key is charged to its own rate limit (429).
3. The body: a ``Content-Length`` above the limit is a 413 at once. An upload
   (``POST /v1/media``, multipart) is counted as it streams against the upload limit
   (the parser in :mod:`~mediaflow_gateway.api.upload` bounds the file and each field);
   every other body is read here, up to ``max_body_bytes`` (413 beyond), and handed on.

The key id of the caller goes to ``request.state`` for the routes (``deps.require_api_key``).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote

from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mediaflow_gateway.api.errors import ApiError, error_response
from mediaflow_gateway.api.upload import MULTIPART_OVERHEAD

CALLER = "mediaflow.caller"
MAX_PATH_BYTES = 2048
MAX_CONTENT_LENGTH_DIGITS = 19
_STREAM = re.compile(r"/v1/media/([^/]+)/stream")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body crosses its limit; an HTTPException so
    that FastAPI's body parsing passes it on unchanged (the app renders it as a 413)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


def _header(scope: Scope, name: bytes) -> list[bytes]:
    return [v for k, v in scope.get("headers", []) if k.lower() == name]


def check_path(scope: Scope) -> None:
    raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    if len(raw) > MAX_PATH_BYTES:
        raise ApiError(414, f"the URL path is longer than {MAX_PATH_BYTES} bytes")
    path = scope["path"]
    if _CONTROL.search(path):
        raise ApiError(400, "the URL path contains a control character")
    # Segments as the router sees them, and once more decoded (%252e%252e → %2e%2e → ..).
    for segment in re.split(r"[/\\]", path):
        if segment in (".", "..") or unquote(segment) in (".", ".."):
            raise ApiError(400, "the URL path contains a '.' or '..' segment")


def content_length(scope: Scope) -> int | None:
    values = _header(scope, b"content-length")
    if not values:
        return None
    distinct = {v.strip() for v in values}
    value = distinct.pop()
    if distinct or not (value.isdigit() and len(value) <= MAX_CONTENT_LENGTH_DIGITS):
        raise ApiError(400, "invalid Content-Length header")
    return int(value)


def _is_upload(scope: Scope) -> bool:
    if scope["method"] != "POST" or scope["path"].rstrip("/") != "/v1/media":
        return False
    content_type = b"".join(_header(scope, b"content-type")[:1]).lower()
    return content_type.startswith(b"multipart/form-data")


def needs_key(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


class RequestGuard:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        try:
            check_path(scope)
            if needs_key(scope["path"]) and not self._signed_stream(scope, state):
                scope.setdefault("state", {})[CALLER] = self._authenticate(scope, state)
            upload = _is_upload(scope)
            limit = state.backend.max_upload_bytes + MULTIPART_OVERHEAD if upload else state.settings.max_body_bytes
            declared = content_length(scope)
            if declared is not None and declared > limit:
                raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        except ApiError as exc:
            await self._refuse(scope, receive, send, exc)
            return

        if upload:
            await self._call_counting(scope, receive, send, limit)
            return
        try:
            body = await self._read_body(receive, limit)
        except BodyTooLarge as exc:
            await self._refuse(scope, receive, send, ApiError(413, exc.detail))
            return
        if body is None:  # the client went away
            return
        await self.app(scope, _replay(body, receive), send)

    # -- auth ------------------------------------------------------------------
    @staticmethod
    def _signed_stream(scope: Scope, state) -> bool:
        match = _STREAM.fullmatch(scope["path"])
        if not match or scope["method"] not in ("GET", "HEAD"):
            return False
        try:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"), max_num_fields=20)
        except ValueError:  # more fields than a stream URL has: not a signed one
            return False
        expires, sig = query.get("expires", [None])[0], query.get("sig", [None])[0]
        return state.signer.verify(match.group(1), expires, sig)

    @staticmethod
    def _authenticate(scope: Scope, state) -> str:
        client = (scope.get("client") or ("unknown", 0))[0]
        failures = state.failures
        failures.refuse_if_empty(client)  # a spent budget refuses right keys too: no oracle
        try:
            caller = state.keyring.authenticate(b"".join(_header(scope, b"authorization")[:1]) or None)
        except ApiError as exc:
            if exc.status == 403:  # a key was tried; a request without one guesses nothing
                failures.charge(client)
            raise
        state.limiter.check(caller)
        return caller

    # -- bodies ----------------------------------------------------------------
    @staticmethod
    async def _read_body(receive: Receive, limit: int) -> bytes | None:
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _call_counting(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        seen = {"bytes": 0, "started": False}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:  # not rendered by the app (raised outside a route)
            if seen["started"]:
                raise
            await self._refuse(scope, receive, send, ApiError(413, exc.detail))

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, exc: ApiError) -> None:
        _label_route(scope)
        response = error_response(exc.status, exc.message, code=exc.code, headers=exc.headers)
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read by the guard, as one message; then the server's receive (disconnects)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay


def _flat_routes(routes):
    for route in routes:
        # FastAPI keeps an included router as one entry; its routes are its effective contexts.
        contexts = getattr(route, "effective_route_contexts", None)
        yield from (contexts() if contexts else [route])


def _label_route(scope: Scope) -> None:
    # Metrics label a refused request by the route it was meant for (routing has not run),
    # or "unmatched"; matching only reads the path and method.
    if "route" in scope:
        return
    try:
        for route in _flat_routes(scope["app"].router.routes):
            match, _ = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = getattr(route, "original_route", route)
                return
    except Exception:  # noqa: BLE001 - a label is not worth failing the answer for
        return
