"""``POST /v1/audio/transcriptions/uri`` on ``s3://`` artifacts of a real S3 API (moto_server on
loopback). The transcription app runs as a real process (``python -m mediaflow_serving.plain
transcription``, the bundled model) with its allowed root in the bucket and the S3 endpoint and
keys in the environment the chart gives the Ray pods. The store's failures are answered as JSON
errors a client does not retry: a missing key 404, refused access 403, a server without s3fs 501;
an unreachable store is 503 (retryable). ``RemoteTranscriber`` is the client (retries on)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from mediaflow.engines.remote import RETRYABLE_STATUS, RemoteTranscriber
from mediaflow.errors import EngineRequestError, EngineUnavailableError
from mediaflow_serving.apps.transcription_api import create_app
from mediaflow_serving.settings import ServingSettings
from tests.conftest import REPO, free_port, wer
from tests.moto_s3 import BUCKET, forget_s3fs_instances, running_s3, s3_environment, serve_bucket

MAX_WER = 0.15
ROOT = f"s3://{BUCKET}/artifacts"
AUDIO_KEY = "artifacts/media/talk-0001/audio.wav"


class CountingTransport(httpx.BaseTransport):
    """Counts the requests a client sends (to tell one answer from five retried ones)."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner, self.requests = inner, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        response = self.inner.handle_request(request)
        if not isinstance(response.stream, httpx.SyncByteStream):  # TestClient's in-process answer
            response.read()
            response = httpx.Response(response.status_code, headers=response.headers, content=response.content)
        return response


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    yield from serve_bucket(tmp_path_factory, environment=False)


@pytest.fixture(scope="module")
def stored_speech(s3, speech) -> str:
    s3.client().upload_file(str(speech.media), BUCKET, AUDIO_KEY)
    s3.client().upload_file(str(speech.media), BUCKET, "elsewhere/audio.wav")
    return f"s3://{BUCKET}/{AUDIO_KEY}"


@pytest.fixture(scope="module")
def server(s3, tmp_path_factory):
    """The plain transcription app, a real process, reading the bucket."""
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, **s3.env, "HF_HUB_OFFLINE": "1", "MEDIAFLOW_SERVE_ALLOWED_ROOT": ROOT}
    with log.open("a") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mediaflow_serving.plain", "transcription",
                                 "--port", str(port)], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def counted_engine(url: str) -> tuple[RemoteTranscriber, CountingTransport]:
    transport = CountingTransport(httpx.HTTPTransport())
    return RemoteTranscriber(url, retries=4, backoff=0.5, transport=transport), transport


def test_an_s3_artifact_under_the_root_is_transcribed(server, stored_speech, speech):
    engine, transport = counted_engine(server)
    transcript = engine.transcribe_uri(stored_speech, language="en")
    assert wer(speech.text, transcript.text) <= MAX_WER, transcript.text
    assert abs(transcript.duration - speech.duration) < 0.5
    assert transport.requests == 1


@pytest.mark.parametrize("uri", [
    f"s3://{BUCKET}/elsewhere/audio.wav",            # same bucket, outside the prefix
    f"s3://{BUCKET}/artifacts-2/media/x/audio.wav",  # a sibling prefix that starts alike
    f"s3://{BUCKET}/artifacts/../elsewhere/audio.wav",
    "s3://another-bucket/artifacts/media/talk-0001/audio.wav",
])
def test_an_s3_uri_outside_the_root_is_refused_once(server, stored_speech, uri):
    engine, transport = counted_engine(server)
    with pytest.raises(EngineRequestError, match="403.*outside the allowed artifact root"):
        engine.transcribe_uri(uri)
    assert transport.requests == 1


def test_a_missing_key_is_a_404_json_error_not_retried(server, stored_speech):
    missing = f"{ROOT}/media/talk-0001/nothing.wav"
    response = httpx.post(f"{server}/v1/audio/transcriptions/uri", json={"uri": missing}, timeout=60)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["message"] == f"no such artifact: {missing}"
    engine, transport = counted_engine(server)
    started = time.monotonic()
    with pytest.raises(EngineRequestError, match="rejected the request \\(404\\): no such artifact"):
        engine.transcribe_uri(missing)
    assert transport.requests == 1 and time.monotonic() - started < 5
    # a "directory" (a prefix with keys under it) is no artifact either
    response = httpx.post(f"{server}/v1/audio/transcriptions/uri", json={"uri": f"{ROOT}/media/talk-0001"})
    assert response.status_code == 404, response.text


# -- the store's failures, on the app in this process (the engine is never reached) ----------

def in_process(root: str = ROOT) -> tuple[TestClient, RemoteTranscriber, CountingTransport]:
    client = TestClient(create_app(lambda: None, settings=ServingSettings(allowed_root=root)))
    transport = CountingTransport(client._transport)
    return client, RemoteTranscriber("http://testserver", retries=4, backoff=0.5, transport=transport), transport


def test_without_s3fs_the_answer_is_a_501_json_error_not_retried(s3, monkeypatch):
    # an image without s3fs: `import s3fs` fails, fsspec has no S3 class loaded
    monkeypatch.setitem(sys.modules, "s3fs", None)
    loaded = importlib.import_module("fsspec.registry")._registry
    for protocol in ("s3", "s3a"):
        monkeypatch.delitem(loaded, protocol, raising=False)
    client, engine, transport = in_process()
    uri = f"{ROOT}/media/talk-0001/audio.wav"
    response = client.post("/v1/audio/transcriptions/uri", json={"uri": uri})
    assert response.status_code == 501, response.text
    message = response.json()["error"]["message"]
    assert "cannot read s3:// artifacts" in message and "s3fs" in message, message
    assert 501 not in RETRYABLE_STATUS
    with pytest.raises(EngineRequestError, match="501"):
        engine.transcribe_uri(uri)
    assert transport.requests == 1


def test_access_the_store_refuses_is_a_403_json_error_not_retried(tmp_path):
    # IAM enforced from the first request: this server's keys are unknown to the store
    with running_s3(tmp_path / "moto-auth.log", auth=True) as strict, s3_environment(strict):
        client, engine, transport = in_process()
        uri = f"{ROOT}/media/talk-0001/audio.wav"
        response = client.post("/v1/audio/transcriptions/uri", json={"uri": uri})
        assert response.status_code == 403, response.text
        assert response.json()["error"]["message"].startswith(f"the artifact store refused access to {uri}")
        with pytest.raises(EngineRequestError, match="403"):
            engine.transcribe_uri(uri)
        assert transport.requests == 1


def test_an_unreachable_store_is_a_503_json_error_worth_a_retry(s3, monkeypatch):
    with s3_environment(s3):
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        forget_s3fs_instances()
        client, engine, transport = in_process()
        uri = f"{ROOT}/media/talk-0001/audio.wav"
        response = client.post("/v1/audio/transcriptions/uri", json={"uri": uri})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["message"].startswith(f"the artifact store is unreachable reading {uri}")
        engine = RemoteTranscriber("http://testserver", retries=1, backoff=0.01, transport=transport)
        with pytest.raises(EngineUnavailableError, match="503"):
            engine.transcribe_uri(uri)
        assert transport.requests == 2


def test_a_local_root_still_reads_local_files(tmp_path, speech):
    # the same code path for a directory root: not a regression of the s3 work
    from mediaflow_serving.apps.audio_input import fetch_artifact

    stored = tmp_path / "media" / "m1" / "audio.wav"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(Path(speech.media).read_bytes())
    fetch_artifact(str(stored), tmp_path / "copy", root=str(tmp_path), max_bytes=10**8)
    assert (tmp_path / "copy").read_bytes() == stored.read_bytes()
