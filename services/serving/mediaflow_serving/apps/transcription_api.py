"""OpenAI-shaped transcription over any ``mediaflow`` ``Transcriber`` (WhisperX by default).

- ``POST /v1/audio/transcriptions``: multipart ``file``, ``model``, ``language``,
  ``prompt``, ``temperature``, ``response_format`` = json | verbose_json | text | srt | vtt,
  ``timestamp_granularities[]``, plus Mediaflow's ``align`` / ``diarize``.
- ``POST /v1/audio/transcriptions/uri``: JSON ``{uri, language, prompt, temperature, align,
  diarize}``; the service reads the artifact store itself (long media), only under ``allowed_root``.

``verbose_json`` is a ``mediaflow.models.Transcript`` plus OpenAI's ``task``/``text``/``usage``
(and ``words`` when word granularity is asked for), each segment with OpenAI's ``id``,
``seek``, ``tokens``, ``temperature``, ``avg_logprob``, ``compression_ratio`` and
``no_speech_prob`` (see ``openai_segments``). One transcription runs at a time
per replica: WhisperX already batches a file's VAD chunks (``asr_batch_size``), which
fills the cores, and the engine keeps per-call state.

Both routes take an ``Idempotency-Key`` header (``mediaflow_serving.idempotency``):
a request whose key names a transcription that is running joins it, one that finished
is answered from the cache with ``Idempotent-Replayed: true``, the same key with other
audio or options is a 422. A transcription is a task of the app, not of its request:
it completes, and is cached, even when its client disconnects.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from mediaflow.errors import UnsupportedLanguageError
from mediaflow.languages import check_language
from mediaflow.models import Transcript
from mediaflow.subtitles import to_srt, to_txt, to_vtt
from mediaflow_serving.apps.audio_input import (
    SAMPLE_RATE,
    decode_audio,
    decoded_bytes,
    fetch_artifact,
    probe_audio,
    save_upload,
)
from mediaflow_serving.apps.common import ApiError, create_model_app, error_response
from mediaflow_serving.idempotency import IdempotentWork, InvalidKey, KeyReused, WorkMetrics, parse_key
from mediaflow_serving.memory_budget import ByteBudget, OverBudget
from mediaflow_serving.settings import ServingSettings

ResponseFormat = Literal["json", "verbose_json", "text", "srt", "vtt"]
Granularity = Literal["word", "segment"]
# multipart framing around the file: a body this much over the limit may still hold a file under it
MULTIPART_SLACK = 64 * 1024
HOP_LENGTH = 160  # Whisper's mel frames: 10 ms at 16 kHz (a segment's ``seek``)
REPLAYED_HEADER = "Idempotent-Replayed"


Temperature = Annotated[float, Field(ge=0, le=1)]


class UriTranscriptionRequest(BaseModel):
    uri: str
    language: str | None = None
    prompt: str | None = None
    temperature: Temperature | None = None
    align: bool = False
    diarize: bool = False
    response_format: ResponseFormat = "verbose_json"


class Options(BaseModel):
    """What shapes a transcript, besides its audio: the engine's keyword arguments."""

    language: str | None = None
    align: bool = False
    diarize: bool = False
    prompt: str | None = None
    temperature: float | None = None

    def engine_kwargs(self) -> dict:
        # prompt/temperature only when asked for: engines that take neither still serve the rest
        return self.model_dump(exclude_none=True, exclude={"language"}) | {"language": self.language}


def openai_segments(transcript: Transcript, temperature: float | None) -> list[dict]:
    """Segments with every field of OpenAI's ``TranscriptionSegment``. WhisperX reports its
    decoder's figures; for an engine that does not: ``seek`` from the start time, no
    ``tokens``, the temperature asked for, the text's own compression ratio, and 0.0 for
    ``avg_logprob``/``no_speech_prob`` (not measured)."""
    out = []
    for i, seg in enumerate(transcript.segments):
        body = {"id": i, **seg.model_dump()}
        defaults = {"seek": int(round(seg.start * SAMPLE_RATE / HOP_LENGTH)), "tokens": [],
                    "temperature": temperature or 0.0, "avg_logprob": 0.0,
                    "compression_ratio": compression_ratio(seg.text.strip()),
                    "no_speech_prob": 0.0}
        out.append({k: (defaults[k] if k in defaults and v is None else v) for k, v in body.items()})
    return out


def compression_ratio(text: str) -> float:
    """Whisper's: the text's UTF-8 length over its zlib-compressed length."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def render(transcript: Transcript, response_format: ResponseFormat, granularities: list[Granularity],
           temperature: float | None = None):
    usage = {"type": "duration", "seconds": transcript.duration}
    if response_format == "json":
        return JSONResponse({"text": transcript.text})
    if response_format == "text":
        return PlainTextResponse(to_txt(transcript))
    if response_format == "srt":
        return PlainTextResponse(to_srt(transcript))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(transcript), media_type="text/vtt")
    body = {"task": "transcribe", "text": transcript.text, **transcript.model_dump(),
            "segments": openai_segments(transcript, temperature), "usage": usage}
    if "word" in granularities:
        body["words"] = [w.model_dump() for s in transcript.segments for w in s.words]
    return JSONResponse(body)


def fingerprint(source: dict, *, model: str | None, options: Options) -> str:
    """What a transcription is: its audio and the options that shape the transcript (not
    how it is rendered: a replay may ask for another response_format)."""
    what = {"source": source, "model": model, **options.model_dump(exclude_none=True, exclude={"language"}),
            "language": options.language}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def create_app(
    transcriber_factory: Callable[[], object],
    *,
    settings: ServingSettings | None = None,
    metrics_to_ray: bool = False,
) -> FastAPI:
    settings = settings or ServingSettings()
    app = create_model_app("Mediaflow transcription", "transcription", transcriber_factory,
                           metrics_to_ray=metrics_to_ray)
    slot, metrics = app.state.engine, app.state.metrics
    one_at_a_time = asyncio.Lock()
    decode_budget = app.state.decode_budget = ByteBudget(settings.decode_budget_bytes)
    work = app.state.work = IdempotentWork(
        max_results=settings.idempotency_max_results, ttl_s=settings.idempotency_ttl_s,
        metrics=WorkMetrics(metrics))

    @app.exception_handler(KeyReused)
    async def key_reused(request: Request, exc: KeyReused):
        return error_response(422, str(exc))

    @app.exception_handler(UnsupportedLanguageError)  # the engine's own check, when it runs
    async def unsupported_language(request: Request, exc: UnsupportedLanguageError):
        return error_response(400, str(exc), param="language")

    @app.exception_handler(InvalidKey)
    async def invalid_key(request: Request, exc: InvalidKey):
        return error_response(400, str(exc))

    def allowed_root() -> str:
        if settings.allowed_root:
            return settings.allowed_root
        from mediaflow.config import Settings

        return Settings().artifacts_uri

    def checked_language(language: str | None) -> str | None:
        """The request's language for this replica's model, or None (detect): a 400 naming
        ``language`` for a code Whisper does not know or the model cannot transcribe, before
        any upload is stored or decoded."""
        try:
            language = check_language(language)
            engine = slot.engine  # the model's own languages once it is loaded (else: when it runs)
            return engine.check_language(language) if hasattr(engine, "check_language") else language
        except UnsupportedLanguageError as exc:
            raise ApiError(400, str(exc), param="language") from None

    def transcribe_audio(path: Path, audio, options: Options) -> Transcript:
        engine = slot.get()
        # engines that take samples skip a second ffmpeg pass over the file
        if hasattr(engine, "transcribe_array"):
            return engine.transcribe_array(audio, **options.engine_kwargs())
        return engine.transcribe(path, **options.engine_kwargs())

    async def transcribe_owned(workdir: Path, path: Path, options: Options) -> Transcript:
        """Decode and transcribe the file, then remove ``workdir``: runs as the app's task.

        The decoded audio is held under the replica's decode budget, from before it is decoded
        until the transcript is done: queued requests wait with their files on disk, not in RAM."""
        try:
            probe = await run_in_threadpool(probe_audio, path, max_bytes=settings.max_upload_bytes)
            need = decoded_bytes(probe)
            try:
                async with decode_budget.hold(need):
                    audio = await run_in_threadpool(decode_audio, path, max_bytes=settings.max_upload_bytes,
                                                    probe=probe)
                    async with one_at_a_time:
                        transcript = await run_in_threadpool(transcribe_audio, path, audio, options)
                    seconds = len(audio) / SAMPLE_RATE
                    del audio
            except OverBudget:
                raise HTTPException(413, f"{probe.duration:.0f} s of audio decode to {need} bytes, over this "
                                         f"replica's decode budget of {decode_budget.total} bytes "
                                         "(MEDIAFLOW_SERVE_DECODE_BUDGET_BYTES)") from None
            metrics.add_audio_seconds(seconds)
            return transcript
        finally:
            await run_in_threadpool(shutil.rmtree, workdir, True)

    async def run_once(key_header: str | None, workdir: Path, path: Path, source: dict, model: str | None,
                       options: Options) -> tuple[Transcript, bool]:
        """The transcript (fresh, joined or replayed) and whether it is a replay; ``workdir``
        belongs to the transcription if one starts, and is removed here otherwise."""
        started = False

        def start():
            nonlocal started
            started = True
            return transcribe_owned(workdir, path, options)

        try:
            key = parse_key(key_header)
            transcript, outcome = await work.run(key, fingerprint(source, model=model, options=options), start)
        finally:
            if not started:
                await run_in_threadpool(shutil.rmtree, workdir, True)
        return transcript, outcome != "fresh"

    def answer(transcript: Transcript, replayed: bool, response_format: ResponseFormat,
               granularities: list[Granularity], temperature: float | None = None):
        response = render(transcript, response_format, granularities, temperature)
        if replayed:
            response.headers[REPLAYED_HEADER] = "true"
        return response

    @app.middleware("http")
    async def refuse_oversized_bodies(request: Request, call_next):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes + MULTIPART_SLACK:
            return error_response(413, f"request body of {declared} bytes is over the "
                                       f"{settings.max_upload_bytes}-byte limit")
        return await call_next(request)

    @app.post("/v1/audio/transcriptions")
    async def transcribe_upload(
        file: Annotated[UploadFile, File()],
        model: Annotated[str | None, Form()] = None,  # OpenAI's field; a replica serves one model
        language: Annotated[str | None, Form()] = None,
        prompt: Annotated[str | None, Form()] = None,
        temperature: Annotated[Temperature | None, Form()] = None,
        response_format: Annotated[ResponseFormat, Form()] = "json",
        timestamp_granularities: Annotated[
            list[Granularity] | None, Form(alias="timestamp_granularities[]")
        ] = None,
        align: Annotated[bool, Form()] = False,
        diarize: Annotated[bool, Form()] = False,
        idempotency_key: Annotated[str | None, Header()] = None,
    ):
        language = checked_language(language)
        workdir = Path(tempfile.mkdtemp(prefix="mediaflow-upload-"))
        path = workdir / "upload"
        try:
            digest = await save_upload(file, path, max_bytes=settings.max_upload_bytes)
        except BaseException:
            await run_in_threadpool(shutil.rmtree, workdir, True)
            raise
        options = Options(language=language or None, align=align, diarize=diarize, prompt=prompt or None,
                          temperature=temperature)
        transcript, replayed = await run_once(idempotency_key, workdir, path, {"sha256": digest}, model, options)
        return answer(transcript, replayed, response_format, timestamp_granularities or ["segment"], temperature)

    @app.post("/v1/audio/transcriptions/uri")
    async def transcribe_uri(body: UriTranscriptionRequest,
                             idempotency_key: Annotated[str | None, Header()] = None):
        body = body.model_copy(update={"language": checked_language(body.language)})
        workdir = Path(tempfile.mkdtemp(prefix="mediaflow-artifact-"))
        path = workdir / "artifact"
        try:
            digest = await run_in_threadpool(
                fetch_artifact, body.uri, path, root=allowed_root(), max_bytes=settings.max_upload_bytes
            )
        except BaseException:
            await run_in_threadpool(shutil.rmtree, workdir, True)
            raise
        options = Options(language=body.language, align=body.align, diarize=body.diarize,
                          prompt=body.prompt or None, temperature=body.temperature)
        transcript, replayed = await run_once(idempotency_key, workdir, path,
                                              {"uri": body.uri, "sha256": digest}, None, options)
        return answer(transcript, replayed, body.response_format, ["segment", "word"], body.temperature)

    return app
