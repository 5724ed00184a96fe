"""Engine ports: what the stages need from models, nothing about where they run.

Each has an in-process implementation (the real library, loaded here) and a
remote one (httpx to the Ray Serve apps); configuration picks one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from mediaflow.models import Transcript

ProgressFn = Callable[[float], None]  # fraction done, 0..1


@runtime_checkable
class Transcriber(Protocol):
    name: str

    def transcribe(
        self,
        audio_path: Path,
        *,
        language: str | None = None,
        align: bool = False,
        diarize: bool = False,
        on_progress: ProgressFn | None = None,
    ) -> Transcript: ...


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int

    def embed(
        self, texts: Sequence[str], *, on_progress: ProgressFn | None = None
    ) -> list[list[float]]: ...


@runtime_checkable
class ChatModel(Protocol):
    name: str

    def complete(
        self, messages: list[dict[str, str]], *, max_tokens: int = 256, temperature: float = 0.0
    ) -> str: ...
