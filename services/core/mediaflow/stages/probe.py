"""probe: what is in the file (ffprobe through ffmpeg-python), refusing bad input early."""

from __future__ import annotations

import re
from pathlib import Path

import ffmpeg

from mediaflow.errors import InvalidMediaError, MediaTooLargeError, NoAudioStreamError
from mediaflow.media_policy import demuxer_of, input_options
from mediaflow.models import ProbeResult, StreamInfo

# A frame larger than 8K UHD is a decompression bomb to the thumbnail decoder, not a talk.
MAX_VIDEO_PIXELS = 7680 * 4320
# Still images muxed as a "video" stream (cover art): never decoded as video.
COVER_ART_CODECS = ("mjpeg", "png")


# ffprobe's log line when -format_whitelist refused the demuxer it detected
_NOT_WHITELISTED = re.compile(r"\[(\w+) @ [^\]]*\] Format not on whitelist")


def _last_line(stderr: bytes | None) -> str:
    lines = [ln.strip() for ln in (stderr or b"").decode(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else "ffprobe failed"


def probe_file(path: Path, *, max_bytes: int | None = None) -> ProbeResult:
    if not path.is_file():
        raise InvalidMediaError(f"no such file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise InvalidMediaError(f"empty file: {path.name}")
    if max_bytes is not None and size > max_bytes:
        raise MediaTooLargeError(f"{path.name} is {size} bytes, over the {max_bytes}-byte limit")
    try:
        info = ffmpeg.probe(str(path), **input_options())
    except ffmpeg.Error as exc:
        if refused := _NOT_WHITELISTED.search((exc.stderr or b"").decode(errors="replace")):
            raise InvalidMediaError(
                f"not a readable media file: {path.name} is a {refused.group(1)!r} file, not an audio or video "
                "container (playlists, concat lists, images and raw samples are refused)"
            ) from None
        raise InvalidMediaError(
            f"not a readable media file (corrupt, truncated or unsupported): {path.name}: "
            f"{_last_line(exc.stderr)}"
        ) from None
    streams = [
        StreamInfo(
            index=s.get("index", i),
            codec_type=s.get("codec_type", "unknown"),
            codec_name=s.get("codec_name"),
            sample_rate=int(s["sample_rate"]) if s.get("sample_rate") else None,
            channels=s.get("channels"),
            width=s.get("width"),
            height=s.get("height"),
        )
        for i, s in enumerate(info.get("streams", []))
    ]
    audio = [s for s in streams if s.codec_type == "audio"]
    if not audio:
        raise NoAudioStreamError(f"no audio stream in {path.name}: nothing to transcribe")
    codec = audio[0].codec_name
    if not codec or codec == "unknown":
        tag = next((s.get("codec_tag") for s in info.get("streams", []) if s.get("codec_type") == "audio"),
                   None)
        raise InvalidMediaError(f"unsupported audio codec in {path.name}" + (f" (codec tag {tag})" if tag else "")
                                + ": no decoder for it")
    for video in streams:
        if video.codec_type == "video" and video.width and video.height \
                and video.width * video.height > MAX_VIDEO_PIXELS:
            raise InvalidMediaError(f"video of {video.width}x{video.height} pixels in {path.name} is over the "
                                    f"limit of {MAX_VIDEO_PIXELS} pixels (7680x4320)")
    fmt = info.get("format", {})
    demuxer_of(fmt.get("format_name", ""))  # the whitelist already holds; say so clearly
    duration = float(fmt.get("duration") or 0) or max(
        (float(s.get("duration") or 0) for s in info.get("streams", [])), default=0.0
    )
    if duration <= 0:
        raise InvalidMediaError(f"{path.name} has no playable duration")
    return ProbeResult(
        format_name=fmt.get("format_name", "unknown"),
        duration=duration,
        size_bytes=size,
        streams=streams,
        has_video=any(s.codec_type == "video" and s.codec_name not in COVER_ART_CODECS for s in streams),
        audio_codec=audio[0].codec_name,
    )


def run(ctx) -> ProbeResult:
    with ctx.source_path() as path:
        return probe_file(path, max_bytes=ctx.settings.max_media_bytes)
