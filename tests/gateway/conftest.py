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
