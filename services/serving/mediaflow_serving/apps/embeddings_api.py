"""``POST /v1/embeddings`` in OpenAI's shape over ``mediaflow`` ``Embedder`` s.

    app = create_app(lambda: SentenceTransformerEmbedder())     # one model (uvicorn or Ray Serve)
    app = create_app(lambda: ServedEmbedders([minilm, use]))     # several, picked by ``model``

One app serves every model its factory gives (``ServedEmbedders``; ``GET /v1/models`` lists
them): a request's ``model`` picks one, none picks the first (the default), and a model not
served is a 404 in OpenAI's error shape (``param: model``), never another model's vectors.
Mediaflow sends ``all-MiniLM-L6-v2`` for English media and ``use-multilingual-v3`` for the
others (``mediaflow.engines.remote.RemoteEmbedder``).

Requests that arrive while the model is busy go together into its next call, one
``encode`` per model among them (``apps.batching.ContinuousBatcher``, the same under uvicorn
and Ray Serve; ``embedding_max_batch_size`` requests and ``embedding_max_batch_inputs``
texts at most, ``embedding_batch_wait_s`` of waiting when the model was idle). Usage is
the model's own token count, from the tokenization the encode does anyway (``embed_counted``).

``input`` is what OpenAI takes: a string, a list of strings, a token array or a list of
token arrays. Token ids are the served model's own tokenizer's (as OpenAI's are its
models'); they are decoded to text and embedded as text (for a WordPiece model such as
all-MiniLM-L6-v2 that round-trips to the same ids). Ids outside the vocabulary are a 400:
tiktoken ids (what LangChain's ``OpenAIEmbeddings`` sends unless told
``check_embedding_ctx_length=False``) mean nothing to another model's tokenizer.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mediaflow_serving.apps.batching import ContinuousBatcher
from mediaflow_serving.apps.common import ApiError, create_model_app
from mediaflow_serving.settings import ServingSettings

Vectors = list[list[float]]
Request = tuple[str, list[str]]  # (model name, texts)


class ServedEmbedders:
    """The embedding models of one app, by name; the first is the default.

    It stands where one embedder would (``name``, ``dim``, ``embed`` are the default's), so
    the model app's ``/health`` and callers that know one model keep working; ``parts`` is
    every model (the replica's health check probes each)."""

    def __init__(self, embedders):
        self.parts = tuple(embedders)
        if not self.parts:
            raise ValueError("an embeddings app needs at least one model")
        self.by_name = {e.name: e for e in self.parts}
        if len(self.by_name) != len(self.parts):
            raise ValueError(f"two models share a name: {[e.name for e in self.parts]}")
        default = self.parts[0]
        self.name, self.dim, self.model_names = default.name, getattr(default, "dim", None), tuple(self.by_name)
        self.device = getattr(default, "device", None) or getattr(getattr(default, "model", None), "device", "cpu")

    @classmethod
    def of(cls, engine) -> ServedEmbedders:
        return engine if isinstance(engine, ServedEmbedders) else cls([engine])

    def embed(self, texts, **kwargs) -> Vectors:
        return self.parts[0].embed(texts, **kwargs)

    def get(self, model: str | None):
        """The engine ``model`` names (None: the default); a 404 for one not served."""
        if model is None:
            return self.parts[0]
        engine = self.by_name.get(model)
        if engine is None:
            raise ApiError(404, f"The model {model!r} does not exist here: this service embeds with "
                                f"{', '.join(self.model_names)}", param="model")
        return engine


class EmbeddingsRequest(BaseModel):
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A string, a list of strings, a token array or a list of token arrays (the model's token ids).")
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


def embed_counted(engine, texts: list[str]) -> tuple[Vectors, list[int] | None]:
    """The engine's vectors and, from the same tokenization, each text's tokens when it counts
    them (``SentenceTransformerEmbedder.embed_counted``): usage without a second tokenizer
    pass on the event loop, which took most of a request's CPU there (py-spy, 8 clients)."""
    counted = getattr(engine, "embed_counted", None)
    return counted(texts) if counted is not None else (engine.embed(texts), None)


def count_tokens(engine, texts: list[str]) -> int:
    count = getattr(engine, "count_tokens", None)
    return count(texts) if count is not None else sum(len(t.split()) for t in texts)


def as_inputs(value) -> tuple[list[str], list[list[int]] | None]:
    """``input`` as a list of strings or a list of token arrays (the other one None)."""
    if isinstance(value, str):
        return [value], None
    if value and all(isinstance(v, int) for v in value):
        return [], [list(value)]
    if value and all(isinstance(v, list) for v in value):
        return [], [list(v) for v in value]
    return list(value), None


def detokenize(engine, arrays: list[list[int]]) -> list[str]:
    decode = getattr(engine, "detokenize", None)
    if decode is None:
        raise ApiError(400, f"{engine.name} does not take token arrays: send text", param="input")
    if any(not ids for ids in arrays):
        raise ApiError(400, "token arrays must not be empty", param="input")
    vocabulary = getattr(engine, "vocab_size", None)
    if vocabulary is not None:
        bad = sorted({t for ids in arrays for t in ids if not 0 <= t < vocabulary})
        if bad:
            raise ApiError(400, f"token ids {bad[:5]} are outside {engine.name}'s vocabulary of {vocabulary}: "
                                f"token arrays must be {engine.name} tokenizer ids", param="input")
    return decode(arrays)


def create_app(
    embedder_factory: Callable[[], object],
    *,
    settings: ServingSettings | None = None,
    metrics_to_ray: bool = False,
) -> FastAPI:
    settings = settings or ServingSettings()
    app = create_model_app("Mediaflow embeddings", "embeddings", lambda: ServedEmbedders.of(embedder_factory()),
                           metrics_to_ray=metrics_to_ray)
    slot, metrics = app.state.engine, app.state.metrics
    # Every encode on one thread: torch's OpenMP team belongs to the thread that calls it, and
    # the server's pool hands each call to whichever of its threads is free, so several teams
    # came to spin on the cores at once (the encodes are one at a time anyway, under the
    # engine's lock).
    encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mediaflow-encode")
    app.state.model_thread = encoder  # the health check's probe runs there too (mediaflow_serving.health)

    async def encode_many(requests: list[Request]) -> list[tuple[Vectors, int | None]]:
        """One model call per model among ``requests`` (a batch may mix them): each request's
        vectors and its tokens (None when the model does not count them), in order."""
        out: list[tuple[Vectors, int | None] | None] = [None] * len(requests)
        for model in dict.fromkeys(name for name, _ in requests):
            mine = [i for i, (name, _) in enumerate(requests) if name == model]
            flat = [text for i in mine for text in requests[i][1]]
            metrics.observe_batch(len(mine), len(flat))
            vectors, tokens = await asyncio.get_running_loop().run_in_executor(
                encoder, embed_counted, slot.get().get(model), flat)
            lo = 0
            for i in mine:
                hi = lo + len(requests[i][1])
                out[i] = vectors[lo:hi], (sum(tokens[lo:hi]) if tokens is not None else None)
                lo = hi
        return out

    encode = ContinuousBatcher(encode_many, max_requests=settings.embedding_max_batch_size,
                               max_inputs=settings.embedding_max_batch_inputs,
                               inputs_of=lambda request: len(request[1]), wait_s=settings.embedding_batch_wait_s)
    app.state.work = encode  # its running() tells the health check that the model is at work

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse)
    async def create_embeddings(body: EmbeddingsRequest) -> JSONResponse:
        engine = slot.get().get(body.model)
        texts, arrays = as_inputs(body.input)
        count = len(arrays) if arrays is not None else len(texts)
        if not count:
            raise ApiError(400, "input must not be empty", param="input")
        if arrays is None and any(not t for t in texts):
            raise ApiError(400, "input strings must not be empty", param="input")
        if count > settings.max_embedding_inputs:
            raise ApiError(413, f"{count} inputs, over the limit of {settings.max_embedding_inputs}", param="input")
        if body.dimensions is not None and body.dimensions != engine.dim:
            raise ApiError(400, f"{engine.name} produces {engine.dim} dimensions, not {body.dimensions}",
                           param="dimensions")
        if arrays is not None:
            texts = detokenize(engine, arrays)
        vectors, tokens = await encode((engine.name, texts))
        if arrays is not None:
            tokens = sum(len(ids) for ids in arrays)
        elif tokens is None:
            tokens = count_tokens(engine, texts)
        if body.encoding_format == "base64":
            vectors = [as_base64(v) for v in vectors]
        # built as plain JSON: re-validating thousands of floats per request costs throughput
        return JSONResponse({
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "model": engine.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    return app
