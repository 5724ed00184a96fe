"""Media type from content (magic bytes), never from the file name or the client's word."""

from __future__ import annotations

from typing import NamedTuple

SNIFF_BYTES = 512  # enough for every signature below (MPEG-TS needs two 188-byte packets)


class MediaType(NamedTuple):
    extension: str
    mime: str


def sniff(head: bytes) -> MediaType | None:
    """The container of a file from its first bytes, or None when it is not audio/video."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"qt  ",):
            return MediaType(".mov", "video/quicktime")
        if brand.startswith(b"M4A") or brand.startswith(b"M4B"):
            return MediaType(".m4a", "audio/mp4")
        return MediaType(".mp4", "video/mp4")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return MediaType(".webm", "video/webm") if b"webm" in head[:64] else MediaType(".mkv", "video/x-matroska")
    if head.startswith(b"OggS"):
        return MediaType(".ogg", "audio/ogg")
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return MediaType(".wav", "audio/wav")
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return MediaType(".avi", "video/x-msvideo")
    if head.startswith(b"fLaC"):
        return MediaType(".flac", "audio/flac")
    if head.startswith(b"ID3"):
        return MediaType(".mp3", "audio/mpeg")
    if head.startswith(b"#!AMR"):
        return MediaType(".amr", "audio/amr")
    if head.startswith((b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",)):
        return MediaType(".wmv", "video/x-ms-asf")
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:  # AAC ADTS sync word
        return MediaType(".aac", "audio/aac")
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # MPEG audio frame sync
        return MediaType(".mp3", "audio/mpeg")
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return MediaType(".ts", "video/mp2t")
    if head.startswith(b"\x00\x00\x01\xba"):
        return MediaType(".mpg", "video/mpeg")
    return None


MIME_BY_EXTENSION = {
    ".mp4": "video/mp4", ".m4a": "audio/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
    ".mkv": "video/x-matroska", ".ogg": "audio/ogg", ".wav": "audio/wav", ".avi": "video/x-msvideo",
    ".flac": "audio/flac", ".mp3": "audio/mpeg", ".aac": "audio/aac", ".ts": "video/mp2t",
    ".mpg": "video/mpeg", ".amr": "audio/amr", ".wmv": "video/x-ms-asf",
}
