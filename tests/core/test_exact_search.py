"""Embedded mode's in-memory exact search returns what Qdrant itself returns."""

from __future__ import annotations

import numpy as np
import pytest

from mediaflow.models import Chunk
from mediaflow.stores import VectorIndex

DIM = 16


def chunks(n: int, offset: float = 0.0) -> list[Chunk]:
    return [Chunk(index=i, start=offset + i * 10.0, end=offset + i * 10.0 + 15.0, text=f"chunk {i}")
            for i in range(n)]


def qdrant_answer(index: VectorIndex, query, top_k: int, media_id: str | None):
    result = index.client.query_points(index.collection, query=list(map(float, query)), limit=top_k,
                                       query_filter=index._media_filter(media_id), with_payload=True)
    return [(p.payload["media_id"], p.payload["chunk"], p.score) for p in result.points]


def ours(index: VectorIndex, query, top_k: int, media_id: str | None):
    return [(h.media_id, h.chunk, h.score) for h in index.search(query, top_k=top_k, media_id=media_id)]


def assert_same(index: VectorIndex, rng, media_ids) -> None:
    for _ in range(20):
        query = rng.normal(size=DIM)
        for media_id in (None, *media_ids, "absent"):
            for top_k in (1, 5, 50):
                expected, got = qdrant_answer(index, query, top_k, media_id), ours(index, query, top_k, media_id)
                assert [e[:2] for e in expected] == [g[:2] for g in got], (media_id, top_k)
                assert np.allclose([e[2] for e in expected], [g[2] for g in got], atol=1e-5)


@pytest.fixture
def index(tmp_path):
    index = VectorIndex(path=tmp_path / "qdrant", collection="exact")
    yield index
    index.close()


def test_same_hits_as_qdrant_through_upserts_overwrites_and_deletes(index, tmp_path):
    rng = np.random.default_rng(7)
    index.upsert("a", chunks(30), rng.normal(size=(30, DIM)).tolist(), title="A")
    index.search(rng.normal(size=DIM))  # loads the in-memory copy; what follows must keep it in step
    index.upsert("b", chunks(25), rng.normal(size=(25, DIM)).tolist(), title="B")
    assert_same(index, rng, ["a", "b"])

    index.upsert("a", chunks(30), rng.normal(size=(30, DIM)).tolist(), title="A2")  # re-indexed: overwrites
    index.delete_media("b")
    assert_same(index, rng, ["a", "b"])
    assert {h.title for h in index.search(rng.normal(size=DIM), top_k=50)} == {"A2"}


def test_a_reopened_store_loads_what_qdrant_persisted(tmp_path):
    rng = np.random.default_rng(11)
    first = VectorIndex(path=tmp_path / "qdrant", collection="exact")
    first.upsert("a", chunks(40), rng.normal(size=(40, DIM)).tolist())
    first.upsert("b", chunks(5, offset=1000), rng.normal(size=(5, DIM)).tolist())
    first.close()
    reopened = VectorIndex(path=tmp_path / "qdrant", collection="exact")
    try:
        assert_same(reopened, rng, ["a", "b"])
        hit = reopened.search(rng.normal(size=DIM), media_id="b", top_k=1)[0]
        assert hit.start >= 1000 and hit.text.startswith("chunk")
    finally:
        reopened.close()


def test_collections_sharing_a_client_stay_apart(index):
    rng = np.random.default_rng(3)
    other = index.for_collection("other")
    index.upsert("a", chunks(3), rng.normal(size=(3, DIM)).tolist())
    other.upsert("z", chunks(4), rng.normal(size=(4, DIM)).tolist())
    assert {h.media_id for h in index.search(rng.normal(size=DIM), top_k=10)} == {"a"}
    assert {h.media_id for h in other.search(rng.normal(size=DIM), top_k=10)} == {"z"}
