"""Where in a hit the phrase is said: the best-matching transcript segment's start.

A hit is a chunk (a ~15 s window); a deep link to its start can land several
seconds before the words searched for. Within the hit, the transcript segment
(a sentence) closest to the query in embedding space gives the time to seek to.
Segment vectors are computed once per media and kept in a small LRU.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from mediaflow.models import SearchHit, Transcript


class SeekRefiner:
    def __init__(self, pipeline, *, cache_media: int = 32):
        self.pipeline = pipeline
        self.cache_media = cache_media
        self._cache: OrderedDict[str, tuple[list[float], np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def _segments(self, media_id: str) -> tuple[list[float], np.ndarray] | None:
        with self._lock:
            if media_id in self._cache:
                self._cache.move_to_end(media_id)
                return self._cache[media_id]
        transcript = self.pipeline.store.read_model(media_id, "transcript.json", Transcript)
        segments = [s for s in (transcript.segments if transcript else []) if s.text.strip()]
        if not segments:
            return None
        vectors = _normalized(self.pipeline.engines.embedder.embed([s.text.strip() for s in segments]))
        entry = ([s.start for s in segments], vectors)
        with self._lock:
            self._cache[media_id] = entry
            while len(self._cache) > self.cache_media:
                self._cache.popitem(last=False)
        return entry

    def forget(self, media_id: str) -> None:
        with self._lock:
            self._cache.pop(media_id, None)

    def seek_times(self, query_vector: list[float], hits: list[SearchHit]) -> list[float]:
        """For each hit, the start of its segment most similar to the query (else the hit's start)."""
        if not hits:
            return []
        [query_vector] = _normalized([query_vector])
        times = []
        for hit in hits:
            entry = self._segments(hit.media_id)
            if entry is None:
                times.append(hit.start)
                continue
            starts, vectors = entry
            inside = [i for i, start in enumerate(starts) if hit.start - 0.05 <= start < hit.end]
            if not inside:
                times.append(hit.start)
                continue
            best = max(inside, key=lambda i: float(vectors[i] @ query_vector))
            times.append(starts[best])
        return times


def _normalized(vectors) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
