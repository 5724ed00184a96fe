"""Replica health (``check_health`` of the Ray Serve deployments), without a Ray cluster: the
check the deployments build over their app (``transcription_health`` / ``embeddings_health``)
run against apps holding the real bundled models, a broken or stuck model, and a long
transcription in flight."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml

from mediaflow_serving.apps import embeddings_api, transcription_api
from mediaflow_serving.embeddings import EmbeddingsArgs, EmbeddingsServer, embeddings_health
from mediaflow_serving.engines import load_embedder, load_transcriber
from mediaflow_serving.health import HealthCheck, Unhealthy, cuda_probe
from mediaflow_serving.transcription import TranscriptionArgs, TranscriptionServer, transcription_health
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def transcriber():
    return load_transcriber({"threads": 2})


@pytest.fixture(scope="module")
def embedder():
    return load_embedder({"threads": 1})


async def loaded_app(module, engine):
    app = module.create_app(lambda: engine)
    await app.state.engine.load()
    return app


async def test_transcription_check_runs_the_whisper_model(transcriber):
    app = await loaded_app(transcription_api, transcriber)
    check = transcription_health(app, timeout_s=20)
    started = time.perf_counter()
    await check()
    assert check.last == "inference"
    assert time.perf_counter() - started < 5  # 0.5 s of tone, encoder + 3 decoder steps
    await check()  # and again: nothing left behind


async def test_a_failing_model_makes_the_replica_unhealthy(transcriber, monkeypatch):
    app = await loaded_app(transcription_api, transcriber)
    check = transcription_health(app, timeout_s=20)
    whisper = transcriber.multilingual.model

    def broken(features):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(whisper, "encode", broken)
    with pytest.raises(Unhealthy, match="inference probe failed: RuntimeError: CUDA error: an illegal"):
        await check()
    monkeypatch.undo()
    await check()  # the same check passes once the model works again


async def test_a_stuck_model_fails_within_the_bound_and_is_not_stacked(transcriber, monkeypatch):
    app = await loaded_app(transcription_api, transcriber)
    check = transcription_health(app, timeout_s=0.5)
    release, calls = threading.Event(), []
    encode = transcriber.multilingual.model.encode

    def stuck(features):
        calls.append(1)
        release.wait(30)
        return encode(features)

    monkeypatch.setattr(transcriber.multilingual.model, "encode", stuck)
    started = time.perf_counter()
    with pytest.raises(Unhealthy, match="did not finish within 0.5 s"):
        await check()
    assert time.perf_counter() - started < 2
    with pytest.raises(Unhealthy, match="has not returned"):  # at once, no second thread on it
        await check()
    assert len(calls) == 1
    release.set()
    for _ in range(100):
        if check._pending.done():
            break
        await asyncio.sleep(0.05)
    monkeypatch.undo()
    await check()


async def test_an_unloaded_model_is_unhealthy():
    app = transcription_api.create_app(lambda: None)  # lifespan not run: nothing loaded
    with pytest.raises(Unhealthy, match="not loaded"):
        await transcription_health(app)()


async def test_check_during_a_long_transcription_does_not_wait_for_it(transcriber, speech, monkeypatch):
    app = await loaded_app(transcription_api, transcriber)
    check = transcription_health(app, timeout_s=20)
    entered, release = threading.Event(), threading.Event()
    transcribe = transcriber.transcribe_array

    def long_transcription(audio, **kwargs):
        entered.set()
        release.wait(60)  # held: a transcription that runs as long as the test needs
        return transcribe(audio, **kwargs)

    monkeypatch.setattr(transcriber, "transcribe_array", long_transcription)
    audio = Path(speech.media).read_bytes()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 timeout=120) as client:
        request = asyncio.ensure_future(client.post(
            "/v1/audio/transcriptions", data={"language": "en"},
            files={"file": ("speech.wav", audio, "audio/wav")}))
        while not entered.is_set():
            assert not request.done(), request.result().text
            await asyncio.sleep(0.02)
        assert app.state.work.running() == 1
        started = time.perf_counter()
        await check()
        seconds = time.perf_counter() - started
        assert check.last == "nothing"  # CPU: no inference probe next to the transcription
        assert seconds < 0.5, seconds
        assert not request.done()
        release.set()
        response = await request
    assert response.status_code == 200, response.text
    assert response.json()["text"].strip()
    await check()
    assert check.last == "inference"  # idle again: the model is probed


async def test_busy_cuda_replica_gets_the_device_check_only():
    ran = []
    engine = SimpleNamespace(device="cuda")
    check = HealthCheck(lambda: engine, inference=lambda e: lambda: ran.append("inference"),
                        device=lambda e: lambda: ran.append("device"), busy=lambda: True)
    await check()
    assert ran == ["device"] and check.last == "device"
    check.busy = lambda: False
    await check()
    assert ran == ["device", "device", "inference"] and check.last == "inference"
    assert cuda_probe(SimpleNamespace(device="cpu")) is None
    assert cuda_probe(SimpleNamespace(device="cuda:0")) is not None


@pytest.mark.parametrize("model", ["all-MiniLM-L6-v2", "use-multilingual-v3"])
async def test_embeddings_check_embeds_and_catches_a_broken_model(embedder, monkeypatch, model):
    """The app serves both models; either one broken makes the replica unhealthy."""
    assert embedder.model_names == ("all-MiniLM-L6-v2", "use-multilingual-v3")
    app = await loaded_app(embeddings_api, embedder)
    check = embeddings_health(app, timeout_s=20)
    await check()
    assert check.last == "inference"
    broken = embedder.get(model)
    monkeypatch.setattr(broken, "embed", lambda texts: [[float("nan")] * broken.dim])
    with pytest.raises(Unhealthy, match="bad vector"):
        await check()

    def dead(texts):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(broken, "embed", dead)
    with pytest.raises(Unhealthy, match="device-side assert"):
        await check()
    monkeypatch.undo()
    await check()  # healthy again once the model works


async def test_embeddings_probe_runs_on_the_encode_thread_and_not_beside_encodes(embedder, monkeypatch):
    """The probe goes to the app's one model thread (a second thread calling torch gave the
    process a second OpenMP team, and the encodes lost a tenth of their speed), and while
    requests are queued or encoding the check runs no probe at all."""
    app = await loaded_app(embeddings_api, embedder)
    check = embeddings_health(app, timeout_s=20)
    minilm = embedder.get("all-MiniLM-L6-v2")
    threads, entered, release = [], threading.Event(), threading.Event()
    embed_counted = minilm.embed_counted  # what the probe (through embed) and the requests run

    def recording(texts, **kwargs):
        threads.append(threading.current_thread().name)
        if texts == ["a sentence"]:  # the request's encode lasts as long as the test needs
            entered.set()
            release.wait(60)
        return embed_counted(texts, **kwargs)

    monkeypatch.setattr(minilm, "embed_counted", recording)
    await check()
    assert check.last == "inference"
    assert threads == ["mediaflow-encode_0"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 timeout=120) as client:
        request = asyncio.ensure_future(client.post("/v1/embeddings", json={"input": ["a sentence"]}))
        while not entered.is_set():
            assert not request.done(), request.result().text
            await asyncio.sleep(0.02)
        assert app.state.work.running() == 1
        await check()
        assert check.last == "nothing"  # CPU: no probe beside the encode, nor queued behind it
        assert threads == ["mediaflow-encode_0", "mediaflow-encode_0"]
        release.set()
        response = await request
    assert response.status_code == 200, response.text
    assert app.state.work.running() == 0
    await check()
    assert check.last == "inference"
    assert set(threads) == {"mediaflow-encode_0"}


@pytest.mark.parametrize("deployment", [TranscriptionServer, EmbeddingsServer])
async def test_the_deployments_check_health_runs_the_check(deployment):
    """Ray Serve calls ``check_health`` on the deployment's instance; it runs the check the
    instance built with its app, and fails before the app is built."""
    method = deployment.func_or_class.check_health
    ran = []

    async def check():
        ran.append(True)

    await method(SimpleNamespace(_health=check))
    assert ran == [True]
    with pytest.raises(Unhealthy, match="not built"):
        await method(SimpleNamespace(_health=None))


def test_the_probe_bound_is_below_rays_health_check_timeout():
    """The check's own bound fires first, so Ray logs its reason rather than a bare timeout."""
    for profile in ("serve-cpu.yaml", "serve-gpu.yaml"):
        config = yaml.safe_load((REPO / "services/serving/config" / profile).read_text())
        for app in config["applications"]:
            if app["name"] not in ("transcription", "embeddings"):
                continue
            args = (TranscriptionArgs if app["name"] == "transcription" else EmbeddingsArgs)(**app["args"])
            (deployment,) = app["deployments"]
            assert args.health_probe_timeout_s < deployment["health_check_timeout_s"], (profile, app["name"])


class FlaggedEngine:
    """A model whose inference fails while ``flag`` exists (the wedged device of the test)."""

    def __init__(self, flag: str):
        self.flag = flag

    def probe(self) -> None:
        import os

        if os.path.exists(self.flag):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_ray_serve_reports_a_replica_whose_check_fails_unhealthy(ray_session, tmp_path):
    """Under a real (local) Ray Serve: a deployment whose ``check_health`` is a ``HealthCheck``
    goes UNHEALTHY while its probe fails, and HEALTHY again once it passes."""
    import cloudpickle
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    cloudpickle.register_pickle_by_value(__import__(__name__, fromlist=["_"]))
    flag = tmp_path / "wedged"

    @serve.deployment(health_check_period_s=1, health_check_timeout_s=10, num_replicas=1,
                      ray_actor_options={"num_cpus": 0})
    class Probed:
        def __init__(self, flag: str):
            engine = FlaggedEngine(flag)
            self.health = HealthCheck(lambda: engine, inference=lambda e: e.probe, timeout_s=5)

        async def check_health(self) -> None:
            await self.health()

        async def __call__(self, request) -> str:
            return "ok"

    def status() -> str:
        app = serve.status().applications["probed"]
        return app.deployments["Probed"].status

    serve.run(Probed.bind(str(flag)), name="probed", route_prefix="/probed")
    try:
        assert status() == "HEALTHY"
        flag.touch()
        deadline = time.monotonic() + 60
        while status() != "UNHEALTHY":
            assert time.monotonic() < deadline, serve.status().applications["probed"]
            time.sleep(0.5)
        message = serve.status().applications["probed"].deployments["Probed"].message
        assert "health check failed" in message, message
        flag.unlink()
        deadline = time.monotonic() + 90
        while status() != "HEALTHY":  # Serve replaces the replica; the new one passes
            assert time.monotonic() < deadline, serve.status().applications["probed"]
            time.sleep(0.5)
        assert serve.status().applications["probed"].status == ApplicationStatus.RUNNING
    finally:
        serve.delete("probed")


def test_the_served_apps_pass_their_own_health_checks(transcription_url, embeddings_url):
    """The deployments as the serve config runs them (real models, in Ray): after more than a
    ``health_check_period_s`` every replica has passed ``check_health`` (built over the app the
    replica built), and stays HEALTHY."""
    from ray import serve

    period = max(d["health_check_period_s"] for name in ("transcription", "embeddings")
                 for d in next(a for a in yaml.safe_load(
                     (REPO / "services/serving/config/serve-cpu.yaml").read_text())["applications"]
                     if a["name"] == name)["deployments"])
    time.sleep(period + 3)
    apps = serve.status().applications
    for app, deployment in (("transcription", "TranscriptionServer"), ("embeddings", "EmbeddingsServer")):
        status = apps[app].deployments[deployment]
        assert status.status == "HEALTHY", (app, status)
        assert status.replica_states.get("RUNNING") == 1, (app, status.replica_states)
