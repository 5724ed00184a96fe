"""The pipeline's stages, in order. Each is ``run(ctx) -> record`` (+ optional ``verify``).

A stage is done when its artifact exists, parses as its record type and
``verify`` agrees; the runner then skips it (resume after a crash or a rerun).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from mediaflow.models import (
    AudioRecord,
    ChunkSet,
    EmbeddingSet,
    IndexRecord,
    ProbeResult,
    SummaryRecord,
    Transcript,
)
from mediaflow.stages import chunk, embed, extract_audio, index, probe, summarize, transcribe


@dataclass(frozen=True)
class Stage:
    name: str
    artifact: str
    record: type[BaseModel]
    run: Callable
    verify: Callable | None = None
    # Rough share of wall time on CPU, for the overall progress figure.
    weight: float = 1.0


STAGES: tuple[Stage, ...] = (
    Stage("probe", "probe.json", ProbeResult, probe.run, weight=0.2),
    Stage("extract_audio", "audio.json", AudioRecord, extract_audio.run, extract_audio.verify, 1),
    Stage("transcribe", "transcript.json", Transcript, transcribe.run, transcribe.verify, 20),
    Stage("chunk", "chunks.json", ChunkSet, chunk.run, weight=0.1),
    Stage("embed", "embeddings.json", EmbeddingSet, embed.run, embed.verify, 2),
    Stage("index", "index.json", IndexRecord, index.run, index.verify, 0.5),
    Stage("summarize", "summary.json", SummaryRecord, summarize.run, summarize.verify, 8),
)
STAGE_BY_NAME = {s.name: s for s in STAGES}
