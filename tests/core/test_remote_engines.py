"""The remote engines' HTTP behaviour: what is retried, what fails fast, and what the
error says. The served apps themselves are exercised in tests/serving."""

from __future__ import annotations

import httpx
import pytest

from mediaflow.engines.remote import RemoteEmbedder, RemoteTranscriber, request_with_retries
from mediaflow.errors import EngineRequestError, EngineUnavailableError


def scripted(*answers):
    """A transport answering with ``answers`` in turn (an exception is raised instead)."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handle), seen


def no_sleep(_seconds: float) -> None:
    pass


def test_retries_transient_failures_then_succeeds():
    transport, seen = scripted(
        httpx.ConnectError("refused"),
        httpx.Response(503, json={"error": {"message": "replica starting"}}),
        httpx.Response(200, json={"ok": True}),
    )
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        response = request_with_retries(lambda: client.get("/x"), what="svc", retries=3, sleep=no_sleep)
    assert response.json() == {"ok": True}
    assert len(seen) == 3


def test_client_errors_fail_fast_with_the_services_reason():
    transport, seen = scripted(httpx.Response(400, json={"error": {"message": "not a readable media file"}}))
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        with pytest.raises(EngineRequestError, match=r"\(400\): not a readable media file"):
            request_with_retries(lambda: client.get("/x"), what="svc", retries=3, sleep=no_sleep)
    assert len(seen) == 1


def test_gives_up_after_the_retries_with_the_last_cause():
    transport, seen = scripted(httpx.Response(502, text="bad gateway"))
    delays: list[float] = []
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        with pytest.raises(EngineUnavailableError, match="after 4 attempts.*502: bad gateway"):
            request_with_retries(lambda: client.get("/x"), what="svc", retries=3, backoff=1.0,
                                 max_backoff=3.0, sleep=delays.append)
    assert len(seen) == 4
    assert len(delays) == 3 and delays[2] <= 3.0 and delays[1] > delays[0] * 0.9


def test_embedder_splits_into_requests_and_keeps_order():
    def handle(request: httpx.Request) -> httpx.Response:
        import json

        texts = json.loads(request.content)["input"]
        rows = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 0.0]}
                for i, t in enumerate(texts)]
        return httpx.Response(200, json={"object": "list", "data": rows[::-1], "model": "m"})

    embedder = RemoteEmbedder("http://svc", request_size=2, transport=httpx.MockTransport(handle))
    assert embedder.embed(["a", "bb", "ccc"]) == [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]
    assert embedder.dim == 2


def test_transcriber_sends_the_openai_multipart_shape(tmp_path):
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF....")
    transport, seen = scripted(httpx.Response(200, json={
        "task": "transcribe", "text": "hi", "language": "en", "duration": 1.0,
        "segments": [{"start": 0.0, "end": 1.0, "text": "hi"}],
    }))
    transcript = RemoteTranscriber("http://svc", transport=transport).transcribe(audio, language="en")
    assert transcript.text == "hi"
    body = seen[0].content
    assert seen[0].url.path == "/v1/audio/transcriptions"
    for field in (b'name="response_format"\r\n\r\nverbose_json', b'name="language"\r\n\r\nen',
                  b'name="timestamp_granularities[]"\r\n\r\nword', b'filename="a.wav"'):
        assert field in body


TRANSCRIPT = {"task": "transcribe", "text": "hi", "language": "en", "duration": 1.0,
              "segments": [{"start": 0.0, "end": 1.0, "text": "hi"}]}


@pytest.mark.parametrize("status", [408, 425, 429, 502, 503, 504])
def test_what_a_retry_can_fix_is_retried(status):
    transport, seen = scripted(httpx.Response(status, json={"error": {"message": "later"}}),
                               httpx.Response(200, json={"ok": True}))
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        assert request_with_retries(lambda: client.get("/x"), what="svc", retries=2, sleep=no_sleep).is_success
    assert len(seen) == 2


def test_a_500_from_the_service_itself_is_permanent_with_its_message():
    """The app caught its own bug or misconfiguration: every retry would meet it again."""
    transport, seen = scripted(httpx.Response(500, json={"error": {
        "message": "ModuleNotFoundError: No module named 's3fs'", "type": "server_error", "code": 500}}))
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        with pytest.raises(EngineRequestError, match=r"failed on the request \(500\): ModuleNotFoundError: No module named 's3fs'"):
            request_with_retries(lambda: client.get("/x"), what="svc", retries=3, sleep=no_sleep)
    assert len(seen) == 1


@pytest.mark.parametrize("status", [501, 505, 507])
def test_other_server_errors_are_permanent(status):
    transport, seen = scripted(httpx.Response(status, json={"error": {"message": "no"}}))
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        with pytest.raises(EngineRequestError, match=rf"\({status}\): no"):
            request_with_retries(lambda: client.get("/x"), what="svc", retries=3, sleep=no_sleep)
    assert len(seen) == 1


def test_a_500_the_service_says_is_transient_is_retried_after_it():
    transport, seen = scripted(
        httpx.Response(500, headers={"Retry-After": "2"}, json={"error": {"message": "warming up"}}),
        httpx.Response(200, json={"ok": True}))
    delays: list[float] = []
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        request_with_retries(lambda: client.get("/x"), what="svc", retries=2, backoff=0.1, sleep=delays.append)
    assert len(seen) == 2 and delays == [2.0]


def test_a_bare_500_a_lost_replica_is_retried():
    """Ray Serve's proxy answers a replica that died mid-request (scale-down, OOM, replaced as
    unhealthy) with uvicorn's bare ``Internal Server Error``: another replica can answer."""
    transport, seen = scripted(
        httpx.Response(500, text="Internal Server Error", headers={"content-type": "text/plain; charset=utf-8"}),
        httpx.Response(200, json={"ok": True}))
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        assert request_with_retries(lambda: client.get("/x"), what="svc", retries=2, sleep=no_sleep).is_success
    assert len(seen) == 2


class Draining(httpx.BaseTransport):
    """Reads each request's body chunk by chunk as a server would (keeping only its size and
    hash), answering with ``statuses`` in turn."""

    def __init__(self, *statuses: int):
        self.statuses, self.bodies = list(statuses), []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        import hashlib

        size, digest, largest = 0, hashlib.sha256(), 0
        boundary = request.headers["content-type"].split("boundary=")[1].encode()
        for chunk in request.stream:
            size, largest = size + len(chunk), max(largest, len(chunk))
            digest.update(chunk.replace(boundary, b""))  # the boundary is random per request
        self.bodies.append((size, digest.hexdigest(), largest, request.headers.get("idempotency-key")))
        status = self.statuses.pop(0)
        if status != 200:
            return httpx.Response(status, json={"error": {"message": "replica starting"}})
        return httpx.Response(200, json=TRANSCRIPT)


def test_transcriber_streams_the_file_and_reopens_it_per_attempt(tmp_path, monkeypatch):
    import hashlib
    import os
    import tracemalloc
    from pathlib import Path

    from mediaflow.engines import remote

    audio = tmp_path / "long.wav"
    size = 24 * 1024**2
    with audio.open("wb") as out:
        for _ in range(size // (1024**2)):
            out.write(os.urandom(1024**2))
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the whole file was read"))
    monkeypatch.setattr(remote.time, "sleep", no_sleep)
    opened: list[str] = []
    real_open = Path.open

    def counting_open(self, *args, **kwargs):
        if self == audio:
            opened.append(args[0] if args else kwargs.get("mode", "r"))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    transport = Draining(503, 200)
    client = RemoteTranscriber("http://svc", transport=transport, retries=2, backoff=0)
    tracemalloc.start()
    try:
        transcript = client.transcribe(audio, language="en")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert transcript.text == "hi"
    assert peak < size / 4, f"{peak} bytes held for a {size}-byte file"
    assert opened == ["rb", "rb"]  # one open per attempt (the hash reads the file with open())
    (first, second) = transport.bodies
    assert first[:2] == second[:2] and first[0] > size  # the whole file, multipart framing around it
    assert first[2] <= 1024**2  # sent in chunks, never as one buffer
    assert first[3] == second[3]  # the same Idempotency-Key on the retry
    with open(audio, "rb") as fh:
        audio_sha256 = hashlib.sha256(fh.read()).hexdigest()
    expected = remote.transcription_key(audio_sha256, model=client.name, language="en",
                                        align=False, diarize=False)
    assert first[3] == f'"{expected}"'


def test_file_sha256_is_the_files_hash(tmp_path):
    import hashlib

    from mediaflow.engines.remote import file_sha256

    path = tmp_path / "a.bin"
    data = bytes(range(256)) * 10_000
    path.write_bytes(data)
    assert file_sha256(path, block=4096) == hashlib.sha256(data).hexdigest()
