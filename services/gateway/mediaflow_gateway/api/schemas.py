"""Request and response bodies of the ``/v1`` API (snake_case JSON).

Request options reuse the core ``MediaJobSpec`` pieces, so the API accepts
exactly what a MediaJob accepts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from mediaflow.models import SentenceSupport
from mediaflow.spec import SOURCE_URI_PATTERN, LanguageCode, StageOptions
from mediaflow.stores.artifacts import MEDIA_ID_PATTERN

MediaId = Annotated[str, Field(pattern=MEDIA_ID_PATTERN.pattern, description="Media id.")]
Phase = Literal["Pending", "Running", "Succeeded", "Failed"]
TERMINAL_PHASES = ("Succeeded", "Failed")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. not_found.")
    message: str
    details: list[dict] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class CreateMediaFromUrl(_Body):
    url: str = Field(pattern=SOURCE_URI_PATTERN, max_length=2048, examples=["https://example.org/talk.mp4"])
    title: str | None = Field(default=None, max_length=256)
    language: LanguageCode = None
    stages: StageOptions = StageOptions()


class MediaCreated(BaseModel):
    media_id: str = Field(description="An upload's derives from its bytes (sha256).")
    job_id: str
    job_url: str
    events_url: str
    existing: bool = Field(default=False, description="The same bytes were uploaded before: this is "
                                                      "their job (answered 200, not 202), not a new one.")


class Condition(BaseModel):
    """Kubernetes-style: one per stage, ``status`` True | False | Unknown (running)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None


class JobView(BaseModel):
    id: str
    media_id: str
    title: str | None = None
    phase: Phase
    progress: float = Field(ge=0, le=1)
    stage: str | None = Field(default=None, description="The stage running now.")
    conditions: list[Condition] = []
    outputs: dict[str, str] = {}
    message: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class JobList(BaseModel):
    items: list[JobView]


class MediaView(BaseModel):
    media_id: str
    title: str
    duration: float | None = None
    has_video: bool = False
    stages_done: list[str] = []
    language: str | None = Field(default=None, description="The transcript's language (given or detected); "
                                                           "set on GET /v1/media/{id}, not in listings.")
    language_probability: float | None = Field(
        default=None, description="Whisper's probability of the detected language; null when it was given.")
    language_name: str | None = Field(default=None, description="The language's English name, e.g. French.")
    stream_url: str = Field(description="Signed, time-limited URL for <video>/<audio> (range requests).")
    page_url: str


class MediaList(BaseModel):
    items: list[MediaView]


class SummaryView(BaseModel):
    media_id: str
    model: str
    text: str
    markdown: str


class SearchRequest(_Body):
    query: str = Field(min_length=1, max_length=1000)
    media_id: MediaId | None = Field(default=None, description="Only this media.")
    top_k: int = Field(default=5, ge=1, le=50)


class HitView(BaseModel):
    media_id: str
    title: str | None = None
    chunk: int
    start: float
    end: float
    text: str
    score: float
    seek: float = Field(description="Where the phrase is said: start of the chunk's sentence closest to "
                                    "the query (start..end is the whole matching chunk); the CLI's seek too.")
    link: str = Field(description="Deep link: the media page at ``seek`` (#t=SECONDS).")


class SearchResponse(BaseModel):
    query: str
    hits: list[HitView]


class AskRequest(_Body):
    question: str = Field(min_length=1, max_length=1000)
    media_id: MediaId | None = Field(default=None, description="Only this media.")
    top_k: int = Field(default=4, ge=1, le=10)


class CitationView(BaseModel):
    media_id: str
    start: float = Field(description="The cited excerpt's start (s); start..end is the whole excerpt.")
    end: float
    text: str = Field(description="The excerpt's text.")
    seek: float = Field(description="Where the supporting sentence is said: its start (s).")
    quote: str | None = Field(default=None, description="The excerpt's sentence that supports the answer.")
    excerpt: int | None = Field(default=None, description="The excerpt's number in the prompt.")
    score: float | None = Field(default=None, description="Best similarity of an answer sentence to it.")
    link: str = Field(description="Deep link: the media page at ``seek`` (#t=SECONDS).")


class AskResponse(BaseModel):
    question: str
    answer: str = Field(description="The sentences the excerpts support (no [n] markers: "
                        "``sentences[].citations`` numbers each one's citations), or, when "
                        "``grounded`` is false, a fixed message that the recordings do not answer it.")
    citations: list[CitationView]
    grounded: bool = Field(default=False, description="At least one answer sentence is supported.")
    min_similarity: float | None = None
    min_coverage: float | None = None
    dropped: int = Field(default=0, description="Sentences the model wrote that no excerpt supports.")
    sentences: list[SentenceSupport] = Field(
        default_factory=list, description="Every sentence the model wrote, with its support figures.")


def deep_link(media_id: str, seconds: float) -> str:
    return f"/media/{media_id}#t={seconds:.2f}"
