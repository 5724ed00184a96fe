"""extract_audio: ffmpeg → 16 kHz mono 16-bit WAV (what WhisperX consumes), plus a thumbnail."""

from __future__ import annotations

import errno
import os
import subprocess
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ffmpeg

from mediaflow.errors import InvalidMediaError
from mediaflow.media_policy import demuxer_of, input_options
from mediaflow.models import AudioRecord

SAMPLE_RATE = 16000
# A decode that yields less than this share of the probed duration means the
# file is truncated or damaged: better to fail than to index half a talk.
MIN_DECODED_SHARE = 0.9


def _raise_if_disk_full(stderr: str, target: Path) -> None:
    """ffmpeg reports a full disk in words: raise the OSError the artifact store maps to
    ArtifactStoreFullError (retryable), not a verdict on the media."""
    for code in (errno.ENOSPC, errno.EDQUOT):
        if os.strerror(code) in stderr:
            raise OSError(code, os.strerror(code), str(target))


def extract_audio(
    source: Path,
    target: Path,
    *,
    duration: float,
    format_name: str,
    on_progress: Callable[[float], None] | None = None,
) -> AudioRecord:
    """Decode with the demuxer probe found (``format_name``): ffmpeg never guesses again."""
    args = (
        ffmpeg.input(str(source), **input_options(demuxer_of(format_name)))
        .output(str(target), vn=None, ac=1, ar=SAMPLE_RATE, acodec="pcm_s16le", f="wav")
        .global_args("-nostdin", "-v", "error", "-progress", "pipe:1", "-nostats")
        .overwrite_output()
        .compile()
    )
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        # -progress prints key=value lines; out_time_us is the decoded position.
        if on_progress and line.startswith("out_time_us=") and duration > 0:
            try:
                on_progress(min(1.0, int(line.split("=", 1)[1]) / 1e6 / duration))
            except ValueError:
                pass
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0:
        _raise_if_disk_full(stderr, target)
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "ffmpeg failed"
        raise InvalidMediaError(f"audio extraction failed for {source.name}: {last}")
    with wave.open(str(target), "rb") as wav:
        decoded = wav.getnframes() / wav.getframerate()
    if decoded < MIN_DECODED_SHARE * duration:
        raise InvalidMediaError(
            f"{source.name} is truncated or damaged: decoded {decoded:.1f} s of {duration:.1f} s"
        )
    return AudioRecord(duration=decoded, size_bytes=target.stat().st_size)


def make_thumbnail(source: Path, target: Path, *, at_seconds: float, format_name: str, width: int = 480) -> bool:
    """A JPEG frame for the UI; best effort (a failure here never fails the job)."""
    try:
        (
            ffmpeg.input(str(source), ss=max(0.0, at_seconds), **input_options(demuxer_of(format_name)))
            .filter("scale", width, -2)
            .output(str(target), vframes=1, **{"q:v": 4})
            .global_args("-nostdin", "-v", "error")
            .overwrite_output()
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as exc:
        _raise_if_disk_full((exc.stderr or b"").decode(errors="replace"), target)
        return False
    return target.exists() and target.stat().st_size > 0


def run(ctx) -> AudioRecord:
    from mediaflow.models import ProbeResult

    probe = ctx.store.read_model(ctx.media_id, "probe.json", ProbeResult)
    with ctx.source_path() as source:
        thumbnail = None
        if probe.has_video:
            # The thumbnail's seek and decode run beside the audio decode (another ffmpeg, in a
            # thread that only waits on it): on a 10-min video they take about as long.
            thumbnail = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mediaflow-thumbnail")
            made = thumbnail.submit(_store_thumbnail, ctx, source, probe)
        try:
            with ctx.store.writing_file(ctx.media_id, "audio.wav") as target:
                record = extract_audio(source, target, duration=probe.duration, format_name=probe.format_name,
                                       on_progress=ctx.progress)
        except BaseException:
            if thumbnail is not None:
                thumbnail.shutdown(wait=True)  # then nothing of the failed input is left
                ctx.store.delete(ctx.media_id, "thumbnail.jpg")
            raise
        if thumbnail is not None:
            made.result()  # its own errors (a full disk) are the stage's
            thumbnail.shutdown()
    return record


def _store_thumbnail(ctx, source: Path, probe) -> None:
    with ctx.store.writing_file(ctx.media_id, "thumbnail.jpg") as thumb:
        if not make_thumbnail(source, thumb, at_seconds=min(probe.duration * 0.1, 30.0),
                              format_name=probe.format_name):
            thumb.unlink(missing_ok=True)  # nothing half-made is stored


def verify(ctx, record: AudioRecord) -> bool:
    return ctx.store.exists(ctx.media_id, "audio.wav")
