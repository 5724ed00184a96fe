"""Turning request bytes into 16 kHz mono samples, refusing what is not audio.

Every failure is an ``HTTPException`` with a reason: 400 for unreadable media,
413 for too much of it, 403/404 for artifact URIs out of bounds or missing. Reading the
artifact store never ends in a bare 500 either: a store this server has no filesystem
package for (``s3://`` without s3fs) is 501, access the store refuses 403, an unreachable
store 503 (worth a retry), any other store error 502.

A plain 16-bit PCM WAV is probed from its header, in-process, and a 16 kHz mono one is read
without ffmpeg (the same samples ffmpeg would give): ffprobe and ffmpeg are processes to start,
≈ 2 % of an 80 s transcription on 2 cores. Every other file goes through ffprobe and ffmpeg.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import fsspec
import numpy as np
from fastapi import HTTPException, UploadFile

from mediaflow.engines.whisperx_transcriber import pcm16_wav_info, read_wav_16k_mono
from mediaflow.errors import InvalidMediaError, MediaTooLargeError
from mediaflow.media_policy import demuxer_of, input_args
from mediaflow.models import ProbeResult, StreamInfo
from mediaflow.stages.probe import probe_file

SAMPLE_RATE = 16000
COPY_CHUNK = 1024**2


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"media is larger than the {limit}-byte limit")


async def save_upload(upload: UploadFile, dest: Path, *, max_bytes: int) -> str:
    """Copy the upload to ``dest``; its sha256 (hex), computed on the way."""
    size, digest = 0, hashlib.sha256()
    with dest.open("wb") as out:
        while chunk := await upload.read(COPY_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _is_local(uri: str) -> bool:
    return urlparse(uri).scheme in ("", "file")


def _local_path(uri: str) -> str:
    return os.path.realpath(urlparse(uri).path if uri.startswith("file:") else uri)


def check_under_root(uri: str, root: str) -> None:
    """Refuse URIs outside ``root`` (symlinks and ``..`` resolved for local paths)."""
    if _is_local(uri) != _is_local(root):
        raise HTTPException(403, f"{uri} is outside the allowed artifact root")
    if _is_local(uri):
        path, base = _local_path(uri), _local_path(root)
        inside = os.path.commonpath([path, base]) == base
    else:
        parsed, base = urlparse(uri), urlparse(root)
        parts = parsed.path.split("/")
        inside = (
            parsed.scheme == base.scheme
            and parsed.netloc == base.netloc
            and ".." not in parts
            and (parsed.path.rstrip("/") + "/").startswith(base.path.rstrip("/") + "/")
        )
    if not inside:
        raise HTTPException(403, f"{uri} is outside the allowed artifact root")


def _artifact_fs(uri: str, target: str):
    scheme = urlparse(uri).scheme
    try:
        # no listings cache: other processes write the store (see ArtifactStore)
        return fsspec.core.url_to_fs(target, **({} if _is_local(uri) else {"use_listings_cache": False}))
    except ImportError as exc:
        # a server misconfiguration, the same on every retry: not 500 (which clients retry)
        raise HTTPException(
            501, f"this server cannot read {scheme}:// artifacts: {exc} (the filesystem package "
            f"for {scheme}:// is missing from its image)") from None
    except ValueError as exc:  # a protocol fsspec does not know
        raise HTTPException(400, f"unsupported artifact URI {uri}: {exc}") from None


def _unreachable(exc: BaseException) -> bool:
    # botocore's EndpointConnectionError/ConnectTimeoutError/ReadTimeoutError, aiohttp's
    # connector errors, the builtin ConnectionError/TimeoutError: by name, botocore being optional
    return isinstance(exc, (ConnectionError, TimeoutError)) or any(
        "Connect" in cls.__name__ or "Timeout" in cls.__name__ for cls in type(exc).__mro__)


def store_error(uri: str, exc: BaseException) -> HTTPException:
    """The HTTP answer for an error the artifact store raised reading ``uri``."""
    if isinstance(exc, HTTPException):
        return exc
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return HTTPException(404, f"no such artifact: {uri}")
    if isinstance(exc, PermissionError):
        return HTTPException(403, f"the artifact store refused access to {uri} "
                                  f"(check this server's credentials and the bucket policy): {exc}")
    if _unreachable(exc):
        return HTTPException(503, f"the artifact store is unreachable reading {uri}: {exc}")
    return HTTPException(502, f"the artifact store failed reading {uri}: {type(exc).__name__}: {exc}")


def fetch_artifact(uri: str, dest: Path, *, root: str, max_bytes: int) -> str:
    """Copy the artifact to ``dest``; its sha256 (hex), computed on the way."""
    check_under_root(uri, root)
    target = _local_path(uri) if _is_local(uri) else uri
    fs, path = _artifact_fs(uri, target)
    try:
        info = fs.info(path)
        if info.get("type") != "file":
            raise HTTPException(404, f"no such artifact: {uri} (not a file)")
        if int(info.get("size") or 0) > max_bytes:
            raise _too_large(max_bytes)
        size, digest = 0, hashlib.sha256()
        with fs.open(path, "rb") as src, dest.open("wb") as out:
            while chunk := src.read(COPY_CHUNK):
                size += len(chunk)
                if size > max_bytes:  # it grew since it was measured
                    raise _too_large(max_bytes)
                digest.update(chunk)
                out.write(chunk)
    except Exception as exc:
        raise store_error(uri, exc) from exc
    return digest.hexdigest()


# ffmpeg's s16le output, then its float32 copy: the peak while one file is decoded
DECODED_BYTES_PER_SAMPLE = 2 + 4


def probe_audio(path: Path, *, max_bytes: int) -> ProbeResult:
    """The file's probe, or the HTTP error a client should get for it."""
    try:
        return _probe_pcm16_wav(path, max_bytes=max_bytes) or probe_file(path, max_bytes=max_bytes)
    except MediaTooLargeError:
        raise _too_large(max_bytes) from None
    except InvalidMediaError as exc:
        # the reason without this server's temporary paths
        raise HTTPException(400, str(exc).replace(f"{path.parent}/", "")) from None


def _probe_pcm16_wav(path: Path, *, max_bytes: int) -> ProbeResult | None:
    """What ffprobe says of a plain 16-bit PCM WAV, from its header; None for any other file
    (and for one holding no samples: ffprobe then gives the reason)."""
    if not path.is_file():
        return None
    size = path.stat().st_size
    if size > max_bytes:
        raise MediaTooLargeError(f"{path.name} is {size} bytes, over the {max_bytes}-byte limit")
    info = pcm16_wav_info(path)
    if info is None or info.nframes == 0:
        return None
    stream = StreamInfo(index=0, codec_type="audio", codec_name="pcm_s16le", sample_rate=info.framerate,
                        channels=info.nchannels)
    return ProbeResult(format_name="wav", duration=info.nframes / info.framerate, size_bytes=size,
                       streams=[stream], has_video=False, audio_codec="pcm_s16le")


def decoded_bytes(probe: ProbeResult) -> int:
    """Memory decoding ``probe``'s audio takes at its peak (a second of slack for rounding)."""
    return int((probe.duration + 1.0) * SAMPLE_RATE * DECODED_BYTES_PER_SAMPLE)


def decode_audio(path: Path, *, max_bytes: int, probe: ProbeResult | None = None) -> np.ndarray:
    """Probe (unless given), then decode the first audio stream to 16 kHz mono float32 with ffmpeg
    (a 16 kHz mono PCM WAV is read as it is)."""
    probe = probe or probe_audio(path, max_bytes=max_bytes)
    samples = read_wav_16k_mono(path) if probe.format_name == "wav" else None
    if samples is not None:
        return _enough(samples)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-xerror", *input_args(demuxer_of(probe.format_name)),
           "-i", str(path), "-map", "0:a:0",
           "-f", "s16le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"]
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise HTTPException(400, f"audio could not be decoded: {reason[-1] if reason else 'ffmpeg failed'}")
    return _enough(np.frombuffer(done.stdout, np.int16).astype(np.float32) / 32768.0)


def _enough(samples: np.ndarray) -> np.ndarray:
    if samples.size < SAMPLE_RATE // 10:
        raise HTTPException(400, "audio stream decodes to less than 0.1 s of samples")
    return samples
