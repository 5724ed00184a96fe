"""Engine selection: in-process or remote, from settings; built lazily, once."""

from __future__ import annotations

import threading
from functools import cached_property

from mediaflow.config import Settings
from mediaflow.engines.base import ChatModel, Embedder, Transcriber


class Engines:
    """Lazily built engines, shared by every stage of a process (models load once)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        # One engine is built at a time: transformers' lazy imports are not thread-safe, and
        # the gateway warms the embedder in one thread while a job builds the transcriber in
        # another ("cannot import name 'Pipeline' from 'transformers'").
        self._building = threading.RLock()

    @cached_property
    def transcriber(self) -> Transcriber:
        with self._building:
            return self._transcriber()

    def _transcriber(self) -> Transcriber:
        if self.settings.transcriber == "remote":
            from mediaflow.engines.remote import RemoteTranscriber

            return RemoteTranscriber.from_settings(self.settings)
        from mediaflow.engines.language_routing import load_transcriber

        return load_transcriber(self.settings)

    @cached_property
    def embedder(self) -> Embedder:
        with self._building:
            return self._embedder()

    def _embedder(self) -> Embedder:
        if self.settings.embedder == "remote":
            from mediaflow.engines.remote import RemoteEmbedder

            return RemoteEmbedder.from_settings(self.settings)
        from mediaflow.engines.st_embedder import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder.from_settings(self.settings)

    @cached_property
    def chat(self) -> ChatModel:  # not under _building: starting the LLM server takes a while
        from mediaflow.engines.openai_chat import OpenAIChatModel

        url = self.settings.llm_url
        if not url:
            from mediaflow.engines.llm_server import LocalLLMServer

            url = LocalLLMServer(self.settings).ensure_running()
        return OpenAIChatModel(
            url,
            self.settings.llm_model,
            api_key=self.settings.llm_api_key,
            timeout=self.settings.remote_timeout,
            max_retries=self.settings.remote_retries,
            repetition_penalty=self.settings.llm_repetition_penalty,
        )
