"""Benchmark: the gateway's search and upload vs the raw libraries, measured in the same run.

    python bench/gateway.py [--sizes 10000 100000] [--queries 200] [--upload-mb 150]

Search: the pipeline's embedded ``VectorIndex`` (Qdrant Edge shards) filled with N
chunks (vectors: real MiniLM embeddings of a few hundred sentences, tiled with
small random perturbations, so the index has N distinct realistic points).
- raw: ``qdrant_edge.EdgeShard.query`` on the same shard with a precomputed query vector;
- gateway: ``POST /v1/search`` through ``httpx.ASGITransport`` (auth, validation,
  query embedding with MiniLM, the embedded index's search, seek refinement, JSON).
Upload: ``POST /v1/media`` multipart of a generated media file of ~``--upload-mb`` MB
vs writing the same bytes to disk in 1 MiB blocks.
Ends with ``BENCH`` lines; targets: gateway search p95 < 50 ms (at 10 k and 100 k chunks) and
at most 1.5x the raw embed+Qdrant p95; upload >= 125 MB/s (a saturated 1 Gbit/s link).
The machine's load average is printed: on a shared 2-core box it dominates the latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SEARCH_P95_TARGET_MS = 50.0
SEARCH_OVERHEAD_TARGET = 1.5  # gateway p95 / (raw query embedding + raw Qdrant) p95
UPLOAD_TARGET_MB_S = 125.0  # a saturated 1 Gbit/s link: uploads must never be the bottleneck
QUERIES = ["who cleans the lighthouse lamp", "fishermen load their nets before sunrise",
           "earthquakes under the old volcano", "children plant mangrove trees",
           "bread baked in a stone oven", "the milky way at night", "honeybees in the orchard"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def fill_index(index, embedder, n: int) -> None:
    import numpy as np

    from mediaflow.models import Chunk
    from mediaflow.samples import PASSAGES

    sentences = [s.strip() + "." for p in PASSAGES for s in p.split(".") if s.strip()]
    base = np.asarray(embedder.embed(sentences * 4), dtype=np.float32)
    rng = np.random.default_rng(0)
    per_media = 500
    for lo in range(0, n, per_media):
        count = min(per_media, n - lo)
        picks = rng.integers(0, len(base), count)
        vectors = base[picks] + rng.normal(0, 0.02, (count, base.shape[1])).astype(np.float32)
        chunks = [Chunk(index=i, start=i * 12.0, end=i * 12.0 + 15.0, text=sentences[picks[i] % len(sentences)])
                  for i in range(count)]
        index.upsert(f"bench{lo // per_media:06d}", chunks, vectors.tolist(), title="bench", batch_size=500)


async def time_gateway_search(client, auth, queries: int) -> list[float]:
    times = []
    for i in range(queries):
        body = {"query": QUERIES[i % len(QUERIES)], "top_k": 5}
        t = time.perf_counter()
        response = await client.post("/v1/search", json=body, headers=auth)
        times.append((time.perf_counter() - t) * 1000)
        assert response.status_code == 200 and response.json()["hits"], response.text
    return times


def time_raw_search(index, embedder, queries: int) -> list[float]:
    import qdrant_edge as qe

    shard = index._edge.shard(index.collection)  # the raw engine on the very same shard
    vectors = embedder.embed(QUERIES)
    times = []
    for i in range(queries):
        t = time.perf_counter()
        shard.query(qe.QueryRequest(limit=5, query=qe.Query.Nearest(list(vectors[i % len(vectors)])),
                                    with_payload=True, params=qe.SearchParams(hnsw_ef=index._edge.hnsw_ef)))
        times.append((time.perf_counter() - t) * 1000)
    return times


def time_raw_embed_query(embedder, queries: int) -> list[float]:
    times = []
    for i in range(queries):
        t = time.perf_counter()
        embedder.embed([QUERIES[i % len(QUERIES)]])
        times.append((time.perf_counter() - t) * 1000)
    return times


def make_upload_file(path: Path, megabytes: int) -> None:
    # Raw video in Matroska: large bytes fast, and a real media file (sniffed + ffprobed).
    seconds = max(1, megabytes * 1_000_000 // (320 * 240 * 3 // 2 * 25))
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:v", "rawvideo",
                    "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", "-shortest", str(path)], check=True)


def time_raw_write(source: Path, target: Path) -> float:
    t = time.perf_counter()
    with open(source, "rb") as src, open(target, "wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            dst.write(block)
    seconds = time.perf_counter() - t
    target.unlink()
    return seconds


async def run(args) -> list[tuple[str, float, str, float]]:
    import httpx

    from mediaflow.config import Settings
    from mediaflow.pipeline import Pipeline
    from mediaflow.stores import VectorIndex
    from mediaflow_gateway.backends.embedded import EmbeddedBackend
    from mediaflow_gateway.main import create_app
    from mediaflow_gateway.settings import GatewaySettings

    key = "bench-key"
    auth = {"Authorization": f"Bearer {key}"}
    results = []
    rows = []
    with tempfile.TemporaryDirectory(prefix="mediaflow-bench-") as tmp:
        tmp = Path(tmp)
        shared_engines = None
        for n in args.sizes:
            core = Settings(data_dir=tmp / f"data-{n}", summary=False, threads=2)
            pipeline = Pipeline(core, index=VectorIndex.from_settings(core))
            if shared_engines is not None:
                pipeline.engines = shared_engines
            shared_engines = pipeline.engines
            embedder = pipeline.engines.embedder
            t = time.perf_counter()
            fill_index(pipeline.index(), embedder, n)
            fill_seconds = time.perf_counter() - t
            settings = GatewaySettings(api_keys=[key], rate_limit_per_minute=1_000_000)
            app = create_app(settings, EmbeddedBackend(settings, pipeline, owns_pipeline=True))
            async with app.router.lifespan_context(app):
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
                    await time_gateway_search(client, auth, 10)  # warm-up
                    time_raw_search(pipeline.index(), embedder, 10)
                    raw = time_raw_search(pipeline.index(), embedder, args.queries)
                    embed = time_raw_embed_query(embedder, args.queries)
                    gateway = await time_gateway_search(client, auth, args.queries)
                    if n == args.sizes[0]:
                        results.append(await upload_bench(client, auth, tmp, args.upload_mb, app))
            rows.append((n, fill_seconds, raw, embed, gateway))

    print(f"\nsearch, top_k=5, {args.queries} queries per size (ms)")
    print(f"{'chunks':>8} {'fill s':>7} {'raw qdrant-edge p50/p95':>24} {'raw embed+edge p95':>19} "
          f"{'gateway p50/p95':>17} {'ratio p95':>10}")
    bench_lines = []
    for n, fill_seconds, raw, embed, gateway in rows:
        raw_total_p95 = percentile([a + b for a, b in zip(raw, embed, strict=True)], 95)
        g50, g95 = percentile(gateway, 50), percentile(gateway, 95)
        print(f"{n:>8} {fill_seconds:>7.1f} {percentile(raw, 50):>13.1f} / {percentile(raw, 95):>8.1f} "
              f"{raw_total_p95:>19.1f} {g50:>7.1f} / {g95:>7.1f} {g95 / raw_total_p95:>10.2f}")
        label = f"{n // 1000}k"
        bench_lines.append((f"gateway_search_p95_ms_{label}", g95, "<", SEARCH_P95_TARGET_MS))
        bench_lines.append((f"gateway_search_p95_vs_raw_{label}", g95 / raw_total_p95, "<=", SEARCH_OVERHEAD_TARGET))
    upload = results[0]
    print(f"\nupload of {upload['mb']:.0f} MB: gateway {upload['gateway_mb_s']:.0f} MB/s, "
          f"raw disk write {upload['raw_mb_s']:.0f} MB/s, ratio {upload['gateway_mb_s'] / upload['raw_mb_s']:.2f}")
    bench_lines.append(("gateway_upload_mb_s", upload["gateway_mb_s"], ">=", UPLOAD_TARGET_MB_S))
    return bench_lines


async def upload_bench(client, auth, tmp: Path, megabytes: int, app) -> dict:
    media = tmp / "upload.mkv"
    make_upload_file(media, megabytes)
    size = media.stat().st_size
    gateway, raw = [], []
    for _ in range(2):
        raw.append(time_raw_write(media, tmp / "raw-copy.bin"))
        with open(media, "rb") as fh:
            t = time.perf_counter()
            response = await client.post("/v1/media", headers=auth, files={"file": ("upload.mkv", fh, "video/x-matroska")})
            gateway.append(time.perf_counter() - t)
        assert response.status_code == 202, response.text
        # let the job (a tone: no speech) finish before the next round, so rounds do not overlap
        events = await client.get(response.json()["events_url"], headers=auth)
        assert '"phase":"Succeeded"' in events.text.replace(" ", ""), events.text[-500:]
        assert (await client.delete(f"/v1/media/{response.json()['media_id']}", headers=auth)).status_code == 204
    mb = size / 1e6
    return {"mb": mb, "gateway_mb_s": mb / min(gateway), "raw_mb_s": mb / min(raw)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--upload-mb", type=int, default=150)
    args = parser.parse_args()
    lines = asyncio.run(run(args))
    print(f"\nload average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    for name, value, op, target in lines:
        ok = {"<": value < target, "<=": value <= target, ">=": value >= target}[op]
        print(f"BENCH {name} {value:.2f} target {op}{target:g} {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
