"""The transcription app decodes within a memory budget: queued requests wait with their files
on disk, and a file that alone decodes to more than the budget is a clear 413."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from mediaflow_serving.apps.audio_input import DECODED_BYTES_PER_SAMPLE, SAMPLE_RATE
from mediaflow_serving.memory_budget import ByteBudget, OverBudget
from mediaflow_serving.settings import ServingSettings

pytestmark = pytest.mark.asyncio(loop_scope="function")


def speech(tmp_path: Path, text: str, name: str) -> bytes:
    path = tmp_path / f"{name}.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    return path.read_bytes()


def budget_for(seconds: float) -> int:
    return int((seconds + 1.0) * SAMPLE_RATE * DECODED_BYTES_PER_SAMPLE)


async def test_holds_wait_for_each_other_and_an_oversized_one_is_refused():
    budget = ByteBudget(100)
    order: list[str] = []

    async def use(name: str, amount: int, seconds: float):
        async with budget.hold(amount):
            order.append(f"{name}+")
            assert budget.in_use <= budget.total
            await asyncio.sleep(seconds)
            order.append(f"{name}-")

    await asyncio.gather(use("a", 60, 0.2), use("b", 60, 0.0), use("c", 30, 0.0))
    assert order.index("b+") > order.index("a-")  # 60 + 60 > 100: b waited for a
    assert order.index("c+") < order.index("a-")  # 60 + 30 fits: c did not
    assert budget.in_use == 0
    with pytest.raises(OverBudget, match="needs 101 bytes, over the budget of 100"):
        async with budget.hold(101):
            pass


class Recorder:
    """The session's real transcriber, recording when each transcription ran."""

    def __init__(self, engine):
        self.engine, self.spans, self.lock = engine, [], threading.Lock()
        self.name = engine.name

    def transcribe_array(self, audio, **kwargs):
        start = time.monotonic()
        try:
            return self.engine.transcribe_array(audio, **kwargs)
        finally:
            with self.lock:
                self.spans.append((start, time.monotonic(), len(audio)))


@pytest.fixture
def app_with_budget(engines_cache, monkeypatch):
    from mediaflow_serving.apps import transcription_api

    decodes: list[float] = []
    real_decode = transcription_api.decode_audio

    def decode(*args, **kwargs):
        decodes.append(time.monotonic())
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(transcription_api, "decode_audio", decode)

    def make(budget: int):
        recorder = Recorder(engines_cache.transcriber)
        app = transcription_api.create_app(lambda: recorder, settings=ServingSettings(decode_budget_bytes=budget))
        return app, recorder, decodes

    return make


async def post(client, payload: bytes):
    return await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", payload, "audio/wav")},
                             data={"response_format": "json"})


async def test_a_second_request_decodes_only_once_the_first_is_done(app_with_budget, tmp_path):
    one = speech(tmp_path, "The island school plants mangroves along the lagoon every spring.", "one")
    two = speech(tmp_path, "Fishermen repair their nets in the shade of the old harbour wall.", "two")
    app, recorder, decodes = app_with_budget(budget_for(6.0))  # room for one of them at a time
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://serving", timeout=300) as client:
        first, second = await asyncio.gather(post(client, one), post(client, two))
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert "lagoon" in first.json()["text"].lower() and "shade" in second.json()["text"].lower()
    assert len(decodes) == 2 and len(recorder.spans) == 2
    first_done = min(end for _, end, _ in recorder.spans)
    assert max(decodes) >= first_done  # the second file stayed on disk until the first was transcribed
    assert app.state.decode_budget.in_use == 0


async def test_audio_that_alone_exceeds_the_budget_is_413(app_with_budget, tmp_path):
    long = speech(tmp_path, " ".join(["The tide comes in slowly over the sand flats near the village."] * 4), "long")
    app, recorder, decodes = app_with_budget(budget_for(2.0))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://serving", timeout=300) as client:
        response = await post(client, long)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert "over this replica's decode budget of" in error["message"]
    assert "MEDIAFLOW_SERVE_DECODE_BUDGET_BYTES" in error["message"]
    assert decodes == [] and recorder.spans == []  # refused from the probe: nothing decoded
    assert app.state.decode_budget.in_use == 0
