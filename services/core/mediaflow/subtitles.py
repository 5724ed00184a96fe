"""Transcript renderings (SRT, WebVTT, plain text) and their parsers."""

from __future__ import annotations

import re

from mediaflow.models import Segment, Transcript


def _clock(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def mmss(seconds: float) -> str:
    """[mm:ss] style clock for citations and search hits (h:mm:ss past an hour)."""
    total = int(max(0.0, seconds))
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _cues(transcript: Transcript) -> list[Segment]:
    return [s for s in transcript.segments if s.text.strip()]


def to_srt(transcript: Transcript) -> str:
    blocks = [
        f"{n}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
        for n, s in enumerate(_cues(transcript), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    blocks = [
        f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n"
        for s in _cues(transcript)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_txt(transcript: Transcript) -> str:
    return "\n".join(s.text.strip() for s in _cues(transcript)) + "\n"


_TIMING = re.compile(
    r"(?P<a>\d{2,}:\d{2}:\d{2}[.,]\d{3})\s+-->\s+(?P<b>\d{2,}:\d{2}:\d{2}[.,]\d{3})"
)


def _seconds(clock: str) -> float:
    h, m, s = clock.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def parse_cues(text: str) -> list[Segment]:
    """Parse SRT or WebVTT into segments (start, end, text)."""
    segments: list[Segment] = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip()):
        lines = block.strip().split("\n")
        for k, line in enumerate(lines):
            match = _TIMING.search(line)
            if match:
                segments.append(
                    Segment(
                        start=_seconds(match["a"]),
                        end=_seconds(match["b"]),
                        text="\n".join(lines[k + 1 :]).strip(),
                    )
                )
                break
    return segments


RENDERERS = {"srt": to_srt, "vtt": to_vtt, "txt": to_txt}
