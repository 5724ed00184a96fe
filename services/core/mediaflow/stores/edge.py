"""The embedded vector index's storage: Qdrant Edge shards, one per collection, in one directory.

Layout under the index path (``settings.qdrant_path``)::

    .lock               flock held while a process has the index open (the same file
                        qdrant-client's local mode locked, so old and new versions exclude
                        each other too)
    shards/<collection>/  one ``qdrant_edge.EdgeShard`` (WAL + segments)
    local-mode/         qdrant-client local-mode data moved aside by the one-time migration,
                        with ``MIGRATED`` (what was copied) once the copy is complete

Qdrant Edge locks each shard's WAL, so a second opener (thread or process) would fail on
its first shard with "Can't init WAL: WouldBlock"; the directory lock turns that into one
clear :class:`IndexInUseError` at open time, for every collection at once.

Search: each shard keeps new points in a plain segment (exact search, SIMD in Rust); once
``build_threshold`` points are unindexed, :meth:`EdgeStore.upsert` builds their HNSW graph
(``optimize``). Qdrant's optimizer merges small indexed segments up
to ``MERGE_CAP_POINTS`` (a merge rebuilds the merged graph), so a build's cost stays
bounded however large the collection grows, and a search visits few segments. A filter on one
``media_id`` (keyword payload index) selects few points, which Qdrant scores exactly.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from mediaflow.errors import MediaflowError

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
LEGACY_ITEMS = ("collection", "meta.json")  # what qdrant-client's local mode writes
LEGACY_BACKUP_DIR = "local-mode"
MIGRATED_MARKER = "MIGRATED"
# A safe directory name: IndexOptions.collection's characters, room for an embedder suffix
# (``mediaflow.engines.collection_for``), dots inside but never first (no "." or "..").
COLLECTION_NAME = re.compile(r"^[a-zA-Z0-9_-][a-zA-Z0-9_.-]{0,199}$")

# HNSW: m=16 and ef_construct=100 are Qdrant's defaults; hnsw_ef=128 at query time keeps
# recall@5 >= 0.99 against exact search on random 384-d vectors (bench/index.py).
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
DEFAULT_HNSW_EF = 128
# Unindexed points that trigger an HNSW build: below it search is exact (~2 ms at 20 k
# 384-d points); a build of 20 k points takes ~30 s on 2 busy cores and holds the GIL.
DEFAULT_BUILD_THRESHOLD = 20_000
MERGE_CAP_POINTS = 100_000


class IndexInUseError(MediaflowError):
    """Another process (or another VectorIndex in this one) has the embedded index open."""

    permanent = False
    reason = "IndexInUse"


class IndexMigrationError(MediaflowError):
    reason = "IndexMigrationFailed"


def check_collection_name(name: str) -> str:
    if not COLLECTION_NAME.match(name or ""):
        raise ValueError(f"invalid collection name {name!r}: up to 200 letters, digits, '_', '-' "
                         "and '.' (not first)")
    return name


def _kilobytes(points: int, dim: int) -> int:
    """Qdrant sizes its optimizer thresholds in KB of float32 vectors."""
    return max(1, points * dim * 4 // 1024)


def shard_config(dim: int, build_threshold: int) -> qe.EdgeConfig:
    threshold_kb = _kilobytes(build_threshold, dim)
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
        hnsw_config=qe.HnswIndexConfig(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT,
                                       full_scan_threshold=threshold_kb),
        optimizers=qe.EdgeOptimizersConfig(
            indexing_threshold=threshold_kb,
            # Merged segments are capped: a merge rebuilds the merged graph, so the cap bounds
            # a build's cost, and few large segments keep searches at 1 M points fast.
            max_segment_size=_kilobytes(max(build_threshold, MERGE_CAP_POINTS), dim),
        ),
    )


class EdgeStore:
    """All collections of one embedded index path; shared by ``VectorIndex.for_collection``.

    Every shard call holds ``self.lock``: Qdrant Edge holds the GIL during its calls, so the
    lock costs no parallelism, and it makes open/create/close race-free between threads."""

    def __init__(self, path: Path, *, build_threshold: int = DEFAULT_BUILD_THRESHOLD,
                 hnsw_ef: int = DEFAULT_HNSW_EF):
        self.path = Path(path)
        self.build_threshold = build_threshold
        self.hnsw_ef = hnsw_ef
        self.lock = threading.RLock()
        self._shards: dict[str, qe.EdgeShard] = {}
        self._dims: dict[str, int] = {}
        self.build_seconds = 0.0  # time spent building HNSW graphs (bench/index.py reports it)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_file = _acquire_directory_lock(self.path)
        try:
            (self.path / SHARDS_DIR).mkdir(exist_ok=True)
            migrate_local_mode(self)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self._lock_file is None

    def _shard_path(self, name: str) -> Path:
        return self.path / SHARDS_DIR / check_collection_name(name)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"the vector index at {self.path} is closed")

    def exists(self, name: str) -> bool:
        with self.lock:
            self._check_open()
            return name in self._shards or (self._shard_path(name) / "edge_config.json").exists()

    def shard(self, name: str) -> qe.EdgeShard | None:
        """The collection's shard, loaded on first use; None if it was never created."""
        with self.lock:
            self._check_open()
            if (shard := self._shards.get(name)) is not None:
                return shard
            path = self._shard_path(name)
            if not (path / "edge_config.json").exists():
                return None
            started = time.perf_counter()
            shard = self._shards[name] = qe.EdgeShard.load(str(path))
            log.debug("loaded shard %s (%d points) in %.2f s", path, shard.info().points_count,
                      time.perf_counter() - started)
            return shard

    def create(self, name: str, dim: int) -> qe.EdgeShard:
        """The collection's shard, created for ``dim``-dimensional vectors if missing."""
        with self.lock:
            if (shard := self.shard(name)) is not None:
                existing = self.dim(name)
                if existing != dim:
                    raise ValueError(f"collection {name!r} holds {existing}-dimensional vectors, not {dim}")
                return shard
            path = self._shard_path(name)
            if path.exists():  # a creation interrupted before its config was written: nothing in it
                shutil.rmtree(path)
            shard = qe.EdgeShard.create(str(path), shard_config(dim, self.build_threshold))
            # Keyword index on media_id: filtered search, count and delete use it, not a scan.
            shard.update(qe.UpdateOperation.create_field_index(
                "media_id", qe.KeywordIndexParams(is_tenant=True)))
            shard.flush()
            self._shards[name] = shard
            return shard

    def dim(self, name: str) -> int:
        if name not in self._dims:
            config = json.loads((self._shard_path(name) / "edge_config.json").read_text())
            self._dims[name] = int(config["vectors"][""]["size"])
        return self._dims[name]

    def upsert(self, name: str, points: Sequence[qe.Point], *, batch_size: int = 1024) -> None:
        with self.lock:
            shard = self._shards[name]
            for lo in range(0, len(points), batch_size):
                shard.update(qe.UpdateOperation.upsert_points(list(points[lo:lo + batch_size])))
            self._build_if_due(name, shard)
            # The WAL already makes the write survive a crash; the flush persists the
            # segments so the WAL is truncated and a reopen does not replay it.
            shard.flush()

    def _build_if_due(self, name: str, shard: qe.EdgeShard) -> None:
        info = shard.info()
        unindexed = info.points_count - info.indexed_vectors_count
        if unindexed >= self.build_threshold:
            started = time.perf_counter()
            shard.optimize()
            seconds = time.perf_counter() - started
            self.build_seconds += seconds
            log.info("built the HNSW index of %d points of collection %r in %.1f s", unindexed, name, seconds)

    def optimize(self, name: str) -> None:
        """Build the HNSW graph for every segment past the threshold now (benchmarks, bulk loads)."""
        with self.lock:
            if (shard := self.shard(name)) is not None:
                started = time.perf_counter()
                shard.optimize()
                self.build_seconds += time.perf_counter() - started
                shard.flush()

    def update(self, name: str, operation: qe.UpdateOperation) -> None:
        with self.lock:
            if (shard := self.shard(name)) is not None:
                shard.update(operation)
                shard.flush()

    def query(self, name: str, request: qe.QueryRequest) -> list[Any]:
        with self.lock:
            shard = self.shard(name)
            return [] if shard is None else shard.query(request)

    def count(self, name: str, request: qe.CountRequest) -> int:
        with self.lock:
            shard = self.shard(name)
            return 0 if shard is None else shard.count(request)

    def check(self) -> None:
        """Raise unless the index can serve: open, its directory there, its shards answering."""
        with self.lock:
            self._check_open()
            if not (self.path / SHARDS_DIR).is_dir():
                raise FileNotFoundError(f"{self.path / SHARDS_DIR} is gone")
            for shard in self._shards.values():
                shard.info()

    def close(self) -> None:
        with self.lock:
            shards, self._shards = self._shards, {}
            for shard in shards.values():
                shard.flush()
                shard.close()
            if self._lock_file is not None:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                self._lock_file.close()
                self._lock_file = None


def _acquire_directory_lock(path: Path):
    handle = open(path / ".lock", "a+")  # noqa: SIM115 - held open for the store's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise IndexInUseError(
            f"the embedded vector index at {path} is already open in another process"
            f"{f' (pid {holder})' if holder.isdigit() else ''} or by another VectorIndex in this one: "
            "an embedded index admits one process; share it (for_collection) or use a Qdrant server "
            "(MEDIAFLOW_QDRANT_URL) for concurrent access") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


# -- the one-time migration from qdrant-client's local mode ---------------------------------------

def migrate_local_mode(store: EdgeStore) -> None:
    """Copy qdrant-client local-mode data at the index path into Edge shards, once.

    The local-mode files are first moved into ``local-mode/`` (renames, so nothing is copied
    and the original is never touched again), then read there with qdrant-client and
    written into the shards; ``local-mode/MIGRATED`` records the counts once every
    collection's copy is verified. An interrupted migration resumes on the next open: the
    upserts are idempotent (same point ids)."""
    root = store.path
    backup = root / LEGACY_BACKUP_DIR
    legacy = [root / item for item in LEGACY_ITEMS if (root / item).exists()]
    if legacy:
        backup.mkdir(exist_ok=True)
        for item in legacy:
            item.rename(backup / item.name)
    if not backup.is_dir() or (backup / MIGRATED_MARKER).exists():
        return

    from qdrant_client import QdrantClient

    started = time.perf_counter()
    log.warning("migrating the qdrant-client local-mode index at %s to Qdrant Edge shards (once)", root)
    try:
        client = QdrantClient(path=str(backup))
    except Exception as exc:
        raise IndexMigrationError(f"cannot read the local-mode index moved to {backup}: {exc}") from exc
    counts: dict[str, int] = {}
    try:
        for description in client.get_collections().collections:
            counts[description.name] = _migrate_collection(store, client, description.name)
    except IndexMigrationError:
        raise
    except Exception as exc:
        raise IndexMigrationError(
            f"migrating {backup} to Qdrant Edge failed ({type(exc).__name__}: {exc}); the old data "
            f"is intact there and the next open retries") from exc
    finally:
        client.close()
    (backup / MIGRATED_MARKER).write_text(json.dumps({"collections": counts}, indent=1) + "\n")
    log.warning("migrated %d points in %d collection(s) %s in %.1f s; the old files stay in %s",
                sum(counts.values()), len(counts), sorted(counts), time.perf_counter() - started, backup)


def _migrate_collection(store: EdgeStore, client, name: str) -> int:
    params = client.get_collection(name).config.params.vectors
    if isinstance(params, dict):
        raise IndexMigrationError(f"local-mode collection {name!r} has named vectors {sorted(params)}: "
                                  "mediaflow only ever wrote one unnamed vector")
    expected = client.count(name, exact=True).count
    store.create(name, params.size)
    offset = None
    while True:
        records, offset = client.scroll(name, limit=1024, offset=offset, with_vectors=True, with_payload=True)
        if records:
            store.upsert(name, [qe.Point(id=str(r.id), vector=list(r.vector), payload=r.payload or {})
                                for r in records])
        if offset is None:
            break
    copied = store.count(name, qe.CountRequest(exact=True))
    if copied != expected:
        raise IndexMigrationError(f"collection {name!r}: {expected} points in local mode but {copied} "
                                  "in the Edge shard after the copy")
    log.info("migrated collection %r: %d points", name, copied)
    return copied
