"""What ffmpeg may read: real media containers from local files, nothing else.

ffmpeg's demuxers can do far more than decode a file: HLS, DASH and concat playlists
open other files and URLs, image2 expands patterns, and raw-PCM demuxers chosen by the
extension (``.sln``, ``.sw``, ``.ul`` …) accept any bytes at all. An upload that is a
playlist behind an ID3 tag would make ffmpeg read files outside the upload. So every
ffprobe/ffmpeg run on user media (CLI, gateway, worker Job, serving app) gets:

- ``-format_whitelist``: only the demuxers of real audio/video containers below;
- ``-protocol_whitelist file``: the input is one local file; no network, no pipes;
- after probing, ``-f <the probed demuxer>``: decoding never guesses again.

(ffmpeg's own advice for untrusted input: restrict formats and protocols.)
"""

from __future__ import annotations

from mediaflow.errors import InvalidMediaError

# ffmpeg demuxer names (the first name of ffprobe's format_name): containers that carry
# audio as data, none that refers to other files or reads raw samples of any bytes.
ALLOWED_DEMUXERS: tuple[str, ...] = (
    "mov",        # mp4, m4a, mov, 3gp
    "matroska",   # mkv, webm
    "avi", "flv", "asf",  # asf: wmv, wma
    "mpegts", "mpeg",     # mpeg: program streams (.mpg, .vob)
    "ogg", "mp3", "aac", "flac", "wav", "w64", "aiff", "caf", "amr", "ac3", "eac3",
)
FORMAT_WHITELIST = ",".join(ALLOWED_DEMUXERS)
PROTOCOL_WHITELIST = "file"


def input_options(demuxer: str | None = None) -> dict[str, str]:
    """ffmpeg-python input kwargs (``-key value`` before ``-i``) for a user's media file."""
    options = {"format_whitelist": FORMAT_WHITELIST, "protocol_whitelist": PROTOCOL_WHITELIST}
    if demuxer is not None:
        options["f"] = demuxer
    return options


def input_args(demuxer: str | None = None) -> list[str]:
    """The same options as a plain argument list, for a raw ``ffmpeg`` command line."""
    return [arg for key, value in input_options(demuxer).items() for arg in (f"-{key}", value)]


def demuxer_of(format_name: str) -> str:
    """The demuxer ffprobe chose (``mov,mp4,m4a,…`` -> ``mov``), refused unless allowed."""
    demuxer = format_name.split(",", 1)[0]
    if demuxer not in ALLOWED_DEMUXERS:
        raise InvalidMediaError(f"unsupported container format {demuxer!r}: not an audio or video file")
    return demuxer
