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
