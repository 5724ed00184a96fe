"""Engine selection: in-process or remote, from settings; built lazily, once.

Two embedders: the default one (English: all-MiniLM-L6-v2) and the multilingual one
(``MEDIAFLOW_MULTILINGUAL_EMBEDDER``, USE-multilingual v3) for media in any other language
(``Engines.embedder_for``). Their vectors differ in size and meaning, so each has its own
collection (``collection_for``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import cached_property

from mediaflow.config import Settings
from mediaflow.engines.base import ChatModel, Embedder, Transcriber
from mediaflow.errors import MediaflowError
from mediaflow.languages import ENGLISH

MULTILINGUAL_OFF = "none"
log = logging.getLogger(__name__)


def collection_for(base: str, embedder_name: str | None) -> str:
    """The collection of one embedder's vectors, named from the base collection (the one place
    this is derived). The default embedder's (``embedder_name`` None) are in ``base`` itself, so
    what was indexed before there were two embedders stays where it is; another embedder's
    (another size, another vector space) in ``<base>-<its name>``, e.g.
    ``mediaflow-use-multilingual-v3``."""
    return f"{base}-{embedder_name}" if embedder_name else base


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
    def multilingual_embedder(self) -> Embedder:
        """The embedder of non-English media (not under ``_building``: USE is numpy, no
        transformers import; ``use_embedder.load_model`` has its own lock)."""
        name = self.multilingual_name
        if name is None:
            raise MediaflowError(f"MEDIAFLOW_MULTILINGUAL_EMBEDDER={MULTILINGUAL_OFF}: no multilingual embedder")
        from mediaflow.engines.use_embedder import DIMENSIONS, UniversalSentenceEncoder

        if self.settings.embedder == "remote":
            from mediaflow.engines.remote import RemoteEmbedder

            return RemoteEmbedder.from_settings(self.settings, model=name, dim=DIMENSIONS)
        return UniversalSentenceEncoder.from_settings(self.settings)

    @property
    def multilingual_name(self) -> str | None:
        name = self.settings.multilingual_embedder
        return None if name == MULTILINGUAL_OFF else name

    def embedder_name_for(self, language: str | None) -> str | None:
        """Which embedder a media in ``language`` is indexed with: None for the default one
        (English, or every language when the multilingual one is off), else the multilingual
        one's name. A language USE was not trained on goes to USE too: on
        ``bench/multilingual_embeddings.py`` it retrieves across languages it shares script and
        vocabulary with far better than the English MiniLM does (the embed stage logs it)."""
        if language is None or language == ENGLISH:
            return None
        return self.multilingual_name

    def embedder_for(self, language: str | None) -> Embedder:
        """The embedder of media in ``language`` (``embedder_name_for``), built on first use."""
        return self.multilingual_embedder if self.embedder_name_for(language) else self.embedder

    def collection_for(self, base: str, language: str | None) -> str:
        """The collection that media in ``language`` are indexed into."""
        return collection_for(base, self.embedder_name_for(language))

    def embedders(self, base: str) -> list[tuple[str, Callable[[], Embedder]]]:
        """Each configured embedder's collection under ``base``, with a getter that builds the
        embedder only when called (a library with no German media never loads USE)."""
        pairs: list[tuple[str, Callable[[], Embedder]]] = [(base, lambda: self.embedder)]
        if self.multilingual_name:
            pairs.append((collection_for(base, self.multilingual_name), lambda: self.multilingual_embedder))
        return pairs

    def embedder_of_collection(self, base: str, collection: str) -> Embedder:
        """The embedder whose vectors ``collection`` holds; an error for a collection of an
        embedder that is not configured (indexed before MEDIAFLOW_MULTILINGUAL_EMBEDDER changed)."""
        for name, get in self.embedders(base):
            if name == collection:
                return get()
        raise MediaflowError(
            f"collection {collection!r} holds vectors of an embedder that is not configured "
            f"(MEDIAFLOW_MULTILINGUAL_EMBEDDER={self.settings.multilingual_embedder}): process the media again")

    def warm(self, *, transcriber: bool, embedder_language: str | None | bool = False) -> threading.Thread:
        """Build the engines a run will use in a background thread, in the order it uses
        them: the transcriber (its imports and model load then overlap the audio decode) and
        then the embedder of ``embedder_language`` (False: none), whose sentence-transformers
        import and load overlap transcription instead of following it. A stage that reaches
        an engine still building waits for it (``cached_property``'s lock); a build that fails
        here is built again by the stage, which then reports the error."""

        def build() -> None:
            try:
                if transcriber:
                    self.transcriber  # noqa: B018  (the cached property builds it)
                if embedder_language is not False:
                    self.embedder_for(embedder_language)
            except Exception as exc:  # the stage that needs it raises it again, where it belongs
                log.debug("background engine build failed (the stage retries it): %s", exc)

        # Not a daemon: a command that fails early (a full store at the audio decode) would
        # otherwise exit while this thread is inside a native model load, and the C++ runtime
        # aborts the process at exit (SIGABRT, "terminate called without an active
        # exception") after the clean error. The interpreter's shutdown joins it instead: a
        # failed command exits a few seconds later, with its own exit code.
        thread = threading.Thread(target=build, name="mediaflow-engines-warm", daemon=False)
        thread.start()
        return thread

    # The local LLM server's start, begun by prepare_chat() and awaited by chat (class-level
    # defaults, set per instance when a start begins).
    _chat_start: Future[str] | None = None
    _chat_start_lock = threading.Lock()

    def prepare_chat(self) -> bool:
        """Begin starting (or reusing) the local LLM server in a background thread and return
        at once, so its ~30 s start overlaps other work; ``chat`` then waits only for what is
        left of it and raises its error, if it failed. True when a start was begun; False
        with an LLM URL configured (nothing to start), or when begun or built already."""
        if self.settings.llm_url or "chat" in self.__dict__:
            return False
        with self._chat_start_lock:
            if self._chat_start is not None:
                return False
            future: Future[str] = Future()
            self._chat_start = future

        def start() -> None:
            from mediaflow.engines.llm_server import LocalLLMServer

            try:
                future.set_result(LocalLLMServer(self.settings).ensure_running())
            except BaseException as exc:  # kept for chat to raise: a failed start is never hidden
                future.set_exception(exc)

        # A daemon: a command that ends before its summary must not wait for the server; the
        # server itself is detached and stays up for the next command (``mediaflow llm stop``).
        threading.Thread(target=start, name="mediaflow-llm-start", daemon=True).start()
        return True

    def _local_llm_url(self) -> str:
        from mediaflow.engines.llm_server import LocalLLMServer

        future = self._chat_start
        if future is None:
            return LocalLLMServer(self.settings).ensure_running()
        try:
            return future.result()
        except BaseException:
            with self._chat_start_lock:  # the next use starts anew (a long-lived gateway retries)
                if self._chat_start is future:
                    self._chat_start = None
            raise

    @cached_property
    def chat(self) -> ChatModel:  # not under _building: starting the LLM server takes a while
        from mediaflow.engines.openai_chat import OpenAIChatModel

        url = self.settings.llm_url or self._local_llm_url()
        return OpenAIChatModel(
            url,
            self.settings.llm_model,
            api_key=self.settings.llm_api_key,
            timeout=self.settings.remote_timeout,
            max_retries=self.settings.remote_retries,
            repetition_penalty=self.settings.llm_repetition_penalty,
        )
