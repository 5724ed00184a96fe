"""Idempotent transcriptions, with a stand-in engine (no model): one run per Idempotency-Key,
joined while it runs, replayed once done, not cancelled by a client that leaves; the
client's key and its Retry-After handling. The real model and real process kills are in
test_transcription_faults.py."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from mediaflow.engines.remote import RemoteTranscriber, request_with_retries, retry_after, transcription_key
from mediaflow.errors import EngineRequestError
from mediaflow.models import Segment, Transcript
from mediaflow_serving.apps.transcription_api import create_app
from mediaflow_serving.idempotency import IdempotentWork, KeyReused
from mediaflow_serving.settings import ServingSettings
from tests.conftest import free_port

ROUTE = "/v1/audio/transcriptions"


class HeldEngine:
    """Answers "hello <language>" once ``release`` is set; counts its calls."""

    name = "held"

    def __init__(self):
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def transcribe_array(self, audio, *, language=None, align=False, diarize=False):
        self.calls += 1
        self.entered.set()
        assert self.release.wait(30), "never released"
        return Transcript(language=language or "en", duration=len(audio) / 16000,
                          segments=[Segment(start=0, end=1, text=f"hello {language or 'en'}")])


class Server:
    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)

    def outcomes(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics").text
        found = {}
        for line in text.splitlines():
            if line.startswith("mediaflow_serving_idempotent_requests_total{"):
                outcome = line.split('outcome="')[1].split('"')[0]
                found[outcome] = float(line.split()[-1])
        return found


@pytest.fixture(scope="module")
def tone(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tone") / "tone.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                    "-ac", "1", "-ar", "16000", str(path)], check=True)
    return path


@pytest.fixture
def engine():
    engine = HeldEngine()
    yield engine
    engine.release.set()


@pytest.fixture
def server(engine):
    with Server(create_app(lambda: engine, settings=ServingSettings(idempotency_max_results=4))) as server:
        yield server


def upload(url: str, audio: Path, *, key: str | None, language: str = "en", timeout: float = 30) -> httpx.Response:
    headers = {"Idempotency-Key": f'"{key}"'} if key else {}
    return httpx.post(f"{url}{ROUTE}", headers=headers, timeout=timeout,
                      data={"model": "held", "language": language, "response_format": "json"},
                      files={"file": ("tone.wav", audio.read_bytes(), "audio/wav")})


def test_a_second_request_joins_the_running_transcription_then_a_third_is_replayed(server, engine, tone):
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(upload, server.url, tone, key="k1")
        assert engine.entered.wait(10)
        second = pool.submit(upload, server.url, tone, key="k1")
        deadline = time.monotonic() + 10
        while server.outcomes().get("joined", 0) < 1:
            assert time.monotonic() < deadline, server.outcomes()
            time.sleep(0.05)
        engine.release.set()
        first, second = first.result(), second.result()
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json() == second.json() == {"text": "hello en"}
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    third = upload(server.url, tone, key="k1")
    assert third.json() == {"text": "hello en"} and third.headers["idempotent-replayed"] == "true"
    assert engine.calls == 1
    assert server.outcomes() == {"fresh": 1, "joined": 1, "replayed": 1}


def test_the_work_outlives_a_client_that_gave_up(server, engine, tone):
    with pytest.raises(httpx.ReadTimeout):
        upload(server.url, tone, key="k2", timeout=1)  # the client leaves mid-transcription
    assert engine.entered.is_set()
    engine.release.set()
    deadline = time.monotonic() + 10
    while server.app.state.work.running():
        assert time.monotonic() < deadline, "the transcription did not finish"
        time.sleep(0.05)
    retry = upload(server.url, tone, key="k2")
    assert retry.json() == {"text": "hello en"} and retry.headers["idempotent-replayed"] == "true"
    assert engine.calls == 1


def test_a_key_reused_for_other_options_is_a_422_and_no_key_runs_every_time(server, engine, tone):
    engine.release.set()
    assert upload(server.url, tone, key="k3").status_code == 200
    reused = upload(server.url, tone, key="k3", language="de")
    assert reused.status_code == 422 and "different request" in reused.json()["error"]["message"]
    assert upload(server.url, tone, key=None).status_code == 200
    assert upload(server.url, tone, key=None).status_code == 200
    assert engine.calls == 3
    too_long = upload(server.url, tone, key="x" * 300)
    assert too_long.status_code == 400


def test_the_remote_transcriber_sends_a_key_of_the_audio_and_options(server, engine, tone, tmp_path):
    engine.release.set()
    client = RemoteTranscriber(server.url, model="held", retries=0)
    assert client.transcribe(tone, language="en").text == "hello en"
    assert client.transcribe(tone, language="en").text == "hello en"  # replayed
    copy = tmp_path / "other-name.wav"
    copy.write_bytes(tone.read_bytes())
    assert client.transcribe(copy, language="en").text == "hello en"  # same bytes: same work
    assert client.transcribe(tone, language="fr").text == "hello fr"  # other options: other work
    assert engine.calls == 2
    assert server.outcomes() == {"fresh": 2, "joined": 0, "replayed": 2}
    key = transcription_key("ab", model="m", language="en", align=False, diarize=False)
    assert key == transcription_key("ab", model="m", language="en", align=False, diarize=False)
    assert len({key, transcription_key("ab", model="m", language=None, align=False, diarize=False),
                transcription_key("ab", model="m", language="en", align=True, diarize=False),
                transcription_key("ac", model="m", language="en", align=False, diarize=False)}) == 4


def test_undecodable_audio_fails_every_joiner_and_is_not_cached(server, engine, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + b"\x13" * 4000)
    for _ in range(2):
        answer = upload(server.url, bad, key="k4")
        assert answer.status_code == 400 and "not a readable media file" in answer.json()["error"]["message"]
    assert server.outcomes()["fresh"] == 2 and engine.calls == 0
    with pytest.raises(EngineRequestError, match="400"):
        RemoteTranscriber(server.url, retries=0).transcribe(bad)


async def test_results_are_bounded_by_count_and_age():
    now = [0.0]
    work = IdempotentWork(max_results=2, ttl_s=10, clock=lambda: now[0])
    runs: list[str] = []

    def job(value):
        async def run():
            runs.append(value)
            return value
        return run

    for key in ("a", "b", "c"):
        assert await work.run(key, key, job(key)) == (key, "fresh")
    assert len(work) == 2  # "a" was the least recently used
    assert await work.run("b", "b", job("b")) == ("b", "replayed")
    assert await work.run("a", "a", job("a")) == ("a", "fresh")  # evicted: runs again
    with pytest.raises(KeyReused):
        await work.run("a", "other", job("x"))
    now[0] = 11
    assert await work.run("a", "a", job("a")) == ("a", "fresh")  # expired: runs again
    assert runs == ["a", "b", "c", "a", "a"]


async def test_a_cancelled_waiter_leaves_the_work_running():
    work = IdempotentWork()
    release = asyncio.Event()

    async def slow():
        await release.wait()
        return "done"

    waiter = asyncio.create_task(work.run("k", "f", lambda: slow()))
    await asyncio.sleep(0.01)
    waiter.cancel()  # what Ray Serve does when the client disconnects
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert work.running() == 1
    release.set()
    await asyncio.sleep(0.01)
    assert await work.run("k", "f", lambda: slow()) == ("done", "replayed")


def test_retry_after_is_obeyed_and_bounded():
    answers = [httpx.Response(503, headers={"Retry-After": "3"}, json={"error": {"message": "busy"}}),
               httpx.Response(429, headers={"Retry-After": "100000"}, text="slow down"),
               httpx.Response(200, json={})]
    transport = httpx.MockTransport(lambda request: answers.pop(0))
    delays: list[float] = []
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        request_with_retries(lambda: client.get("/x"), what="svc", retries=3, backoff=0.1, max_backoff=0.2,
                             sleep=delays.append)
    assert delays[0] >= 3 and delays[1] == 120
    assert retry_after(httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0
    assert retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None


def test_a_transcription_longer_than_the_client_timeout_completes_once(server, engine, tone):
    """The real client with a 1 s timeout against 4 s of work: each attempt times out and
    re-joins the same transcription by its key, until one gets the result."""
    threading.Timer(4.0, engine.release.set).start()
    client = RemoteTranscriber(server.url, model="held", timeout=1.0, retries=12, backoff=0.2, max_backoff=0.5)
    transcript = client.transcribe(tone, language="en")
    assert transcript.segments[0].text == "hello en"
    assert engine.calls == 1
    outcomes = server.outcomes()
    assert outcomes.get("fresh") == 1 and outcomes.get("joined", 0) + outcomes.get("replayed", 0) >= 1, outcomes
