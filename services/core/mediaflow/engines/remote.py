"""Remote engines: the same ports, served by the Ray Serve apps (services/serving).

HTTP contract (OpenAI-shaped where OpenAI has a shape):
- ``POST {transcription_url}/v1/audio/transcriptions`` multipart ``file`` +
  ``model``, ``language``, ``response_format=verbose_json``,
  ``timestamp_granularities[]=word|segment`` → ``{language, duration, segments:[{start,
  end, text, words:[{word,start,end}]}], word_timing}``.
- ``POST {transcription_url}/v1/audio/transcriptions/uri`` JSON ``{uri, language, align,
  diarize}``: the service reads the artifact store itself (long media, operator).
- ``POST {embedding_url}/v1/embeddings`` ``{input: [...], model}`` → OpenAI embeddings;
  ``model`` picks one of the models the app serves (``GET /v1/models``).

Only what a retry can fix is retried, with exponential backoff and jitter (at least the
``Retry-After`` the service asks for), then ``EngineUnavailableError`` (temporary; the
operator retries the stage later): connection errors, timeouts, 408 (Ray Serve's proxy
past its ``request_timeout_s``), 425, 429, 502, 503 (Ray Serve: no replica yet, or
back-pressure), 504, and a 500 that the service says is transient (``Retry-After``) or
that is not the service's own answer (a bare 500 without its JSON error body: Ray Serve
answers so for a replica that died mid-request — scaled down, OOM-killed, replaced as
unhealthy; an exception the app left unhandled looks the same, which is why the apps answer
their own errors in JSON). Everything else raises ``EngineRequestError`` (permanent: the operator fails
the MediaJob with the reason) at once, a 500 with the service's error body included: the
service caught its own bug or misconfiguration (e.g. a missing filesystem module), which
every retry would meet again, after transcribing again.

The audio file is streamed from disk, reopened for every attempt (never held in memory),
and so is its hash for the Idempotency-Key.

Transcriptions carry an ``Idempotency-Key`` (draft-ietf-httpapi-idempotency-key-header):
a hash of the audio bytes and the options that shape the transcript. A retry (the
client's own, or a restarted operator's) of a transcription the service is still
running joins it, and one it finished is answered from its cache: a transcription longer
than any client timeout, or whose client died, still runs once.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from mediaflow.engines.base import ProgressFn
from mediaflow.errors import EngineRequestError, EngineUnavailableError
from mediaflow.models import Transcript

RETRYABLE_STATUS = {408, 425, 429, 502, 503, 504}
# the longest Retry-After obeyed: a service asking for more is retried sooner
MAX_RETRY_AFTER = 120.0
IDEMPOTENCY_KEY = "Idempotency-Key"
HASH_BLOCK = 1024 * 1024


def file_sha256(path: Path, block: int = HASH_BLOCK) -> str:
    """The hex sha256 of a file, read in blocks (a long recording never sits in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` of a response in seconds (delta-seconds or an HTTP date)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def transcription_key(content_sha256: str, *, model: str, language: str | None, align: bool,
                      diarize: bool) -> str:
    """The Idempotency-Key of a transcription: what the audio is and what shapes its transcript
    (not how it is rendered). The same media with the same options is the same work."""
    options = {"v": 1, "audio_sha256": content_sha256, "model": model, "language": language or None,
               "align": bool(align), "diarize": bool(diarize)}
    return "tr-" + hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()


def _service_error(response: httpx.Response) -> bool:
    """Whether the body is the service's own OpenAI-shaped error (``{"error": {...}}``)."""
    if "json" not in response.headers.get("content-type", ""):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), dict)


def retryable(response: httpx.Response) -> bool:
    """Whether a retry can fix this error response (see the module docstring)."""
    if response.status_code in RETRYABLE_STATUS:
        return True
    if response.status_code == 500:
        return retry_after(response) is not None or not _service_error(response)
    return False


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err or body.get("detail") or body)
    return str(body)[:300]


def request_with_retries(
    send: Callable[[], httpx.Response],
    *,
    what: str,
    retries: int = 4,
    backoff: float = 0.5,
    max_backoff: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
) -> httpx.Response:
    """Call ``send`` until it answers 2xx, retrying what a retry can fix.

    The n-th retry waits ``min(max_backoff, backoff * 2**n)`` with jitter, or the
    response's ``Retry-After`` when that is longer (up to ``MAX_RETRY_AFTER``)."""
    last = ""
    for attempt in range(retries + 1):
        asked: float | None = None
        try:
            response = send()
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if response.is_success:
                return response
            if not retryable(response):
                verb = "failed on" if response.status_code >= 500 else "rejected"
                raise EngineRequestError(
                    f"{what} {verb} the request ({response.status_code}): {_reason(response)}"
                )
            last = f"{response.status_code}: {_reason(response)}"
            asked = retry_after(response)
        if attempt < retries:
            delay = min(max_backoff, backoff * 2**attempt) * (0.5 + random.random() / 2)
            if asked is not None:
                delay = max(delay, min(asked, MAX_RETRY_AFTER))
            sleep(delay)
    raise EngineUnavailableError(f"{what} unavailable after {retries + 1} attempts ({last})")


def _retry_settings(settings) -> dict:
    return {"timeout": settings.remote_timeout, "retries": settings.remote_retries,
            "backoff": settings.remote_backoff, "max_backoff": settings.remote_max_backoff}


class _RemoteEngine:
    def __init__(self, base_url: str, *, timeout: float = 600.0, retries: int = 4,
                 backoff: float = 0.5, max_backoff: float = 8.0,
                 api_key: str | None = None, transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=10.0),
            headers=headers, transport=transport,
        )
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff

    def _post(self, path: str, *, send: Callable[[], httpx.Response] | None = None,
              **kwargs: Any) -> httpx.Response:
        """POST with retries; ``send`` (one attempt) replaces ``client.post(path, **kwargs)``."""
        return request_with_retries(
            send or (lambda: self.client.post(path, **kwargs)),
            what=f"{self.base_url}{path}",
            retries=self.retries,
            backoff=self.backoff,
            max_backoff=self.max_backoff,
        )


class RemoteTranscriber(_RemoteEngine):
    def __init__(self, base_url: str, *, model: str = "whisper", **kwargs):
        super().__init__(base_url, **kwargs)
        self.name = model

    @classmethod
    def from_settings(cls, settings) -> RemoteTranscriber:
        if not settings.transcription_url:
            raise EngineUnavailableError("MEDIAFLOW_TRANSCRIBER=remote needs MEDIAFLOW_TRANSCRIPTION_URL")
        return cls(settings.transcription_url, **_retry_settings(settings))

    def transcribe(self, audio_path: Path, *, language: str | None = None, align: bool = False,
                   diarize: bool = False, on_progress: ProgressFn | None = None) -> Transcript:
        audio_path = Path(audio_path)
        key = transcription_key(file_sha256(audio_path), model=self.name,
                                language=language, align=align, diarize=diarize)
        data = {
            "model": self.name,
            "response_format": "verbose_json",
            "timestamp_granularities[]": ["segment", "word"],
            "align": str(align).lower(),
            "diarize": str(diarize).lower(),
        }
        if language:
            data["language"] = language
        headers = {IDEMPOTENCY_KEY: f'"{key}"'}

        def send() -> httpx.Response:
            # reopened per attempt: httpx streams the multipart body from the file
            with audio_path.open("rb") as audio:
                return self.client.post("/v1/audio/transcriptions", data=data, headers=headers,
                                        files={"file": (audio_path.name, audio, "audio/wav")})

        response = self._post("/v1/audio/transcriptions", send=send)
        if on_progress:
            on_progress(1.0)
        return Transcript.model_validate(response.json())

    def transcribe_uri(self, uri: str, *, language: str | None = None, align: bool = False,
                       diarize: bool = False, idempotency_key: str | None = None) -> Transcript:
        """The service reads ``uri`` itself. The client has not read the bytes, so it cannot
        derive a key from them: pass one (e.g. from the media id and its audio's checksum)
        for a retry to join the work; the service refuses it (422) if the artifact changed."""
        headers = {IDEMPOTENCY_KEY: f'"{idempotency_key}"'} if idempotency_key else {}
        response = self._post(
            "/v1/audio/transcriptions/uri",
            json={"uri": uri, "language": language, "align": align, "diarize": diarize},
            headers=headers,
        )
        return Transcript.model_validate(response.json())


class RemoteEmbedder(_RemoteEngine):
    """``model`` is sent with every request: the embeddings app serves several (the English
    all-MiniLM-L6-v2 and the multilingual use-multilingual-v3) and picks by it.

    ``dim`` is learnt from the first answer (a configured model of another size works), unless
    ``strict_dim``: then vectors of another size are an error, not a silent change (a service
    that ignored ``model`` and answered with another model's vectors)."""

    def __init__(self, base_url: str, *, model: str = "all-MiniLM-L6-v2", dim: int = 384,
                 request_size: int = 256, strict_dim: bool = False, **kwargs):
        super().__init__(base_url, **kwargs)
        self.name = model
        self.dim = dim
        self.strict_dim = strict_dim
        self.request_size = request_size

    @classmethod
    def from_settings(cls, settings, *, model: str | None = None, dim: int | None = None) -> RemoteEmbedder:
        """The default embedder (settings' model), or ``model`` of ``dim`` dimensions (strict)."""
        if not settings.embedding_url:
            raise EngineUnavailableError("MEDIAFLOW_EMBEDDER=remote needs MEDIAFLOW_EMBEDDING_URL")
        from mediaflow.engines.st_embedder import embedder_name

        named = ({"model": model, "dim": dim, "strict_dim": True} if model
                 else {"model": embedder_name(settings.embedding_model)})
        return cls(settings.embedding_url, request_size=settings.embedding_request_size,
                   **named, **_retry_settings(settings))

    def embed(self, texts: Sequence[str], *, on_progress: ProgressFn | None = None) -> list[list[float]]:
        vectors: list[list[float]] = []
        for lo in range(0, len(texts), self.request_size):
            batch = list(texts[lo : lo + self.request_size])
            body = self._post("/v1/embeddings", json={"input": batch, "model": self.name}).json()
            rows = sorted(body["data"], key=lambda d: d["index"])
            if len(rows) != len(batch):
                raise EngineRequestError(f"{self.base_url} returned {len(rows)} vectors for {len(batch)} inputs")
            vectors.extend(row["embedding"] for row in rows)
            if self.strict_dim and any(len(row["embedding"]) != self.dim for row in rows):
                raise EngineRequestError(
                    f"{self.base_url} returned vectors of {len(rows[0]['embedding'])} dimensions for "
                    f"{self.name}, which has {self.dim} (it answered as {body.get('model')!r})")
            if on_progress:
                on_progress(min(1.0, (lo + len(batch)) / len(texts)))
        if vectors:
            self.dim = len(vectors[0])
        return vectors
