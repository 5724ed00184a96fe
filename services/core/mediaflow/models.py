"""Typed records that flow between stages; each is one artifact in the store."""

from __future__ import annotations

from pydantic import BaseModel, Field


class StreamInfo(BaseModel):
    index: int
    codec_type: str
    codec_name: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    width: int | None = None
    height: int | None = None


class SourceRecord(BaseModel):
    """Where the media came from (``source.json``)."""

    media_id: str
    uri: str
    title: str
    size_bytes: int
    sha256: str
    stored_as: str | None = Field(
        default=None, description="Artifact name when the bytes were copied into the store."
    )


class ProbeResult(BaseModel):
    """``probe.json``: what ffprobe found."""

    format_name: str
    duration: float = Field(gt=0)
    size_bytes: int
    streams: list[StreamInfo]
    has_video: bool
    audio_codec: str


class AudioRecord(BaseModel):
    """``audio.json``: metadata of ``audio.wav`` (16 kHz mono PCM)."""

    path: str = "audio.wav"
    sample_rate: int = 16000
    duration: float
    size_bytes: int


class Word(BaseModel):
    word: str
    start: float
    end: float
    score: float | None = None


class Segment(BaseModel):
    start: float
    end: float
    text: str
    words: list[Word] = []
    speaker: str | None = None
    # How the decoder produced the segment (Whisper's/OpenAI's verbose_json figures); None
    # when the engine does not report them (transcripts written before they existed, too).
    # A decoded window (WhisperX: one VAD chunk) may hold several segments, which then share
    # its seek, temperature, avg_logprob, compression_ratio and no_speech_prob, as in Whisper.
    seek: int | None = Field(default=None, description="Offset, in 10 ms mel frames, of the decoded window.")
    tokens: list[int] | None = Field(default=None, description="The model's token ids of the text.")
    temperature: float | None = Field(default=None, description="Temperature the window was decoded at.")
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None


class Transcript(BaseModel):
    """``transcript.json``."""

    language: str
    duration: float
    segments: list[Segment]
    word_timing: str = Field(
        default="none", description="wav2vec2 | attention | none: where word times came from."
    )

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


class Chunk(BaseModel):
    index: int
    start: float
    end: float
    text: str


class ChunkSet(BaseModel):
    """``chunks.json``."""

    media_id: str
    window_seconds: float
    overlap_seconds: float
    chunks: list[Chunk]


class EmbeddingSet(BaseModel):
    """``embeddings.json``: one vector per chunk, in chunk order."""

    model: str
    dim: int
    vectors: list[list[float]]


class IndexRecord(BaseModel):
    """``index.json``: what was written to the vector index."""

    collection: str
    points: int
    point_ids: list[str]


class SummaryRecord(BaseModel):
    """``summary.json`` (the Markdown lives in ``summary.md``)."""

    model: str
    text: str
    map_calls: int


class SearchHit(BaseModel):
    media_id: str
    title: str | None = None
    chunk: int
    start: float
    end: float
    text: str
    score: float


class Citation(BaseModel):
    media_id: str
    start: float
    end: float
    text: str


class Answer(BaseModel):
    question: str
    answer: str
    citations: list[Citation]
