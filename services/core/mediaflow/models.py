"""Typed records that flow between stages; each is one artifact in the store."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from mediaflow.languages import joiner


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

    language: str = Field(description="Whisper language code of the speech: given, or detected.")
    language_probability: float | None = Field(
        default=None, description="Whisper's probability of the detected language; None when it was given.")
    duration: float
    segments: list[Segment]
    word_timing: str = Field(
        default="none", description="wav2vec2 | attention | none: where word times came from."
    )

    @property
    def text(self) -> str:
        # zh/ja/th...: sentences follow each other with no space
        return joiner(self.language).join(s.text.strip() for s in self.segments if s.text.strip())


class Sentence(BaseModel):
    """One unit of a chunk: a transcript segment (a sentence), or a word-time piece of an
    over-long one. Where a search hit seeks to."""

    start: float
    end: float
    text: str


class Chunk(BaseModel):
    index: int
    start: float
    end: float
    text: str
    # Empty in chunks.json written before chunks recorded them (search then falls back to
    # the transcript's segments inside [start, end]).
    sentences: list[Sentence] = Field(
        default_factory=list, description="The sentences the chunk is made of, in order."
    )


class ChunkSet(BaseModel):
    """``chunks.json``."""

    media_id: str
    window_seconds: float
    overlap_seconds: float
    pause_seconds: float | None = Field(
        default=None, description="A pause this long ended a chunk (None: chunked before pauses did)."
    )
    chunks: list[Chunk]


class EmbeddingSet(BaseModel):
    """``embeddings.json``: one vector per chunk, in chunk order."""

    model: str = Field(description="The embedder that made the vectors (the media's language picks it).")
    dim: int
    vectors: list[list[float]]
    language: str | None = Field(default=None, description="The transcript's language the embedder was picked for.")
    collection: str | None = Field(
        default=None, description="The collection the vectors belong in (``mediaflow.engines.collection_for``); "
        "None: embedded before media had per-embedder collections, i.e. the base collection.")


class IndexRecord(BaseModel):
    """``index.json``: what was written to the vector index."""

    collection: str = Field(description="Where the points are: the base collection or an embedder's own.")
    points: int
    point_ids: list[str]
    model: str | None = Field(default=None, description="The embedder of the points' vectors.")


class SentenceSupport(BaseModel):
    """How one sentence an LLM wrote is supported by what was said (``mediaflow.grounding``)."""

    text: str = Field(description="The sentence (an answer's: without the model's [n] markers).")
    score: float = Field(description="Its best cosine similarity to a source sentence.")
    coverage: float = Field(
        default=1.0, description="Share of its content words (stemmed) that its most similar "
        "source sentences contain.")
    kept: bool = Field(description="score and coverage reach their thresholds: the sentence stays.")
    source: str | None = Field(default=None, description="The most similar source sentence.")
    media_id: str | None = None
    start: float | None = Field(default=None, description="Start of the source sentence (s).")
    end: float | None = None
    excerpt: int | None = Field(
        default=None, description="Answers: the number of the excerpt the source sentence is in.")
    cited: list[int] = Field(
        default_factory=list, description="Answers: the excerpt numbers the model wrote after it.")
    citations: list[int] = Field(
        default_factory=list, description="Answers: the Answer.citations (1-based) that support it.")


SummaryMethod = Literal["condensed", "extractive", "mixed", "empty", "unchecked"]


class SummaryRecord(BaseModel):
    """``summary.json`` (the Markdown lives in ``summary.md``)."""

    model: str
    text: str = Field(description="The summary: its sentences (``sentences``) as one text.")
    map_calls: int = Field(description="LLM calls made (one per run of key sentences).")
    method: SummaryMethod = Field(
        default="unchecked",
        description="condensed: the LLM's sentences that the transcript supports; extractive: it "
        "supported none of them, so the key sentences as said are the summary; mixed: so for some "
        "runs of key sentences; empty: no speech; unchecked: written before summaries were "
        "checked (the stage runs again).")
    sentences: list[Sentence] = Field(
        default_factory=list, description="The summary's sentences, each with the start and end of "
        "the transcript sentence it rests on.")
    min_similarity: float | None = Field(default=None, description="The similarity threshold applied.")
    min_coverage: float | None = Field(default=None, description="The coverage threshold applied.")
    transcript_sentences: int = Field(default=0, description="Transcript sentences checked against.")
    key_sentences: list[Sentence] = Field(
        default_factory=list, description="The transcript sentences the LLM condensed, in time order.")
    support: list[SentenceSupport] = Field(
        default_factory=list, description="Every sentence the LLM wrote, kept or dropped.")
    dropped: int = Field(default=0, description="LLM sentences dropped as unsupported.")


class SearchHit(BaseModel):
    media_id: str
    title: str | None = None
    chunk: int
    start: float
    end: float
    text: str
    score: float = Field(
        description="Cosine similarity of the query and the chunk under ``model``. A search of one "
        "collection (one media, or a library in one language family): the embedder the media was "
        "indexed with. A search over several collections (English and other media): every hit "
        "scored by the multilingual embedder, which reads all their languages, so that hits of "
        "different embedders are ranked on one scale (``Pipeline.search``).")
    model: str | None = Field(default=None, description="The embedder whose cosine ``score`` is.")
    seek: float | None = Field(
        default=None,
        description="Where to play from: the start of the chunk's sentence most similar to the "
        "query (start..end is the whole chunk). Pipeline.search sets it; the chunk's start until then.",
    )
    # The chunk's sentences, as the index stored them (what ``seek`` is chosen from);
    # not part of a hit's JSON.
    sentences: list[Sentence] = Field(default_factory=list, exclude=True, repr=False)
    # The embedder its media was indexed with (``score`` may be another's after a merge): what
    # an answer's support check picks its embedder by. Not part of a hit's JSON.
    indexed_with: str | None = Field(default=None, exclude=True, repr=False)

    @model_validator(mode="after")
    def _seek_defaults_to_start(self) -> SearchHit:
        if self.seek is None:
            self.seek = self.start
        return self


class Citation(BaseModel):
    """An excerpt (a chunk given to the LLM) that supports a sentence of the answer."""

    media_id: str
    start: float = Field(description="The excerpt's start (s).")
    end: float
    text: str = Field(description="The excerpt's text.")
    seek: float | None = Field(
        default=None, description="Where to play from: the start of the excerpt's sentence that "
        "supports the answer (the excerpt's start when unknown).")
    quote: str | None = Field(default=None, description="The excerpt's sentence that supports the answer.")
    excerpt: int | None = Field(default=None, description="Its number in the prompt ([1], [2], ...).")
    score: float | None = Field(default=None, description="Best support score of an answer sentence by it.")

    @model_validator(mode="after")
    def _seek_defaults_to_start(self) -> Citation:
        if self.seek is None:
            self.seek = self.start
        return self


class Answer(BaseModel):
    question: str
    answer: str = Field(description="The supported sentences (the model's [n] markers removed), or "
                        "a fixed message when nothing supported is left.")
    citations: list[Citation]
    grounded: bool = Field(default=False, description="The answer comes from the recordings: at "
                           "least one sentence was supported by an excerpt.")
    min_similarity: float | None = Field(default=None, description="The similarity threshold applied.")
    min_coverage: float | None = Field(default=None, description="The coverage threshold applied.")
    excerpts: int = Field(default=0, description="Excerpts given to the LLM.")
    support: list[SentenceSupport] = Field(
        default_factory=list, description="Every sentence the LLM wrote, kept or dropped.")
    dropped: int = Field(default=0, description="Sentences dropped as unsupported.")
