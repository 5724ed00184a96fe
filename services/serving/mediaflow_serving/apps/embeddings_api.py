"""``POST /v1/embeddings`` in OpenAI's shape over any ``mediaflow`` ``Embedder``.

    app = create_app(lambda: SentenceTransformerEmbedder())     # uvicorn, no Ray
    app = create_app(factory, batcher=serve.batch(max_batch_size=64))   # under Ray Serve

Requests go through ``batcher``: a decorator turning ``encode_many(list of text lists)``
into ``encode(text list)``. Without Ray each request is its own model call; under Ray
Serve ``@serve.batch`` merges concurrent requests into one ``encode`` call.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Literal

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mediaflow_serving.apps.common import create_model_app
from mediaflow_serving.settings import ServingSettings

Vectors = list[list[float]]
EncodeMany = Callable[[list[list[str]]], Awaitable[list[Vectors]]]
Encode = Callable[[list[str]], Awaitable[Vectors]]
Batcher = Callable[[EncodeMany], Encode]


def unbatched(encode_many: EncodeMany) -> Encode:
    async def encode(texts: list[str]) -> Vectors:
        return (await encode_many([texts]))[0]

    return encode


class EmbeddingsRequest(BaseModel):
    input: str | list[str] = Field(description="One string or a list of strings (token arrays are not supported).")
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


def as_base64(vector: list[float]) -> str:
    # OpenAI's base64 format: little-endian float32, what the openai client decodes
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def count_tokens(engine, texts: list[str]) -> int:
    tokenizer = getattr(getattr(engine, "model", None), "tokenizer", None)
    if tokenizer is None:
        return sum(len(t.split()) for t in texts)
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"])


def create_app(
    embedder_factory: Callable[[], object],
    *,
    batcher: Batcher = unbatched,
    settings: ServingSettings | None = None,
    metrics_to_ray: bool = False,
) -> FastAPI:
    settings = settings or ServingSettings()
    app = create_model_app("Mediaflow embeddings", "embeddings", embedder_factory,
                           metrics_to_ray=metrics_to_ray)
    slot, metrics = app.state.engine, app.state.metrics

    async def encode_many(requests: list[list[str]]) -> list[Vectors]:
        flat = [text for texts in requests for text in texts]
        metrics.observe_batch(len(requests), len(flat))
        vectors = await run_in_threadpool(slot.get().embed, flat)
        out, lo = [], 0
        for texts in requests:
            out.append(vectors[lo : lo + len(texts)])
            lo += len(texts)
        return out

    encode = batcher(encode_many)

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse)
    async def create_embeddings(body: EmbeddingsRequest) -> JSONResponse:
        engine = slot.get()
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise HTTPException(400, "input must not be empty")
        if any(not t for t in texts):
            raise HTTPException(400, "input strings must not be empty")
        if len(texts) > settings.max_embedding_inputs:
            raise HTTPException(413, f"{len(texts)} inputs, over the limit of {settings.max_embedding_inputs}")
        if body.dimensions is not None and body.dimensions != engine.dim:
            raise HTTPException(400, f"{engine.name} produces {engine.dim} dimensions, not {body.dimensions}")
        vectors = await encode(texts)
        if body.encoding_format == "base64":
            vectors = [as_base64(v) for v in vectors]
        tokens = count_tokens(engine, texts)
        # built as plain JSON: re-validating thousands of floats per request costs throughput
        return JSONResponse({
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "model": engine.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    return app
