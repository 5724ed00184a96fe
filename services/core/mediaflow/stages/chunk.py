"""chunk: time-aligned, overlapping windows of transcript sentences for retrieval."""

from __future__ import annotations

from dataclasses import dataclass

from mediaflow.models import Chunk, Transcript


@dataclass(frozen=True)
class _Unit:
    start: float
    end: float
    text: str


def _units(transcript: Transcript, window_seconds: float) -> list[_Unit]:
    """Segments (sentence-sized cues) are the units, so chunks start and end on
    sentence boundaries; a segment longer than the window is split at word times."""
    units: list[_Unit] = []
    for seg in transcript.segments:
        text = seg.text.strip()
        if not text:
            continue
        if seg.end - seg.start <= window_seconds or not seg.words:
            units.append(_Unit(seg.start, seg.end, text))
            continue
        piece: list = []
        for w in seg.words:
            piece.append(w)
            if piece[-1].end - piece[0].start >= window_seconds:
                units.append(_Unit(piece[0].start, piece[-1].end, " ".join(x.word for x in piece)))
                piece = []
        if piece:
            units.append(_Unit(piece[0].start, piece[-1].end, " ".join(x.word for x in piece)))
    return units


def chunk_transcript(
    transcript: Transcript, *, window_seconds: float, overlap_seconds: float
) -> list[Chunk]:
    """Greedy windows: each spans ≥ window_seconds of speech (except the last); the
    next starts at the first unit inside the previous window's last overlap_seconds."""
    if overlap_seconds >= window_seconds:
        raise ValueError("chunk overlap must be shorter than the chunk window")
    units = _units(transcript, window_seconds)
    chunks: list[Chunk] = []
    i = 0
    while i < len(units):
        j = i
        while j + 1 < len(units) and units[j].end - units[i].start < window_seconds:
            j += 1
        window = units[i : j + 1]
        chunks.append(
            Chunk(
                index=len(chunks),
                start=round(window[0].start, 3),
                end=round(window[-1].end, 3),
                text=" ".join(u.text for u in window),
            )
        )
        if j + 1 >= len(units):
            break
        resume_at = units[j].end - overlap_seconds
        nxt = next((k for k in range(i + 1, j + 1) if units[k].start >= resume_at), j + 1)
        i = max(nxt, i + 1)
    return chunks


def run(ctx):
    from mediaflow.models import ChunkSet

    transcript = ctx.store.read_model(ctx.media_id, "transcript.json", Transcript)
    options = ctx.spec.stages.chunking
    chunks = chunk_transcript(
        transcript, window_seconds=options.seconds, overlap_seconds=options.overlap_seconds
    )
    return ChunkSet(
        media_id=ctx.media_id,
        window_seconds=options.seconds,
        overlap_seconds=options.overlap_seconds,
        chunks=chunks,
    )
