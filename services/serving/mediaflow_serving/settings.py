"""Serving-only settings (env prefix ``MEDIAFLOW_SERVE_``); engine settings stay in
``mediaflow.config.Settings`` (``MEDIAFLOW_*``) so a served model is configured exactly
like an in-process one."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDIAFLOW_SERVE_", env_file=None, extra="ignore")

    max_upload_bytes: int = Field(
        default=512 * 1024**2, gt=0, description="Largest accepted upload or artifact; larger → 413."
    )
    allowed_root: str | None = Field(
        default=None,
        description="fsspec URI under which /v1/audio/transcriptions/uri may read; "
        "default: the artifact store (MEDIAFLOW_ARTIFACT_ROOT / <data_dir>/artifacts).",
    )
    decode_budget_bytes: int = Field(
        default=1024**3, gt=0, description="Memory the decoded audio of all requests may take at once "
        "(6 bytes per 16 kHz sample while decoding: ~2.9 h of audio per GiB). A request waits for its "
        "share; one that alone needs more is a 413.")
    idempotency_max_results: int = Field(
        default=64, ge=0, description="Finished transcriptions kept for a retry with the same "
        "Idempotency-Key (least recently used first out; 0: none, running work is still joined).")
    idempotency_ttl_s: float = Field(
        default=3600.0, gt=0, description="How long a finished transcription is replayed to a retry.")
    max_embedding_inputs: int = Field(
        default=2048, gt=0, description="Most strings in one embeddings request."
    )
    embedding_max_batch_size: int = Field(
        default=64, gt=0, description="Most requests merged into one encode call."
    )
    embedding_max_batch_inputs: int = Field(
        default=512, gt=0, description="Most texts merged into one encode call (a larger request "
        "still goes, alone): smaller calls answer some clients while the others' requests wait "
        "their turn, so the model is never idle between calls."
    )
    embedding_batch_wait_s: float = Field(
        default=0.0, ge=0, description="How long an idle model waits for more requests before it "
        "starts (those that arrive while it is busy always go together into its next call)."
    )
