"""Vector index: Qdrant, embedded in-process (Qdrant Edge shards under a local path) by
default, or a Qdrant server by URL (the cluster).

Point ids are ``uuid5(media_id, chunk index)``, so re-indexing a media overwrites its
points instead of adding new ones. Scores are cosine similarities either way (the seek and
grounding code rely on that scale). The embedded store is described in
``mediaflow.stores.edge``: one shard per collection, HNSW past 20 k unindexed points,
exact search below, a keyword payload index on ``media_id``, one process per path.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
from qdrant_client import QdrantClient, models

from mediaflow.models import Chunk, SearchHit
from mediaflow.stores.edge import DEFAULT_BUILD_THRESHOLD, DEFAULT_HNSW_EF, EdgeStore, check_collection_name

_NAMESPACE = uuid.UUID("6f1c1a9e-3b1d-4c55-9a8e-6d2c7b4f9e10")


def point_id(media_id: str, chunk_index: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{media_id}/{chunk_index}"))


def _payload(media_id: str, title: str | None, chunk: Chunk) -> dict[str, Any]:
    return {
        "media_id": media_id,
        "title": title,
        "chunk": chunk.index,
        "start": chunk.start,
        "end": chunk.end,
        "text": chunk.text,
        # where a hit seeks to (``mediaflow.seek``)
        "sentences": [u.model_dump() for u in chunk.sentences],
    }


def _hit(payload: dict[str, Any], score: float) -> SearchHit:
    return SearchHit(
        media_id=payload["media_id"],
        title=payload.get("title"),
        chunk=payload["chunk"],
        start=payload["start"],
        end=payload["end"],
        text=payload["text"],
        score=score,
        sentences=payload.get("sentences") or [],  # points indexed before chunks had sentences
    )


def _checked_vectors(vectors: Sequence[Sequence[float]], dim: int | None = None) -> np.ndarray:
    """Every vector as float32, checked before anything is written: same length, finite."""
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except ValueError as exc:  # ragged
        raise ValueError(f"vectors of different lengths: {exc}") from None
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise ValueError(f"expected a list of vectors, got an array of shape {matrix.shape}")
    if dim is not None and matrix.shape[1] != dim:
        raise ValueError(f"{matrix.shape[1]}-dimensional vectors for a {dim}-dimensional collection")
    if not np.isfinite(matrix).all():
        raise ValueError("vectors contain NaN or infinite values")
    return matrix


class VectorIndex:
    def __init__(
        self,
        *,
        path: Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        collection: str = "mediaflow",
        build_threshold: int = DEFAULT_BUILD_THRESHOLD,
        hnsw_ef: int = DEFAULT_HNSW_EF,
    ):
        self.embedded = not url
        self.collection = collection
        self.client: QdrantClient | None = None  # server mode only
        self._edge: EdgeStore | None = None  # embedded mode only
        if url:
            self.client = QdrantClient(url=url, api_key=api_key, timeout=30)
        else:
            if path is None:
                raise ValueError("an embedded index needs a path")
            check_collection_name(collection)
            self._edge = EdgeStore(Path(path), build_threshold=build_threshold, hnsw_ef=hnsw_ef)

    @classmethod
    def from_settings(cls, settings, collection: str | None = None) -> VectorIndex:
        return cls(
            path=settings.qdrant_path,
            url=settings.qdrant_url,
            api_key=settings.qdrant_api_key,
            collection=collection or settings.collection,
            build_threshold=settings.index_build_threshold,
            hnsw_ef=settings.index_hnsw_ef,
        )

    def for_collection(self, collection: str) -> VectorIndex:
        """The same store (an embedded path admits one opener) on another collection."""
        if collection == self.collection:
            return self
        if self.embedded:
            check_collection_name(collection)
        other = object.__new__(VectorIndex)
        other.client, other._edge, other.embedded, other.collection = (
            self.client, self._edge, self.embedded, collection)
        return other

    def close(self) -> None:
        """Flush and close every collection (shared with ``for_collection`` siblings)."""
        if self._edge is not None:
            self._edge.close()
        else:
            self.client.close()

    def check(self) -> None:
        """Raise unless the index can serve requests (the gateway's readiness)."""
        if self._edge is not None:
            self._edge.check()
        else:
            self.client.get_collections()

    def ensure_collection(self, dim: int) -> None:
        if self._edge is not None:
            self._edge.create(self.collection, dim)
            return
        if self.client.collection_exists(self.collection):
            return
        self.client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
        )
        self.client.create_payload_index(
            self.collection, "media_id", field_schema=models.PayloadSchemaType.KEYWORD
        )

    def upsert(
        self,
        media_id: str,
        chunks: Sequence[Chunk],
        vectors: Sequence[Sequence[float]],
        *,
        title: str | None = None,
        batch_size: int = 256,
    ) -> list[str]:
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        if not chunks:
            return []
        matrix = _checked_vectors(vectors)
        ids = [point_id(media_id, c.index) for c in chunks]
        if self._edge is not None:
            self._edge.create(self.collection, matrix.shape[1])  # checks the dimension
            rows = matrix.tolist()
            self._edge.upsert(self.collection, [
                qe.Point(id=ids[i], vector=rows[i], payload=_payload(media_id, title, c))
                for i, c in enumerate(chunks)
            ], batch_size=max(batch_size, 1024))
            return ids
        self.ensure_collection(matrix.shape[1])
        rows = matrix.tolist()
        for lo in range(0, len(chunks), batch_size):
            points = [
                models.PointStruct(id=ids[i], vector=rows[i], payload=_payload(media_id, title, c))
                for i, c in enumerate(chunks[lo : lo + batch_size], start=lo)
            ]
            self.client.upsert(self.collection, points=points, wait=True)
        return ids

    def optimize(self) -> None:
        """Embedded: build the HNSW graph of all unindexed points past the threshold now
        (``upsert`` does it once 20 k points are unindexed). A server optimizes by itself."""
        if self._edge is not None:
            self._edge.optimize(self.collection)

    def _media_filter(self, media_id: str | None) -> models.Filter | None:
        if media_id is None:
            return None
        return models.Filter(
            must=[models.FieldCondition(key="media_id", match=models.MatchValue(value=media_id))]
        )

    @staticmethod
    def _edge_filter(media_id: str | None) -> qe.Filter | None:
        if media_id is None:
            return None
        return qe.Filter(must=[qe.FieldCondition(key="media_id", match=qe.MatchValue(media_id))])

    def search(
        self, vector: Sequence[float], *, top_k: int = 5, media_id: str | None = None
    ) -> list[SearchHit]:
        if top_k <= 0:
            return []
        if self._edge is not None:
            if not self._edge.exists(self.collection):
                return []
            [query] = _checked_vectors([vector], self._edge.dim(self.collection)).tolist()
            points = self._edge.query(self.collection, qe.QueryRequest(
                limit=top_k,
                query=qe.Query.Nearest(query),
                filter=self._edge_filter(media_id),
                with_payload=True,
                params=qe.SearchParams(hnsw_ef=max(self._edge.hnsw_ef, top_k)),
            ))
            return [_hit(p.payload, p.score) for p in points]
        if not self.client.collection_exists(self.collection):
            return []
        result = self.client.query_points(
            self.collection,
            query=list(map(float, vector)),
            limit=top_k,
            query_filter=self._media_filter(media_id),
            with_payload=True,
        )
        return [_hit(p.payload, p.score) for p in result.points]

    def count(self, media_id: str | None = None) -> int:
        if self._edge is not None:
            return self._edge.count(self.collection,
                                    qe.CountRequest(exact=True, filter=self._edge_filter(media_id)))
        if not self.client.collection_exists(self.collection):
            return 0
        return self.client.count(
            self.collection, count_filter=self._media_filter(media_id), exact=True
        ).count

    def delete_media(self, media_id: str) -> None:
        if self._edge is not None:
            self._edge.update(self.collection,
                              qe.UpdateOperation.delete_points_by_filter(self._edge_filter(media_id)))
            return
        if not self.client.collection_exists(self.collection):
            return
        self.client.delete(
            self.collection,
            points_selector=models.FilterSelector(filter=self._media_filter(media_id)),
            wait=True,
        )
