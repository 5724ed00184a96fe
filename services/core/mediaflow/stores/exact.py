"""Exact cosine search in memory, for the embedded (local-mode) Qdrant.

qdrant-client's local mode answers a query by scoring every stored point in Python,
about 0.4 s at 100 k chunks. This keeps the same normalized vectors in one contiguous
float32 matrix (plus the few payload fields a hit needs) and answers with a single
matrix-vector product and a partial sort: milliseconds. Qdrant stays the source of
truth: the matrix is loaded from it once and then follows every upsert and delete made
through the same ``VectorIndex`` (local mode locks its directory to one process, so no
other writer can exist). Memory: 4 bytes × dimensions per chunk (150 MB at 100 k × 384).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from mediaflow.models import SearchHit

HIT_FIELDS = ("media_id", "title", "chunk", "start", "end", "text", "sentences")


def _normalized(vectors: Any) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


class ExactIndex:
    """One collection's points: ids, normalized vectors, hit payloads, rows per media."""

    def __init__(self, dim: int):
        self._lock = threading.Lock()
        self._matrix = np.empty((0, dim), dtype=np.float32)
        self._size = 0
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._payloads: list[dict[str, Any]] = []
        self._media_rows: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return self._size

    def put(self, ids: Sequence[str], vectors: Any, payloads: Sequence[dict[str, Any]]) -> None:
        normalized = _normalized(vectors)
        with self._lock:
            fresh = [n for n, point in enumerate(ids) if point not in self._row]
            for n, point in enumerate(ids):
                if point in self._row:  # an overwrite (re-indexed media): same row
                    row = self._row[point]
                    self._matrix[row] = normalized[n]
                    self._payloads[row] = _hit_payload(payloads[n])
            if fresh:
                self._reserve(self._size + len(fresh))
                rows = np.arange(self._size, self._size + len(fresh))
                self._matrix[rows] = normalized[fresh]
                for row, n in zip(rows.tolist(), fresh, strict=True):
                    self._ids.append(ids[n])
                    self._row[ids[n]] = row
                    self._payloads.append(_hit_payload(payloads[n]))
                self._size += len(fresh)
            self._media_rows = None

    def drop_media(self, media_id: str) -> None:
        with self._lock:
            keep = [row for row in range(self._size) if self._payloads[row]["media_id"] != media_id]
            if len(keep) == self._size:
                return
            self._matrix = self._matrix[keep].copy()
            self._ids = [self._ids[row] for row in keep]
            self._payloads = [self._payloads[row] for row in keep]
            self._row = {point: row for row, point in enumerate(self._ids)}
            self._size = len(keep)
            self._media_rows = None

    def search(self, vector: Sequence[float], top_k: int, media_id: str | None = None) -> list[SearchHit]:
        query = _normalized(vector)[0]
        with self._lock:
            if media_id is None:
                rows = None
                scores = self._matrix[: self._size] @ query
            else:
                rows = self._rows_of(media_id)
                scores = self._matrix[rows] @ query
            if top_k <= 0 or scores.size == 0:
                return []
            k = min(top_k, scores.size)
            best = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
            best = best[np.argsort(-scores[best], kind="stable")]
            picked = best if rows is None else rows[best]
            return [SearchHit(**self._payloads[row], score=float(scores[n]))
                    for row, n in zip(picked.tolist(), best.tolist(), strict=True)]

    def _rows_of(self, media_id: str) -> np.ndarray:
        if self._media_rows is None:
            grouped: dict[str, list[int]] = {}
            for row in range(self._size):
                grouped.setdefault(self._payloads[row]["media_id"], []).append(row)
            self._media_rows = {media: np.asarray(rows, dtype=np.int64) for media, rows in grouped.items()}
        return self._media_rows.get(media_id, np.empty(0, dtype=np.int64))

    def _reserve(self, size: int) -> None:
        if size <= len(self._matrix):
            return
        grown = np.empty((max(size, 2 * len(self._matrix), 1024), self._matrix.shape[1]), dtype=np.float32)
        grown[: self._size] = self._matrix[: self._size]
        self._matrix = grown


def _hit_payload(payload: dict[str, Any]) -> dict[str, Any]:
    hit = {field: payload.get(field) for field in HIT_FIELDS}
    hit["sentences"] = hit["sentences"] or []  # points indexed before chunks had sentences
    return hit


def load(points: Iterable[Any], dim: int) -> ExactIndex:
    """Build from Qdrant records (``scroll(with_vectors=True, with_payload=True)``)."""
    index = ExactIndex(dim)
    batch_ids, batch_vectors, batch_payloads = [], [], []
    for point in points:
        batch_ids.append(str(point.id))
        batch_vectors.append(point.vector)
        batch_payloads.append(point.payload)
    if batch_ids:
        index.put(batch_ids, batch_vectors, batch_payloads)
    return index
