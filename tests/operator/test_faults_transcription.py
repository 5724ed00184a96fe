"""Issue 13 fault: the operator process SIGKILLed mid-transcription and started again.

The real operator (``python -m kopf run --standalone``, a subprocess: SIGKILL is the
true end of it) against KMock; the transcription service is the serving app with the
session's real model, held inside the engine until the test lets it go, so the kill
lands while the service is transcribing the operator's request. The restarted
operator resumes the MediaJob at the transcribe stage, posts the same audio with the
same Idempotency-Key and joins the transcription still running: the model runs once,
there is one worker Job, and Qdrant holds one point per chunk.
"""

from __future__ import annotations

import asyncio
import os
import threading

import httpx
import pytest

from mediaflow.config import Settings
from mediaflow.models import Transcript
from mediaflow.status import mediajob_media_id
from mediaflow.stores import ArtifactStore, VectorIndex
from mediaflow_operator.jobs import job_name
from tests.conftest import wer
from tests.operator.conftest import JOBS, NAMESPACE, Flaky, UvicornThread
from tests.operator.processes import KopfProcess

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.fault]

COLLECTION = "faulttr"
MAX_WER = 0.2


@pytest.fixture(scope="module")
def llm_url() -> str:
    """Summaries are off here: the operator needs an LLM endpoint set, never calls it."""
    return "http://127.0.0.1:9/v1"


class HeldTranscriber:
    """The real engine, entered only when ``release`` is set; counts its runs."""

    def __init__(self, engine):
        self.engine, self.name = engine, engine.name
        self.runs = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def transcribe_array(self, audio, **options) -> Transcript:
        self.runs += 1
        self.entered.set()
        assert self.release.wait(300), "never released"
        return self.engine.transcribe_array(audio, **options)


@pytest.fixture
def held(engines_cache):
    held = HeldTranscriber(engines_cache.transcriber)
    yield held
    held.release.set()


@pytest.fixture
def transcription_service(held):
    """Overrides the conftest's: the same app and Flaky wrapper, over the held engine."""
    from mediaflow_serving.apps.transcription_api import create_app

    app = Flaky(create_app(lambda: held))
    with UvicornThread(app) as server:
        server.app = app
        yield server


@pytest.fixture
async def start_operator(operator_env, tmp_path):
    env = {**os.environ, **operator_env, "HF_HUB_OFFLINE": "1"}
    started: list[KopfProcess] = []

    def start() -> KopfProcess:
        started.append(KopfProcess(env, tmp_path / f"operator-{len(started)}.log"))
        return started[-1]

    yield start
    for op in started:
        await op.stop()


async def outcomes(url: str) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{url}/metrics")).text
    found = {}
    for line in text.splitlines():
        if line.startswith("mediaflow_serving_idempotent_requests_total{"):
            found[line.split('outcome="')[1].split('"')[0]] = float(line.split()[-1])
    return found


async def test_operator_killed_mid_transcription_and_restarted(
        cluster, start_operator, kubelet, transcription_service, held, sample_video):
    loop = asyncio.get_running_loop()
    began = loop.time()
    first = start_operator()
    await cluster.create_mediajob("trkill", {
        "source": {"uri": sample_video.media, "title": "Island"},
        "stages": {"summary": {"enabled": False}, "index": {"collection": COLLECTION}}})
    name, media_id = job_name(NAMESPACE, "trkill"), mediajob_media_id(NAMESPACE, "trkill")
    job = await cluster.wait_for(lambda: cluster.job(name), 60, "the worker Job")
    await kubelet.run(job)
    await cluster.finish_job(job, succeeded=True)

    # The service has the operator's request and is transcribing it: kill the operator.
    await cluster.wait_for(held.entered.is_set, 90, "the transcription to start")
    # extract_audio's end is a routine step, patched with the transcribe stage's start once
    # that has run status_grace_seconds: wait for it, so the successor reads it as done
    # (a kill inside that second is the 409 adoption of test_faults_restart.py).
    async def extract_recorded():
        status = (await cluster.mediajob("trkill")).get("status") or {}
        return any(c["type"] == "ExtractAudio" and c["status"] == "True"
                   for c in status.get("conditions") or [])
    await cluster.wait_for(extract_recorded, 30, "extract_audio recorded as done")
    assert first.proc.poll() is None, first.log()[-3000:]
    await first.kill()
    assert transcription_service.app.calls == 1
    obj = await cluster.mediajob("trkill")
    assert obj["status"]["phase"] == "Running", obj["status"]

    second = start_operator()
    # Its transcribe stage posts the same audio and options, i.e. the same Idempotency-Key.
    await cluster.wait_for(lambda: transcription_service.app.calls >= 2, 90, "the restarted operator's request")
    async def has_joined():
        return (await outcomes(transcription_service.url)).get("joined", 0) >= 1
    await cluster.wait_for(has_joined, 60, "the retry to join the running transcription")
    killed_for = loop.time() - began
    held.release.set()
    done = await cluster.wait_phase("trkill", {"Succeeded", "Failed"}, timeout=240)
    assert done["status"]["phase"] == "Succeeded", (done["status"], second.log()[-3000:])

    # The model ran once, for two requests: the killed operator's and its successor's.
    assert held.runs == 1
    assert await outcomes(transcription_service.url) == {"fresh": 1, "joined": 1, "replayed": 0}
    assert transcription_service.app.calls == 2
    transcript = ArtifactStore(Settings(data_dir=cluster.data_dir).artifacts_uri).read_model(
        media_id, "transcript.json", Transcript)
    assert wer(sample_video.text, transcript.text) <= MAX_WER, transcript.text

    # One worker Job, ever: the successor found extract_audio done and did not create one.
    posts = cluster.requests("POST", JOBS)
    assert [p.data["metadata"]["name"] for p in posts] == [name]
    assert [j["metadata"]["name"] for j in (await cluster.api.get(JOBS)).json()["items"]] == [name]
    assert [r.data["reason"] for r in cluster.requests("POST", "/events")].count("JobCreated") == 1

    outputs = done["status"]["outputs"]
    assert outputs["chunks"] > 2 and outputs["points"] == outputs["chunks"]
    assert await second.stop() == 0  # a clean exit releases the embedded Qdrant
    index = VectorIndex.from_settings(Settings(data_dir=cluster.data_dir)).for_collection(COLLECTION)
    try:
        assert index.count(media_id) == outputs["chunks"]  # no duplicate points
    finally:
        index.close()
    print(f"killed and joined after {killed_for:.1f}s, total {loop.time() - began:.1f}s")
