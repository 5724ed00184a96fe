"""Where in a hit the words searched for are said: ``SearchHit.seek``.

A hit is a chunk (up to a ~15 s window of sentences); a deep link to its start can land
seconds before the words searched for. Of the chunk's sentences (``Chunk.sentences``, kept
in the point's payload), the one closest to the query in embedding space gives the time to
play from. ``Pipeline.search`` sets it, so the CLI, the API and the UI show the same time; it
passes the embedder the hit's media was indexed with (and the query's vector from it), so a
German media's sentences are compared by the multilingual embedder.

Points indexed before chunks recorded their sentences fall back to the transcript's
segments inside the chunk's [start, end], read from the artifact store.

Sentence vectors and fallback segments are kept in small LRUs: a repeated query, or another
query over the same chunks, embeds nothing but itself.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from mediaflow.models import SearchHit, Sentence, Transcript

SENTENCE_VECTORS = 8192  # ~12 MB at 384 dimensions
FALLBACK_MEDIA = 16  # transcripts of old-format points
_EPSILON = 0.05  # a segment ending this little after a chunk's start is not in it


class _LRU:
    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_vectors = _LRU(SENTENCE_VECTORS)  # (embedder name, text) -> unit vector
_segments = _LRU(FALLBACK_MEDIA)  # (store root, media id) -> [Sentence] (empty: no transcript)


def sentences_of(hit: SearchHit, store) -> list[Sentence]:
    """The hit's sentences: from its payload, else the transcript's segments in its range."""
    if hit.sentences:
        return hit.sentences
    if store is None:
        return []
    # Chunks start and end on segment boundaries, or inside a segment split at word times.
    return [
        Sentence(start=max(s.start, hit.start), end=s.end, text=s.text)
        for s in _transcript_sentences(store, hit.media_id)
        if s.start < hit.end and s.end > hit.start + _EPSILON
    ]


def _transcript_sentences(store, media_id: str) -> list[Sentence]:
    key = (getattr(store, "root_uri", id(store)), media_id)
    cached = _segments.get(key)
    if cached is not None:
        return cached
    try:
        transcript = store.read_model(media_id, "transcript.json", Transcript)
    except Exception:  # noqa: BLE001 - unreadable now (a store hiccup): seek to the chunk's start
        return []
    found = [
        Sentence(start=s.start, end=s.end, text=s.text.strip())
        for s in (transcript.segments if transcript else [])
        if s.text.strip()
    ]
    _segments.put(key, found)
    return found


def place(query_vector: Sequence[float], hits: list[SearchHit], embedder, store=None) -> list[SearchHit]:
    """Set each hit's ``seek`` to the start of its sentence most similar to the query (a hit
    of one sentence: its start; of none known: the chunk's start). One embedding call for
    every sentence not seen before; returns ``hits``."""
    per_hit = [sentences_of(hit, store) for hit in hits]
    wanted = {s.text for sentences in per_hit if len(sentences) > 1 for s in sentences}
    name = getattr(embedder, "name", type(embedder).__name__)
    vectors = {text: v for text in wanted if (v := _vectors.get((name, text))) is not None}
    missing = sorted(wanted - vectors.keys())
    if missing:
        for text, vector in zip(missing, _unit(embedder.embed(missing)), strict=True):
            vectors[text] = vector
            _vectors.put((name, text), vector)
    [query] = _unit([query_vector])
    for hit, sentences in zip(hits, per_hit, strict=True):
        if not sentences:
            hit.seek = hit.start
        elif len(sentences) == 1:
            hit.seek = sentences[0].start
        else:
            scores = [float(vectors[s.text] @ query) for s in sentences]
            hit.seek = sentences[int(np.argmax(scores))].start
    return hits


def _unit(vectors) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
