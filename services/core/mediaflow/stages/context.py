"""What a stage gets: ids, options, stores and engines; nothing about Kubernetes or HTTP."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import fsspec

from mediaflow.config import Settings
from mediaflow.engines import Engines
from mediaflow.engines.base import Embedder
from mediaflow.models import SourceRecord, Transcript
from mediaflow.spec import MediaJobSpec
from mediaflow.stores import ArtifactStore, VectorIndex


@dataclass
class StageContext:
    media_id: str
    spec: MediaJobSpec
    settings: Settings
    store: ArtifactStore
    engines: Engines
    progress: Callable[[float], None] = field(default=lambda fraction: None)
    # Opened on first use: only the index stage needs Qdrant (a worker Job never does, and an
    # embedded Qdrant path admits one client at a time).
    open_index: Callable[[], VectorIndex] | None = None
    _index: VectorIndex | None = None

    @property
    def collection(self) -> str:
        """The base collection (the spec's); ``embedding_collection`` is where this media's
        points go."""
        return self.spec.stages.index.collection

    @cached_property
    def language(self) -> str:
        """The transcript's language (given or detected): it picks the media's embedder."""
        transcript = self.store.read_model(self.media_id, "transcript.json", Transcript)
        if transcript is None:
            raise FileNotFoundError(f"media {self.media_id} has no transcript.json: transcribe it first")
        return transcript.language

    @property
    def media_embedder(self) -> Embedder:
        """The embedder this media is indexed with (its language's: ``Engines.embedder_for``);
        seek, the summary's key sentences and its support check use it too."""
        return self.engines.embedder_for(self.language)

    @property
    def embedding_collection(self) -> str:
        """The collection of this media's points (``Engines.collection_for``)."""
        return self.engines.collection_for(self.collection, self.language)

    @property
    def index(self) -> VectorIndex:
        if self._index is None:
            self._index = (self.open_index() if self.open_index is not None
                           else VectorIndex.from_settings(self.settings, self.collection))
        return self._index

    @cached_property
    def source(self) -> SourceRecord:
        record = self.store.read_model(self.media_id, "source.json", SourceRecord)
        if record is None:
            raise FileNotFoundError(f"media {self.media_id} has no source.json: ingest it first")
        return record

    @contextlib.contextmanager
    def source_path(self) -> Iterator[Path]:
        """A local file with the media bytes (downloaded to a temp dir when remote)."""
        src = self.source
        if src.stored_as:
            with self.store.local_path(self.media_id, src.stored_as) as path:
                yield path
        elif "://" not in src.uri:
            yield Path(src.uri)
        else:
            with tempfile.TemporaryDirectory(prefix="mediaflow-src-") as tmp:
                local = Path(tmp) / "source"
                fsspec.filesystem(src.uri.split("://")[0]).get_file(src.uri, str(local))
                yield local
