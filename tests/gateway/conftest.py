"""Gateway fixtures: apps over the embedded backend with the session's real models."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from mediaflow.pipeline import Pipeline
from mediaflow_gateway.backends.embedded import EmbeddedBackend
from mediaflow_gateway.main import create_app
from mediaflow_gateway.settings import GatewaySettings
from tests.conftest import engines_for, make_settings

API_KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def gateway_settings(**overrides) -> GatewaySettings:
    values = {"api_keys": [API_KEY], "rate_limit_per_minute": 10_000}
    values.update(overrides)
    return GatewaySettings(**values)


@contextlib.asynccontextmanager
async def running_app(data_dir, engines_cache, *, llm_url: str | None = None,
                      core_overrides: dict | None = None, **gateway_overrides) -> AsyncIterator[httpx.AsyncClient]:
    """An app (lifespan entered) on its own data dir, reached through ``httpx.ASGITransport``."""
    core = make_settings(data_dir, llm_url=llm_url, summary=llm_url is not None, **(core_overrides or {}))
    pipeline = Pipeline(core, engines=engines_for(core, engines_cache))
    settings = gateway_settings(**gateway_overrides)
    app = create_app(settings, EmbeddedBackend(settings, pipeline, owns_pipeline=True))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=600) as client:
            client.app = app
            yield client


def multipart(name: str, payload: bytes, **fields: str) -> dict:
    return {"files": {"file": (name, payload, "application/octet-stream")}, "data": fields}


@pytest.fixture(scope="session")
def sample_bytes(sample_video) -> bytes:
    with open(sample_video.media, "rb") as fh:
        return fh.read()


def assert_error(response, status: int, code: str, message: str | None = None) -> dict:
    """A JSON error of ``status``/``code``; ``message``, when given, is the exact message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    if message is not None:
        assert error["message"] == message, error
    return error


def staged_uploads(app) -> list[str]:
    """What is in the upload staging area (``incoming/``) of the app's store."""
    from mediaflow_gateway.api.upload import staging_root

    store = app.state.backend.store
    root = staging_root(store)
    return store.fs.ls(root, detail=False) if store.fs.exists(root) else []


def indexed_points(app) -> int:
    backend = app.state.backend
    with backend.index_lock:
        return backend.pipeline.index().count()


def assert_nothing_stored(app, *, media: list[str] | None = None, points: int = 0) -> None:
    """No media dir beyond ``media`` (default none), nothing staged, ``points`` points."""
    store = app.state.backend.store
    assert store.list_media() == sorted(media or [])
    media_root = f"{store.root}/media"
    if not media:
        assert not store.fs.exists(media_root) or store.fs.ls(media_root) == []
    assert staged_uploads(app) == []
    assert indexed_points(app) == points


def tone(directory, frequency: int, seconds: float = 1.0, suffix: str = ".wav") -> bytes:
    """A small real media file (a sine tone): distinct bytes per frequency."""
    import subprocess

    out = directory / f"tone-{frequency}{suffix}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency={frequency}:duration={seconds}",
                    str(out)], check=True)
    return out.read_bytes()


class RawResponse:
    """What an ASGI app sent, and how often it called ``receive``."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""
        self.receive_calls = 0
        self.received_bytes = 0

    def json(self) -> dict:
        import json

        return json.loads(self.body)


async def raw_request(app, method: str, path: str, *, headers: list[tuple[bytes, bytes]] = (),
                      body_chunks=None, raw_path: bytes | None = None, query: bytes = b"",
                      disconnect_after: int | None = None, client=("127.0.0.1", 40000)) -> RawResponse:
    """Call the app as a server would, with control over path bytes, headers and the body
    (an iterable of chunks; ``disconnect_after`` chunks, then ``http.disconnect``)."""
    result = RawResponse()
    chunks = iter(body_chunks if body_chunks is not None else [b""])
    sent = {"n": 0, "done": False}

    async def receive():
        result.receive_calls += 1
        if sent["done"] or (disconnect_after is not None and sent["n"] >= disconnect_after):
            return {"type": "http.disconnect"}
        try:
            chunk = next(chunks)
        except StopIteration:
            sent["done"] = True
            return {"type": "http.request", "body": b"", "more_body": False}
        sent["n"] += 1
        result.received_bytes += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            result.body += message.get("body", b"")

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": raw_path if raw_path is not None else path.encode("utf-8"),
        "query_string": query, "root_path": "", "headers": [(b"host", b"gateway"), *headers],
        "client": client, "server": ("gateway", 80),
    }
    await app(scope, receive, send)
    return result
