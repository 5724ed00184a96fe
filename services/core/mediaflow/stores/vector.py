"""Vector index: Qdrant, embedded (local path) by default or a server by URL.

Point ids are ``uuid5(media_id, chunk index)``, so re-indexing a media
overwrites its points instead of adding new ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from qdrant_client import QdrantClient, models

from mediaflow.models import Chunk, SearchHit
from mediaflow.stores import exact

_NAMESPACE = uuid.UUID("6f1c1a9e-3b1d-4c55-9a8e-6d2c7b4f9e10")


def point_id(media_id: str, chunk_index: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{media_id}/{chunk_index}"))


class VectorIndex:
    def __init__(
        self,
        *,
        path: Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        collection: str = "mediaflow",
    ):
        if url:
            self.client = QdrantClient(url=url, api_key=api_key, timeout=30)
        else:
            assert path is not None, "an embedded index needs a path"
            path.mkdir(parents=True, exist_ok=True)
            self.client = QdrantClient(path=str(path))
        self.embedded = not url
        self.collection = collection
        # Embedded mode only: exact in-memory search per collection, shared with for_collection().
        self._exact: dict[str, exact.ExactIndex] | None = {} if self.embedded else None

    @classmethod
    def from_settings(cls, settings, collection: str | None = None) -> VectorIndex:
        return cls(
            path=settings.qdrant_path,
            url=settings.qdrant_url,
            api_key=settings.qdrant_api_key,
            collection=collection or settings.collection,
        )

    def for_collection(self, collection: str) -> VectorIndex:
        """The same client (embedded Qdrant allows one per path) on another collection."""
        if collection == self.collection:
            return self
        other = object.__new__(VectorIndex)
        other.client, other.embedded, other.collection = self.client, self.embedded, collection
        other._exact = self._exact
        return other

    def close(self) -> None:
        self.client.close()

    def ensure_collection(self, dim: int) -> None:
        if self.client.collection_exists(self.collection):
            return
        self.client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
        )
        if not self.embedded:  # embedded Qdrant filters by scanning; servers use the index
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
        self.ensure_collection(len(vectors[0]))
        ids = [point_id(media_id, c.index) for c in chunks]
        for lo in range(0, len(chunks), batch_size):
            points = [
                models.PointStruct(
                    id=ids[i],
                    vector=list(map(float, vectors[i])),
                    payload={
                        "media_id": media_id,
                        "title": title,
                        "chunk": c.index,
                        "start": c.start,
                        "end": c.end,
                        "text": c.text,
                        # where a hit seeks to (``mediaflow.seek``)
                        "sentences": [u.model_dump() for u in c.sentences],
                    },
                )
                for i, c in enumerate(chunks[lo : lo + batch_size], start=lo)
            ]
            self.client.upsert(self.collection, points=points, wait=True)
            if (cache := self._loaded_exact()) is not None:
                cache.put([p.id for p in points], [p.vector for p in points], [p.payload for p in points])
        return ids

    def _loaded_exact(self) -> exact.ExactIndex | None:
        return self._exact.get(self.collection) if self._exact is not None else None

    def _exact_index(self) -> exact.ExactIndex:
        """The collection's in-memory copy, loaded from Qdrant on first use."""
        cache = self._loaded_exact()
        if cache is None:
            info = self.client.get_collection(self.collection)
            cache = exact.load(self._all_points(), info.config.params.vectors.size)
            self._exact[self.collection] = cache
        return cache

    def _all_points(self):
        offset = None
        while True:
            points, offset = self.client.scroll(self.collection, limit=4096, offset=offset,
                                                with_vectors=True, with_payload=True)
            yield from points
            if offset is None:
                return

    def _media_filter(self, media_id: str | None) -> models.Filter | None:
        if media_id is None:
            return None
        return models.Filter(
            must=[models.FieldCondition(key="media_id", match=models.MatchValue(value=media_id))]
        )

    def search(
        self, vector: Sequence[float], *, top_k: int = 5, media_id: str | None = None
    ) -> list[SearchHit]:
        if not self.client.collection_exists(self.collection):
            return []
        if self._exact is not None:
            return self._exact_index().search(vector, top_k, media_id)
        result = self.client.query_points(
            self.collection,
            query=list(map(float, vector)),
            limit=top_k,
            query_filter=self._media_filter(media_id),
            with_payload=True,
        )
        return [
            SearchHit(
                media_id=p.payload["media_id"],
                title=p.payload.get("title"),
                chunk=p.payload["chunk"],
                start=p.payload["start"],
                end=p.payload["end"],
                text=p.payload["text"],
                score=p.score,
                sentences=p.payload.get("sentences") or [],
            )
            for p in result.points
        ]

    def count(self, media_id: str | None = None) -> int:
        if not self.client.collection_exists(self.collection):
            return 0
        return self.client.count(
            self.collection, count_filter=self._media_filter(media_id), exact=True
        ).count

    def delete_media(self, media_id: str) -> None:
        if not self.client.collection_exists(self.collection):
            return
        self.client.delete(
            self.collection,
            points_selector=models.FilterSelector(filter=self._media_filter(media_id)),
            wait=True,
        )
        if (cache := self._loaded_exact()) is not None:
            cache.drop_media(media_id)
