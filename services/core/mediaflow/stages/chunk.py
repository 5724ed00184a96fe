"""chunk: time-aligned, overlapping windows of transcript sentences for retrieval.

Units are the transcript's segments (sentence-sized cues), so a chunk starts and ends on
sentence boundaries; a segment longer than the window is split at word times. A chunk
grows to ``window_seconds`` of speech, but a pause of at least ``pause_seconds`` between
two units, or a change of speaker, always ends it: no chunk spans a pause or two voices,
and the next chunk's overlap never reaches back across one. Each chunk records its units
(``Chunk.sentences``): a search hit seeks to the one closest to the query.
"""

from __future__ import annotations

from dataclasses import dataclass

from mediaflow.languages import join_words, joiner
from mediaflow.models import Chunk, Sentence, Transcript


@dataclass(frozen=True)
class _Unit:
    start: float
    end: float
    text: str
    speaker: str | None = None


def _units(transcript: Transcript, window_seconds: float) -> list[_Unit]:
    """Segments (sentence-sized cues) are the units, so chunks start and end on
    sentence boundaries; a segment longer than the window is split at word times."""
    units: list[_Unit] = []
    for seg in transcript.segments:
        text = seg.text.strip()
        if not text:
            continue
        if seg.end - seg.start <= window_seconds or not seg.words:
            units.append(_Unit(seg.start, seg.end, text, seg.speaker))
            continue
        piece: list = []
        for w in seg.words:
            piece.append(w)
            if piece[-1].end - piece[0].start >= window_seconds:
                units.append(_piece(piece, transcript.language, seg.speaker))
                piece = []
        if piece:
            units.append(_piece(piece, transcript.language, seg.speaker))
    return units


def _piece(words: list, language: str | None, speaker: str | None) -> _Unit:
    return _Unit(words[0].start, words[-1].end, join_words([w.word for w in words], language), speaker)


def _breaks(units: list[_Unit], pause_seconds: float) -> list[bool]:
    """``breaks[k]``: a chunk must end between unit k and unit k + 1 (a pause, or another
    speaker than the last one named before it)."""
    breaks = []
    speaker = None
    for k, unit in enumerate(units[:-1]):
        speaker = unit.speaker or speaker
        nxt = units[k + 1]
        breaks.append(
            nxt.start - unit.end >= pause_seconds
            or (speaker is not None and nxt.speaker is not None and nxt.speaker != speaker)
        )
    return breaks


def chunk_transcript(
    transcript: Transcript,
    *,
    window_seconds: float,
    overlap_seconds: float,
    pause_seconds: float | None = None,
) -> list[Chunk]:
    """Greedy windows: each spans ≥ window_seconds of speech unless a pause (≥
    ``pause_seconds``; None: pauses never end a chunk), a speaker change or the end of the
    transcript ends it first. After a window that ended on its length, the next starts at the
    first unit inside its last overlap_seconds; after a break, at the unit after the break."""
    if overlap_seconds >= window_seconds:
        raise ValueError("chunk overlap must be shorter than the chunk window")
    units = _units(transcript, window_seconds)
    breaks = _breaks(units, pause_seconds if pause_seconds is not None else float("inf"))
    glue = joiner(transcript.language)
    chunks: list[Chunk] = []
    i = 0
    while i < len(units):
        j = i
        while j + 1 < len(units) and not breaks[j] and units[j].end - units[i].start < window_seconds:
            j += 1
        window = units[i : j + 1]
        chunks.append(
            Chunk(
                index=len(chunks),
                start=round(window[0].start, 3),
                end=round(window[-1].end, 3),
                text=glue.join(u.text for u in window),
                sentences=[Sentence(start=round(u.start, 3), end=round(u.end, 3), text=u.text) for u in window],
            )
        )
        if j + 1 >= len(units):
            break
        if breaks[j]:  # a pause or another voice: nothing before it is repeated
            i = j + 1
            continue
        resume_at = units[j].end - overlap_seconds
        nxt = next((k for k in range(i + 1, j + 1) if units[k].start >= resume_at), j + 1)
        i = max(nxt, i + 1)
    return chunks


def run(ctx):
    from mediaflow.models import ChunkSet

    transcript = ctx.store.read_model(ctx.media_id, "transcript.json", Transcript)
    options = ctx.spec.stages.chunking
    chunks = chunk_transcript(
        transcript,
        window_seconds=options.seconds,
        overlap_seconds=options.overlap_seconds,
        pause_seconds=options.pause_seconds,
    )
    return ChunkSet(
        media_id=ctx.media_id,
        window_seconds=options.seconds,
        overlap_seconds=options.overlap_seconds,
        pause_seconds=options.pause_seconds,
        chunks=chunks,
    )
