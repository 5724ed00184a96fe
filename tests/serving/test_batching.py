"""The embeddings app's continuous batching: what queues while the model is busy goes
together into its next call (``mediaflow_serving.apps.batching``), and through the real app
over the real MiniLM, concurrent requests share encode calls and get their own vectors."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from mediaflow_serving.apps.batching import ContinuousBatcher


class Model:
    """Records each call's items; a call stays open until ``release`` (or answers at once)."""

    def __init__(self, *, hold: bool = False, fail_on: str | None = None):
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.fail_on = fail_on

    async def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        await self.release.wait()
        if self.fail_on in items:
            raise RuntimeError(f"the model failed on {self.fail_on}")
        return [item.upper() for item in items]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_what_queues_while_the_model_is_busy_goes_into_one_call():
    model = Model(hold=True)
    batcher = ContinuousBatcher(model, max_requests=64)
    first = asyncio.ensure_future(batcher("a"))
    await settle()
    assert model.calls == [["a"]]  # an idle model starts at once
    rest = [asyncio.ensure_future(batcher(x)) for x in "bcdef"]
    await settle()
    assert model.calls == [["a"]]  # busy: the others wait
    model.release.set()
    assert await first == "A"
    assert await asyncio.gather(*rest) == list("BCDEF")
    assert model.calls == [["a"], list("bcdef")]


async def test_running_counts_the_call_and_the_queue_until_both_are_done():
    """What the replica's health check reads: while it is above 0 no probe joins the model."""
    model = Model(hold=True, fail_on="c")
    batcher = ContinuousBatcher(model)
    assert batcher.running() == 0
    first = asyncio.ensure_future(batcher("a"))
    await settle()
    assert batcher.running() == 1  # in the call
    rest = [asyncio.ensure_future(batcher(x)) for x in "bc"]
    gone = asyncio.ensure_future(batcher("x"))
    await settle()
    gone.cancel()
    await settle()
    assert batcher.running() == 3  # one in the call, two queued; the cancelled one not counted
    model.release.set()
    assert await first == "A"
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert batcher.running() == 0  # also after a failed call


async def test_a_batch_holds_at_most_max_requests():
    model = Model(hold=True)
    batcher = ContinuousBatcher(model, max_requests=4)
    futures = [asyncio.ensure_future(batcher(str(i))) for i in range(10)]
    await settle()
    model.release.set()
    assert await asyncio.gather(*futures) == [str(i) for i in range(10)]
    assert [len(c) for c in model.calls] == [4, 4, 2]


async def test_a_failed_call_fails_its_requests_only():
    model = Model(hold=True, fail_on="b")
    batcher = ContinuousBatcher(model)
    first = asyncio.ensure_future(batcher("a"))
    await settle()
    second = [asyncio.ensure_future(batcher(x)) for x in "bc"]
    await settle()
    model.release.set()
    assert await first == "A"
    results = await asyncio.gather(*second, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "failed on b" in str(r) for r in results)
    # the queue still runs after a failure
    assert await batcher("d") == "D"


async def test_a_request_whose_caller_left_is_not_encoded():
    model = Model(hold=True)
    batcher = ContinuousBatcher(model)
    first = asyncio.ensure_future(batcher("a"))
    await settle()
    gone, kept = asyncio.ensure_future(batcher("gone")), asyncio.ensure_future(batcher("kept"))
    await settle()
    gone.cancel()
    await settle()
    model.release.set()
    assert await first == "A" and await kept == "KEPT"
    assert model.calls == [["a"], ["kept"]]


async def test_an_idle_model_waits_wait_s_to_gather_a_burst():
    model = Model()
    batcher = ContinuousBatcher(model, wait_s=0.05)
    assert await asyncio.gather(*(batcher(x) for x in "xyz")) == list("XYZ")
    assert model.calls == [list("xyz")]


@pytest.mark.slow
async def test_concurrent_requests_to_the_app_share_encode_calls():
    """Eight concurrent 32-text requests to the real app (MiniLM): fewer encode calls than
    requests, and each request gets the vectors of its own texts."""
    from sentence_transformers import SentenceTransformer

    from mediaflow.engines.st_embedder import bundled_embedding_model
    from mediaflow.samples import PASSAGES
    from mediaflow_serving.apps.embeddings_api import create_app
    from mediaflow_serving.engines import load_embedder

    sentences = [s.strip() for p in PASSAGES for s in p.split(".") if s.strip()]
    requests = [[f"{sentences[(8 * r + i) % len(sentences)]} (note {r}-{i})." for i in range(32)] for r in range(8)]
    app = create_app(lambda: load_embedder({"multilingual_embedder": "none"}))
    calls = []
    async with app.router.lifespan_context(app):
        engine = app.state.engine.get().parts[0]
        embed = engine.embed_counted
        engine.embed_counted = lambda texts, **kw: (calls.append(len(texts)), embed(texts, **kw))[1]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://embeddings", timeout=120) as http:
            answers = await asyncio.gather(*(http.post("/v1/embeddings", json={"input": texts}) for texts in requests))
    assert all(a.status_code == 200 for a in answers), [a.text[:200] for a in answers]
    assert len(calls) < len(requests) and sum(calls) == 8 * 32, calls
    reference = SentenceTransformer(bundled_embedding_model(), device="cpu")
    for texts, answer in zip(requests, answers, strict=True):
        served = np.asarray([d["embedding"] for d in answer.json()["data"]])
        assert served.shape == (32, 384)
        assert (served * reference.encode(texts, normalize_embeddings=True)).sum(1).min() >= 0.999


async def test_a_batch_stops_before_max_inputs_but_takes_a_big_request_alone():
    model = Model(hold=True)
    batcher = ContinuousBatcher(model, max_inputs=10, inputs_of=len)
    first = asyncio.ensure_future(batcher("a"))
    await settle()
    rest = [asyncio.ensure_future(batcher(x)) for x in ("bbbb", "cccc", "dddd", "e" * 12, "f")]
    await settle()
    model.release.set()
    await asyncio.gather(first, *rest)
    assert model.calls == [["a"], ["bbbb", "cccc"], ["dddd"], ["e" * 12], ["f"]]
