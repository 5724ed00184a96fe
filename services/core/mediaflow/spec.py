"""The MediaJob spec: the single source of truth.

The CRD's ``openAPIV3Schema`` is generated from these models, the gateway's
request model and the CLI's options reuse them, and the operator validates
bodies with them. Field names are camelCase on the wire (Kubernetes style) and
snake_case in Python.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from mediaflow.languages import CODES, check_language

# A source is an object-store URI, an http(s) URL, or an absolute path on the
# shared media volume. Anything else (file://, ftp://, relative paths, "..") is
# rejected before any I/O happens.
# (RE2/Rust regex: no look-around, so ".." segments are refused by a validator and,
# in the CRD, by a CEL rule.)
SOURCE_URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S+|https?://[^\s/@]+(/\S*)?|/\S+)$"
PARENT_SEGMENT_RE = r"(^|/)\.\.(/|$)"
STAGE_NAMES = ("probe", "extract_audio", "transcribe", "chunk", "embed", "index", "summarize")


def _known_language(code):
    return check_language(code) if isinstance(code, str) else code


# The language of the speech, everywhere a job is described (MediaJob, gateway, CLI): one of
# Whisper's codes (the CRD's enum, pydantic's check), or unset for "detect it".
LanguageCode = Annotated[str | None, BeforeValidator(_known_language), Field(
    description="Whisper language code of the speech (ISO 639-1, e.g. en, fr, zh); unset: detected.",
    json_schema_extra={"enum": list(CODES)},
)]


def _cel_string(text: str) -> str:
    r"""``text`` as a single-quoted CEL string literal.

    CEL strings have escapes of their own: the regex ``(^|/)\.\.`` is written
    ``'(^|/)\\.\\.'`` in a rule; cel-go (the API server) refuses a CRD with ``'\.'``.
    """
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Source(_Model):
    uri: str = Field(
        pattern=SOURCE_URI_PATTERN,
        max_length=2048,
        description="s3://bucket/key, http(s):// URL, or an absolute path on the media volume.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": f"!self.matches({_cel_string(PARENT_SEGMENT_RE)})",
                 "message": "source.uri must not contain '..' path segments"}
            ]
        },
    )

    @field_validator("uri")
    @classmethod
    def _no_parent_segments(cls, uri: str) -> str:
        if re.search(PARENT_SEGMENT_RE, uri):
            raise ValueError("source.uri must not contain '..' path segments")
        return uri
    title: str | None = Field(default=None, max_length=256, description="Display title.")


class TranscriptionOptions(_Model):
    model: str | None = Field(
        default=None, max_length=256, description="Whisper model (dir or served name)."
    )
    align: bool = Field(default=False, description="wav2vec2 word alignment (needs its model).")
    diarize: bool = Field(default=False, description="Speaker diarization (needs its model).")


class ChunkingOptions(_Model):
    # The same rule twice: pydantic for the CLI/gateway/operator, CEL for the API server.
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.overlapSeconds) || !has(self.seconds) || self.overlapSeconds < self.seconds",
         "message": "overlapSeconds must be smaller than seconds"}
    ]})

    seconds: float = Field(default=15.0, gt=0, le=600, description="Window length in seconds.")
    overlap_seconds: float = Field(
        default=3.0, ge=0, le=300, description="Overlap between consecutive windows."
    )
    pause_seconds: float = Field(
        default=1.5, gt=0, le=60,
        description="A silence at least this long always ends a chunk (no chunk spans a pause).",
    )

    @model_validator(mode="after")
    def _overlap_below_window(self) -> ChunkingOptions:
        if self.overlap_seconds >= self.seconds:
            raise ValueError("overlapSeconds must be smaller than seconds")
        return self


class EmbeddingOptions(_Model):
    model: str | None = Field(default=None, max_length=256, description="Embedding model.")


class IndexOptions(_Model):
    collection: str = Field(
        default="mediaflow",
        pattern=r"^[a-zA-Z0-9_-]{1,63}$",
        description="Qdrant collection.",
    )


class SummaryOptions(_Model):
    enabled: bool = Field(default=True, description="Write summary.md with the LLM.")
    prompt: str | None = Field(
        default=None, max_length=4000, description="Instruction replacing the default prompt."
    )


class StageOptions(_Model):
    transcription: TranscriptionOptions = TranscriptionOptions()
    chunking: ChunkingOptions = ChunkingOptions()
    embedding: EmbeddingOptions = EmbeddingOptions()
    index: IndexOptions = IndexOptions()
    summary: SummaryOptions = SummaryOptions()


class MediaJobSpec(_Model):
    source: Source
    language: LanguageCode = None
    stages: StageOptions = StageOptions()
    priority: int = Field(default=0, ge=-100, le=100, description="Higher runs first.")
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the MediaJob this long after it finished."
    )
