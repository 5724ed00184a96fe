"""The embedded VectorIndex (Qdrant Edge shards): the hits exact cosine search gives, writes
that overwrite and delete, persistence across restarts and crashes, one opener per path,
and the one-time migration of qdrant-client local-mode data. Real Qdrant Edge and real
qdrant-client throughout; numpy is the reference for exact cosine search."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from mediaflow.models import Chunk, Sentence
from mediaflow.stores import VectorIndex
from mediaflow.stores.edge import IndexInUseError
from mediaflow.stores.vector import point_id

DIM = 16
REPO = Path(__file__).resolve().parents[2]


def chunks(n: int, offset: float = 0.0) -> list[Chunk]:
    return [Chunk(index=i, start=offset + i * 10.0, end=offset + i * 10.0 + 15.0, text=f"chunk {i}",
                  sentences=[Sentence(start=offset + i * 10.0 + 1, end=offset + i * 10.0 + 4, text=f"s{i}")])
            for i in range(n)]


class Reference:
    """What exact cosine search must return: the same points, kept in numpy."""

    def __init__(self):
        self.points: dict[str, tuple[str, int, np.ndarray]] = {}

    def upsert(self, media_id: str, n: int, vectors) -> None:
        for i, v in enumerate(np.asarray(vectors, dtype=np.float64)):
            self.points[point_id(media_id, i)] = (media_id, i, v / np.linalg.norm(v))

    def delete(self, media_id: str) -> None:
        self.points = {k: p for k, p in self.points.items() if p[0] != media_id}

    def search(self, query, top_k: int, media_id: str | None):
        q = np.asarray(query, dtype=np.float64)
        q = q / np.linalg.norm(q)
        scored = sorted(((float(v @ q), m, c) for m, c, v in self.points.values()
                         if media_id is None or m == media_id), reverse=True)
        return [(m, c, s) for s, m, c in scored[:top_k]]


def ours(index: VectorIndex, query, top_k: int, media_id: str | None):
    return [(h.media_id, h.chunk, h.score) for h in index.search(query, top_k=top_k, media_id=media_id)]


def assert_same(index: VectorIndex, reference: Reference, rng, media_ids) -> None:
    for _ in range(10):
        query = rng.normal(size=DIM)
        for media_id in (None, *media_ids, "absent"):
            for top_k in (1, 5, 50):
                expected, got = reference.search(query, top_k, media_id), ours(index, query, top_k, media_id)
                assert [e[:2] for e in expected] == [g[:2] for g in got], (media_id, top_k)
                assert np.allclose([e[2] for e in expected], [g[2] for g in got], atol=1e-5)


@pytest.fixture
def index(tmp_path):
    index = VectorIndex(path=tmp_path / "qdrant", collection="exact")
    yield index
    index.close()


def test_hits_are_exact_cosine_through_upserts_overwrites_and_deletes(index):
    rng, reference = np.random.default_rng(7), Reference()
    for media_id, n, title in (("a", 30, "A"), ("b", 25, "B")):
        vectors = rng.normal(size=(n, DIM))
        index.upsert(media_id, chunks(n), vectors.tolist(), title=title)
        reference.upsert(media_id, n, vectors)
    assert (index.count(), index.count("a"), index.count("b"), index.count("absent")) == (55, 30, 25, 0)
    assert_same(index, reference, rng, ["a", "b"])

    vectors = rng.normal(size=(30, DIM))
    index.upsert("a", chunks(30), vectors.tolist(), title="A2")  # re-indexed: overwrites
    reference.upsert("a", 30, vectors)
    index.delete_media("b")
    reference.delete("b")
    assert (index.count(), index.count("a"), index.count("b")) == (30, 30, 0)
    assert_same(index, reference, rng, ["a", "b"])
    hits = index.search(rng.normal(size=DIM), top_k=50)
    assert {h.title for h in hits} == {"A2"}
    hit = next(h for h in hits if h.chunk == 3)
    assert (hit.start, hit.end, hit.text) == (30.0, 45.0, "chunk 3")
    assert [s.model_dump() for s in hit.sentences] == [{"start": 31.0, "end": 34.0, "text": "s3"}]


def test_an_empty_or_missing_collection_answers_nothing(index):
    assert index.search([1.0] * DIM) == [] and index.count() == 0
    index.delete_media("nothing")  # no collection yet: a no-op, not an error
    index.upsert("a", chunks(2), np.eye(2, DIM).tolist())
    assert index.search([1.0] * DIM, top_k=0) == []


def test_bad_input_is_refused_and_leaves_nothing_behind(index, tmp_path):
    good = np.eye(3, DIM)
    cases = [
        (chunks(3), good[:2].tolist(), "3 chunks but 2 vectors"),
        (chunks(3), [[0.1] * DIM, [0.1] * DIM, [0.1] * (DIM - 1)], "different lengths"),
        (chunks(3), [[float("nan")] * DIM] * 3, "NaN"),
    ]
    for batch, vectors, message in cases:
        with pytest.raises(ValueError, match=message):
            index.upsert("bad", batch, vectors)
    assert not (tmp_path / "qdrant" / "shards" / "exact").exists()

    index.upsert("a", chunks(3), good.tolist())
    with pytest.raises(ValueError, match="holds 16-dimensional vectors, not 8"):
        index.upsert("b", chunks(3), np.eye(3, 8).tolist())
    with pytest.raises(ValueError, match="8-dimensional vectors"):
        index.search([1.0] * 8)
    assert index.count() == 3 and index.count("b") == 0
    for name in ("../escape", "", "a/b", ".hidden", "x" * 201):
        with pytest.raises(ValueError, match="invalid collection name"):
            index.for_collection(name)
    assert sorted(p.name for p in (tmp_path / "qdrant" / "shards").iterdir()) == ["exact"]


def test_collections_sharing_a_store_stay_apart(index, tmp_path):
    rng = np.random.default_rng(3)
    other = index.for_collection("other")
    index.upsert("a", chunks(3), rng.normal(size=(3, DIM)).tolist())
    other.upsert("z", chunks(4), rng.normal(size=(4, DIM)).tolist())
    assert {h.media_id for h in index.search(rng.normal(size=DIM), top_k=10)} == {"a"}
    assert {h.media_id for h in other.search(rng.normal(size=DIM), top_k=10)} == {"z"}
    assert (index.count(), other.count()) == (3, 4)
    assert sorted(p.name for p in (tmp_path / "qdrant" / "shards").iterdir()) == ["exact", "other"]
    other.delete_media("a")  # another collection's media: untouched
    assert index.count("a") == 3


def test_a_restart_keeps_every_point(tmp_path):
    rng, reference = np.random.default_rng(11), Reference()
    first = VectorIndex(path=tmp_path / "qdrant", collection="exact")
    for media_id, n, offset in (("a", 40, 0.0), ("b", 5, 1000.0)):
        vectors = rng.normal(size=(n, DIM))
        first.upsert(media_id, chunks(n, offset=offset), vectors.tolist())
        reference.upsert(media_id, n, vectors)
    first.for_collection("second").upsert("c", chunks(2), rng.normal(size=(2, DIM)).tolist())
    first.close()
    reopened = VectorIndex(path=tmp_path / "qdrant", collection="exact")
    try:
        assert (reopened.count(), reopened.for_collection("second").count()) == (45, 2)
        assert_same(reopened, reference, rng, ["a", "b"])
        hit = reopened.search(rng.normal(size=DIM), media_id="b", top_k=1)[0]
        assert hit.start >= 1000 and hit.text.startswith("chunk")
    finally:
        reopened.close()


CHILD_WRITES_THEN_DIES = """
import os, signal, sys
import numpy as np
from mediaflow.models import Chunk
from mediaflow.stores import VectorIndex
index = VectorIndex(path=sys.argv[1], collection="crash")
index.upsert("a", [Chunk(index=i, start=i, end=i + 1, text=f"t{i}") for i in range(300)],
             np.random.default_rng(0).normal(size=(300, 16)).tolist())
index.delete_media("gone")
print("written", flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close, no flush at exit
"""


def test_points_written_survive_a_killed_process(tmp_path):
    path = tmp_path / "qdrant"
    done = subprocess.run([sys.executable, "-c", CHILD_WRITES_THEN_DIES, str(path)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "services/core")})
    assert done.returncode == -signal.SIGKILL and "written" in done.stdout, done.stderr[-2000:]
    index = VectorIndex(path=path, collection="crash")  # the dead process's lock is gone with it
    try:
        assert index.count("a") == 300
        assert index.search([1.0] * DIM, top_k=3)[0].media_id == "a"
    finally:
        index.close()


CHILD_OPENS = """
import sys
from mediaflow.stores import VectorIndex
from mediaflow.stores.edge import IndexInUseError
try:
    VectorIndex(path=sys.argv[1]).count()
except IndexInUseError as exc:
    print("refused:", exc)
else:
    print("opened")
"""


def test_a_second_opener_gets_a_clear_error_until_the_first_closes(tmp_path):
    path = tmp_path / "qdrant"
    first = VectorIndex(path=path)
    first.upsert("a", chunks(2), np.eye(2, DIM).tolist())
    with pytest.raises(IndexInUseError, match=f"{path} is already open in another process \\(pid {os.getpid()}\\)"):
        VectorIndex(path=path)
    env = {**os.environ, "PYTHONPATH": str(REPO / "services/core")}
    child = subprocess.run([sys.executable, "-c", CHILD_OPENS, str(path)], capture_output=True, text=True,
                           timeout=120, env=env)
    assert "refused:" in child.stdout and "use a Qdrant server" in child.stdout, child.stdout + child.stderr[-2000:]
    assert first.count() == 2  # the refused openers changed nothing
    first.close()
    child = subprocess.run([sys.executable, "-c", CHILD_OPENS, str(path)], capture_output=True, text=True,
                           timeout=120, env=env)
    assert child.stdout.strip() == "opened", child.stderr[-2000:]


def test_check_reports_a_closed_index(tmp_path):
    index = VectorIndex(path=tmp_path / "qdrant")
    index.upsert("a", chunks(1), [[1.0] * DIM])
    index.check()
    index.close()
    with pytest.raises(RuntimeError, match="closed"):
        index.check()
    with pytest.raises(RuntimeError, match="closed"):
        index.count()


def test_threads_sharing_one_index(index):
    """The gateway shares one index between threads (behind its own lock); the index is also
    safe on its own: concurrent upserts and searches neither fail nor lose points."""
    rng = np.random.default_rng(5)
    vectors = {f"m{t}": rng.normal(size=(50, DIM)).tolist() for t in range(4)}
    errors = []

    def work(media_id):
        try:
            for _ in range(5):
                index.upsert(media_id, chunks(50), vectors[media_id])
                assert all(h.media_id == media_id for h in index.search(vectors[media_id][0], media_id=media_id))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(m,)) for m in vectors]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and index.count() == 200


def clustered(rng, n: int, dim: int, topics: int = 20, subspace: int = 4):
    """Topics, each a centre plus its own low-dimensional spread (as sentence embeddings have:
    iid noise in every dimension has no neighbourhood structure for any ANN index to use)."""
    shapes = np.random.default_rng(99)  # the same topics for the data and the queries
    centres, bases = shapes.normal(size=(topics, dim)), shapes.normal(size=(topics, dim, subspace))
    topic = rng.integers(0, topics, n)
    spread = (bases[topic] @ rng.normal(0, 0.35, (n, subspace, 1)))[:, :, 0]
    return centres[topic] + spread + rng.normal(0, 0.05, (n, dim))


def test_big_collections_search_an_hnsw_graph_with_exact_recall(tmp_path):
    """Past the build threshold the shard builds HNSW; its hits stay those of exact search
    (recall@5 >= 0.99) and its scores stay cosine similarities."""
    dim, per_media = 64, 250
    rng = np.random.default_rng(1)
    data = clustered(rng, 3000, dim)
    index = VectorIndex(path=tmp_path / "qdrant", collection="big", build_threshold=1000)
    try:
        for m in range(len(data) // per_media):
            index.upsert(f"m{m}", chunks(per_media), data[m * per_media:(m + 1) * per_media].tolist())
        info = index._edge.shard("big").info()
        assert info.points_count == 3000 and info.indexed_vectors_count >= 2000  # built past 1000 unindexed
        normalized = data / np.linalg.norm(data, axis=1, keepdims=True)
        queries = clustered(rng, 100, dim)
        found = 0
        for query in queries:
            q = query / np.linalg.norm(query)
            exact = np.argsort(-(normalized @ q))[:5]
            hits = index.search(query.tolist(), top_k=5)
            rows = [int(h.media_id[1:]) * per_media + h.chunk for h in hits]
            found += len(set(rows) & set(exact.tolist()))
            assert np.allclose([h.score for h in hits], normalized[rows] @ q, atol=1e-4)
        assert found / (5 * len(queries)) >= 0.99
        # one media among many: the payload index picks its points, scored exactly
        hits = index.search(queries[0].tolist(), top_k=300, media_id="m3")
        assert len(hits) == per_media and {h.media_id for h in hits} == {"m3"}
    finally:
        index.close()


# -- migration from qdrant-client's local mode ---------------------------------------------------

def write_local_mode(path: Path, rng) -> dict[str, dict]:
    """Data as the previous VectorIndex wrote it: qdrant-client local mode at ``path``."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(path))
    written = {}
    for name, media in (("mediaflow", {"a": 30, "b": 12}), ("other", {"z": 5})):
        client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
        for media_id, n in media.items():
            vectors = rng.normal(size=(n, DIM))
            client.upsert(name, points=[
                models.PointStruct(id=point_id(media_id, c.index), vector=vectors[c.index].tolist(), payload={
                    "media_id": media_id, "title": media_id.upper(), "chunk": c.index, "start": c.start,
                    "end": c.end, "text": c.text, "sentences": [s.model_dump() for s in c.sentences]})
                for c in chunks(n)], wait=True)
            written.setdefault(name, {})[media_id] = vectors
    # a deleted point must stay deleted
    client.delete("mediaflow", points_selector=models.PointIdsList(points=[point_id("b", 11)]), wait=True)
    client.create_collection("empty", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE))
    client.close()
    return written


def test_local_mode_data_is_migrated_once_and_nothing_is_lost(tmp_path, caplog):
    path = tmp_path / "qdrant"
    rng = np.random.default_rng(21)
    written = write_local_mode(path, rng)
    assert (path / "collection" / "mediaflow" / "storage.sqlite").exists()

    with caplog.at_level("INFO", logger="mediaflow.stores.edge"):
        index = VectorIndex(path=path)
    try:
        assert "migrated 46 points in 3 collection(s)" in caplog.text
        assert not (path / "collection").exists() and not (path / "meta.json").exists()
        backup = path / "local-mode"
        assert (backup / "collection" / "mediaflow" / "storage.sqlite").exists()  # kept, renamed
        assert json.loads((backup / "MIGRATED").read_text()) == {
            "collections": {"mediaflow": 41, "other": 5, "empty": 0}}

        reference = Reference()
        reference.upsert("a", 30, written["mediaflow"]["a"])
        reference.upsert("b", 11, written["mediaflow"]["b"][:11])
        assert (index.count(), index.count("a"), index.count("b")) == (41, 30, 11)
        assert_same(index, reference, rng, ["a", "b"])
        hit = index.search(written["mediaflow"]["a"][4].tolist(), top_k=1)[0]
        assert (hit.title, hit.chunk, hit.start, hit.text) == ("A", 4, 40.0, "chunk 4")
        assert hit.sentences[0].text == "s4"
        assert index.for_collection("other").count("z") == 5
        index.for_collection("empty").ensure_collection(8)  # same dimension: accepted
        with pytest.raises(ValueError, match="holds 8-dimensional vectors"):
            index.for_collection("empty").ensure_collection(16)
        # migrated points keep their ids: re-indexing a media overwrites them
        index.upsert("a", chunks(30), rng.normal(size=(30, DIM)).tolist(), title="A2")
        assert index.count("a") == 30
    finally:
        index.close()

    caplog.clear()
    with caplog.at_level("INFO", logger="mediaflow.stores.edge"):
        again = VectorIndex(path=path)
    try:
        assert "migrat" not in caplog.text  # once only
        assert again.count() == 41 and {h.title for h in again.search([1.0] * DIM, top_k=50, media_id="a")} == {"A2"}
    finally:
        again.close()


def test_an_interrupted_migration_resumes_without_duplicates(tmp_path):
    path = tmp_path / "qdrant"
    write_local_mode(path, np.random.default_rng(4))
    VectorIndex(path=path).close()
    (path / "local-mode" / "MIGRATED").unlink()  # as if the process died before the marker
    index = VectorIndex(path=path)
    try:
        assert index.count() == 41 and index.for_collection("other").count() == 5
        assert (path / "local-mode" / "MIGRATED").exists()
    finally:
        index.close()
