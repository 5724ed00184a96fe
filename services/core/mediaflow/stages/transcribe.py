"""transcribe: speech → timed segments (+ SRT, WebVTT and plain-text renderings)."""

from __future__ import annotations

from mediaflow.models import Transcript
from mediaflow.subtitles import RENDERERS


def run(ctx) -> Transcript:
    options = ctx.spec.stages.transcription
    with ctx.store.local_path(ctx.media_id, "audio.wav") as audio:
        transcript = ctx.engines.transcriber.transcribe(
            audio,
            language=ctx.spec.language,
            align=options.align,
            diarize=options.diarize,
            on_progress=ctx.progress,
        )
    for fmt, render in RENDERERS.items():
        ctx.store.write_text(ctx.media_id, f"transcript.{fmt}", render(transcript))
    return transcript


def verify(ctx, record: Transcript) -> bool:
    return all(ctx.store.exists(ctx.media_id, f"transcript.{fmt}") for fmt in RENDERERS)
