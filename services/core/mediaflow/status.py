"""The MediaJob status: one model, written by the operator and read by the gateway.

Beside :mod:`mediaflow.spec` (what is asked) this is what is reported. The CRD's
status schema is generated from :class:`MediaJobStatus`, the operator builds and
patches it, and the gateway's cluster backend reads the same model back, so the
two cannot disagree on a field's name, type or range.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mediaflow.models import SummaryMethod
from mediaflow.spec import STAGE_NAMES

Phase = Literal["Pending", "Running", "Succeeded", "Failed"]
PHASES: tuple[str, ...] = ("Pending", "Running", "Succeeded", "Failed")
TERMINAL_PHASES: tuple[str, ...] = ("Succeeded", "Failed")


def condition_type(stage: str) -> str:
    """Stage name -> condition type, e.g. ``extract_audio`` -> ``ExtractAudio``."""
    return "".join(part.capitalize() for part in stage.split("_"))


# Conditions: one per stage (camel-cased stage name, e.g. "ExtractAudio") plus "Ready".
CONDITION_TYPES: tuple[str, ...] = tuple(condition_type(name) for name in STAGE_NAMES) + ("Ready",)


def mediajob_media_id(namespace: str, name: str) -> str:
    """The media id of the MediaJob ``namespace/name``: where its artifacts and points live.

    Derived from the object's identity, never from a field a user sets, so a MediaJob
    cannot name (and, through its finalizer, delete) another namespace's media. The
    gateway computes it the same way for the MediaJobs it creates.
    """
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:12]
    return f"mj-{digest}"


class _Status(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(_Status):
    """A Kubernetes API convention condition (metav1.Condition)."""

    type: str = Field(max_length=316, pattern=r"^[A-Za-z][A-Za-z0-9]*$")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(default="", max_length=32768)
    last_transition_time: datetime
    observed_generation: int | None = Field(default=None, ge=0)


class StageTiming(_Status):
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Outputs(_Status):
    """Pointers and small figures only: large results live in the artifact store."""

    media_id: str | None = None
    artifacts: dict[str, str] = Field(default_factory=dict, description="Artifact name -> URI.")
    duration_seconds: float | None = Field(default=None, ge=0)
    language: str | None = Field(default=None, description="The transcript's language: given, or detected.")
    language_probability: float | None = Field(
        default=None, ge=0, le=1, description="Probability of the detected language; unset when it was given.")
    segments: int | None = Field(default=None, ge=0)
    chunks: int | None = Field(default=None, ge=0)
    points: int | None = Field(default=None, ge=0)
    summary_excerpt: str | None = Field(default=None, max_length=500)
    summary_method: SummaryMethod | None = Field(
        default=None, description="How the summary was made: the LLM's sentences the transcript "
        "supports (condensed), the key sentences as said (extractive), both (mixed), or none (empty).")
    summary_dropped: int | None = Field(
        default=None, ge=0, description="Sentences the LLM wrote that the transcript did not support.")


class MediaJobStatus(_Status):
    phase: Phase = "Pending"
    reason: str | None = Field(default=None, description="Why the job is in this phase.")
    message: str | None = None
    progress: int = Field(default=0, ge=0, le=100, description="Percent of the stage work done.")
    observed_generation: int | None = Field(default=None, ge=0)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration: str | None = Field(default=None, description="Wall time, e.g. 1m23s.")
    conditions: list[Condition] = Field(
        default_factory=list,
        # A map keyed by type: server-side apply and strategic merges treat each condition as one entry.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    stages: dict[str, StageTiming] = Field(default_factory=dict, description="Per-stage start/end.")
    outputs: Outputs = Field(default_factory=Outputs)
    observed_rerun: str | None = Field(
        default=None,
        description="The mediaflow.dev/rerun annotation's value when the job started or was last "
        "rerun. Setting the annotation to another value reruns a Failed job: the stages not done.",
    )

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def stage_done(self, stage: str) -> bool:
        found = self.condition(condition_type(stage))
        return found is not None and found.status == "True"

    @property
    def current_stage(self) -> str | None:
        """The stage running now: the first whose condition is Unknown (started, not finished)."""
        if self.phase != "Running":
            return None
        for stage in STAGE_NAMES:
            found = self.condition(condition_type(stage))
            if found is not None and found.status == "Unknown":
                return stage
        return None

    @property
    def progress_fraction(self) -> float:
        return 1.0 if self.phase == "Succeeded" else self.progress / 100
