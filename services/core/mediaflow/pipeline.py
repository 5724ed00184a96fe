"""The pipeline: ingest a source, run the stages with resume, search and ask.

Every entry point drives this class: the CLI in-process, the gateway's embedded
backend in a worker pool, the worker image one stage at a time
(``mediaflow stage NAME``), the operator stage by stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mediaflow import grounding
from mediaflow.config import Settings, get_settings
from mediaflow.engines import Engines
from mediaflow.errors import InvalidMediaError, MediaflowError, NotFoundError
from mediaflow.models import (
    Answer,
    IndexRecord,
    ProbeResult,
    SearchHit,
    SourceRecord,
    SummaryRecord,
    Transcript,
)
from mediaflow.sources import LocalSource, media_id_for, sha256_file
from mediaflow.spec import MediaJobSpec
from mediaflow.stages import STAGE_BY_NAME, STAGES, Stage
from mediaflow.stages.context import StageContext
from mediaflow.stages.probe import probe_file
from mediaflow.stores import ArtifactStore, VectorIndex
from mediaflow.stores.artifacts import check_media_id

log = logging.getLogger(__name__)

StageStatus = Literal["started", "progress", "done", "cached", "skipped", "failed"]


@dataclass
class StageEvent:
    media_id: str
    stage: str
    status: StageStatus
    fraction: float = 0.0
    seconds: float = 0.0
    message: str | None = None


@dataclass
class ProcessResult:
    media_id: str
    title: str
    events: list[StageEvent] = field(default_factory=list)

    @property
    def timings(self) -> dict[str, tuple[str, float]]:
        return {
            e.stage: (e.status, e.seconds)
            for e in self.events
            if e.status in ("done", "cached", "skipped", "failed")
        }


EventFn = Callable[[StageEvent], None]


class Pipeline:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: ArtifactStore | None = None,
        engines: Engines | None = None,
        index: VectorIndex | None = None,
    ):
        self.settings = settings or get_settings()
        self.store = store or ArtifactStore(self.settings.artifacts_uri)
        self.engines = engines or Engines(self.settings)
        self._index = index

    # -- shared resources ------------------------------------------------------
    def index(self, collection: str | None = None) -> VectorIndex:
        if self._index is None:
            self._index = VectorIndex.from_settings(self.settings)
        return self._index.for_collection(collection or self.settings.collection)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def context(self, media_id: str, spec: MediaJobSpec, progress=None) -> StageContext:
        ctx = StageContext(
            media_id=media_id,
            spec=spec,
            settings=self.settings,
            store=self.store,
            engines=self.engines,
            progress=progress or (lambda fraction: None),
            open_index=lambda: self.index(spec.stages.index.collection),
        )
        return ctx

    # -- ingest ------------------------------------------------------------------
    def ingest(
        self, source: str, *, media_id: str | None = None, title: str | None = None
    ) -> tuple[SourceRecord, ProbeResult]:
        """Validate the source and record it (``source.json`` + ``probe.json``).

        Bad input fails here, before anything is written for it."""
        limits = {
            "max_bytes": self.settings.max_media_bytes,
            "allow_private": self.settings.allow_private_urls,
            "deadline_seconds": self.settings.download_deadline_seconds,
            "media_roots": self.settings.media_roots,
        }
        with LocalSource(source, **limits) as local:
            probe = probe_file(local.path, max_bytes=self.settings.max_media_bytes)
            digest = sha256_file(local.path)
            media_id = check_media_id(media_id or media_id_for(digest))
            stored_as = None
            if local.downloaded:
                stored_as = "source" + local.path.suffix
                self.store.put_file(media_id, stored_as, local.path)
            record = SourceRecord(
                media_id=media_id,
                uri=str(local.path) if not local.downloaded else source,
                title=title or local.title,
                size_bytes=local.path.stat().st_size,
                sha256=digest,
                stored_as=stored_as,
            )
        self.store.write_model(media_id, "source.json", record)
        self.store.write_model(media_id, "probe.json", probe)
        return record, probe

    # -- stages ------------------------------------------------------------------
    def completed(self, media_id: str, stage: Stage, ctx: StageContext) -> bool:
        record = self.store.read_model(media_id, stage.artifact, stage.record)
        if record is None:
            return False
        try:
            return stage.verify is None or bool(stage.verify(ctx, record))
        except Exception:  # an unreadable dependency means: run the stage again
            return False

    def run_stage(
        self,
        media_id: str,
        stage_name: str,
        spec: MediaJobSpec,
        *,
        on_event: EventFn | None = None,
        force: bool = False,
    ) -> StageEvent:
        stage = STAGE_BY_NAME[stage_name]
        emit = on_event or (lambda event: None)

        def progress(fraction: float) -> None:
            emit(StageEvent(media_id, stage.name, "progress", fraction=max(0.0, min(1.0, fraction))))

        ctx = self.context(media_id, spec, progress)
        if not force and self.completed(media_id, stage, ctx):
            event = StageEvent(media_id, stage.name, "cached", fraction=1.0)
            emit(event)
            return event
        emit(StageEvent(media_id, stage.name, "started"))
        started = time.perf_counter()
        try:
            record = stage.run(ctx)
        except MediaflowError as exc:
            emit(StageEvent(media_id, stage.name, "failed", seconds=time.perf_counter() - started,
                            message=str(exc)))
            raise
        seconds = time.perf_counter() - started
        if record is None:
            self.store.delete(media_id, stage.artifact)
            event = StageEvent(media_id, stage.name, "skipped", fraction=1.0, seconds=seconds)
        else:
            self.store.write_model(media_id, stage.artifact, record)
            event = StageEvent(media_id, stage.name, "done", fraction=1.0, seconds=seconds)
        emit(event)
        return event

    def process(
        self,
        source: str,
        *,
        spec: MediaJobSpec | None = None,
        media_id: str | None = None,
        title: str | None = None,
        until: str | None = None,
        on_event: EventFn | None = None,
        options: dict | None = None,
    ) -> ProcessResult:
        """Ingest ``source`` and run every stage. ``spec`` overrides everything;
        otherwise the default spec, with ``options`` ({language, transcription}) applied."""
        emit = on_event or (lambda event: None)
        result = ProcessResult(media_id="", title=title or source)

        def record(event: StageEvent) -> None:
            if event.status != "progress":
                result.events.append(event)
            emit(event)

        started = time.perf_counter()
        record(StageEvent("", "probe", "started"))
        try:
            src, _ = self.ingest(source, media_id=media_id, title=title)
        except MediaflowError as exc:
            record(StageEvent("", "probe", "failed", seconds=time.perf_counter() - started,
                              message=str(exc)))
            raise
        result.media_id, result.title = src.media_id, src.title
        record(StageEvent(src.media_id, "probe", "done", 1.0, time.perf_counter() - started))
        spec = spec or self.default_spec(src, **(options or {}))
        self.store.write_text(src.media_id, "job.json", spec.model_dump_json(by_alias=True, indent=2))
        self._warm_engines(src.media_id, spec, until)
        for stage in STAGES[1:]:
            try:
                self.run_stage(src.media_id, stage.name, spec, on_event=record)
            except InvalidMediaError:
                # The input was unusable after all (e.g. truncated): keep nothing of it.
                self.delete(src.media_id)
                raise
            if stage.name == "extract_audio":
                self._prepare_summary(src.media_id, spec, until)
            if stage.name == until:
                break
        return result

    def _warm_engines(self, media_id: str, spec: MediaJobSpec, until: str | None) -> bool:
        """Load the transcriber and the embedder this run will need in the background
        (``Engines.warm``): the input has passed the probe, and loading them is seconds of
        imports that otherwise sit on the critical path. Only those whose stage will run; the
        embedder of the language given (English's when it is to be detected: most media)."""
        if not self.settings.warm_engines:
            return False
        order = [stage.name for stage in STAGES]
        last = order.index(until) if until in order else len(order) - 1
        ctx = self.context(media_id, spec)

        def will_run(name: str) -> bool:
            return order.index(name) <= last and not self.completed(media_id, STAGE_BY_NAME[name], ctx)

        transcribe, embed = will_run("transcribe"), will_run("embed")
        if not (transcribe or embed):
            return False
        self.engines.warm(transcriber=transcribe, embedder_language=spec.language if embed else False)
        return True

    def _prepare_summary(self, media_id: str, spec: MediaJobSpec, until: str | None) -> bool:
        """Begin the LLM server's start now, in the background, when this run will summarize:
        its ~30 s start then overlaps transcription. Called once the audio is decoded, not
        before: a file that probes well can still turn out truncated there, and bad input
        must start nothing (the decode is ~1 % of a run). Not when the summary is done
        already (a rerun), nor when the run stops earlier (``until``)."""
        if not (self.settings.llm_early_start and self.settings.summary and spec.stages.summary.enabled):
            return False
        if until is not None and until != "summarize":
            return False
        summarize = STAGE_BY_NAME["summarize"]
        if self.completed(media_id, summarize, self.context(media_id, spec)):
            return False
        return self.engines.prepare_chat()

    def default_spec(
        self, src: SourceRecord, *, language: str | None = None, transcription: dict | None = None
    ) -> MediaJobSpec:
        uri = src.uri if "://" in src.uri or src.uri.startswith("/") else f"/{src.uri}"
        s = self.settings
        return MediaJobSpec.model_validate(
            {
                "source": {"uri": uri, "title": src.title},
                "language": language,
                "stages": {
                    "transcription": transcription or {},
                    "chunking": {"seconds": s.chunk_seconds, "overlapSeconds": s.chunk_overlap_seconds},
                    "index": {"collection": s.collection},
                    "summary": {"enabled": s.summary},
                },
            }
        )

    def spec_for(self, media_id: str) -> MediaJobSpec:
        raw = self.store.read_bytes(media_id, "job.json") if self.store.exists(media_id, "job.json") else None
        if raw is None:
            src = self._source(media_id)
            return self.default_spec(src)
        return MediaJobSpec.model_validate_json(raw)

    # -- reading ---------------------------------------------------------------------
    def _source(self, media_id: str) -> SourceRecord:
        record = self.store.read_model(check_media_id(media_id), "source.json", SourceRecord)
        if record is None:
            raise NotFoundError(f"no such media: {media_id}")
        return record

    def transcript(self, media_id: str) -> Transcript:
        self._source(media_id)
        transcript = self.store.read_model(media_id, "transcript.json", Transcript)
        if transcript is None:
            raise NotFoundError(f"media {media_id} has no transcript yet")
        return transcript

    def list_media(self) -> list[dict]:
        items = []
        for media_id in self.store.list_media():
            src = self.store.read_model(media_id, "source.json", SourceRecord)
            if src is None:
                continue
            probe = self.store.read_model(media_id, "probe.json", ProbeResult)
            done = [s.name for s in STAGES if self.store.exists(media_id, s.artifact)]
            summary = self.store.read_model(media_id, "summary.json", SummaryRecord)
            items.append(
                {
                    "media_id": media_id,
                    "title": src.title,
                    "duration": probe.duration if probe else None,
                    "stages_done": done,
                    "collection": (collection := self.media_collection(media_id)),
                    "points": self.index(collection).count(media_id),
                    "summary": summary.text if summary else None,
                }
            )
        return items

    def media_collection(self, media_id: str) -> str:
        """Where the media's points are: the collection ``index.json`` names; before it is
        indexed, the one its language picks under its spec's base collection."""
        record = self.store.read_model(media_id, "index.json", IndexRecord)
        if record is not None:
            return record.collection
        transcript = self.store.read_model(media_id, "transcript.json", Transcript)
        return self.engines.collection_for(self.spec_for(media_id).stages.index.collection,
                                           transcript.language if transcript else None)

    def points(self, media_id: str) -> int:
        """How many points of the media the index holds (in its own collection)."""
        return self.index(self.media_collection(media_id)).count(media_id)

    def delete(self, media_id: str) -> bool:
        """The media's artifacts and its points in every collection they could be in: each
        embedder's under the settings' and the spec's base collection, and the one
        ``index.json`` names."""
        check_media_id(media_id)
        bases = {self.settings.collection}
        if self.store.exists(media_id, "job.json"):
            bases.add(self.spec_for(media_id).stages.index.collection)
        collections = {name for base in bases for name, _ in self.engines.embedders(base)}
        record = self.store.read_model(media_id, "index.json", IndexRecord)
        if record is not None:
            collections.add(record.collection)
        for name in sorted(collections):
            self.index(name).delete_media(media_id)
        return self.store.delete_media(media_id)

    # -- knowledge ---------------------------------------------------------------------
    def search(
        self, query: str, *, top_k: int = 5, media_id: str | None = None,
        collection: str | None = None, seek: bool = True, lock=None,
    ) -> list[SearchHit]:
        """The ``top_k`` chunks closest to ``query``, each with its ``seek``: the start of its
        sentence closest to the query (``mediaflow.seek``; ``seek=False``: the chunk's start).

        One media: its collection, with the embedder it was indexed with. The whole library
        (``collection``: the base collection, default the settings'): every embedder's
        collection that holds points, the query embedded once per embedder, each hit's
        ``seek`` placed with its own embedder; hits of several collections are then ranked on
        one scale (``merge_hits``).

        ``lock``, when given, is held around the index access only (the gateway shares one
        embedded Qdrant client between threads); embedding never holds it."""
        import contextlib

        from mediaflow import seek as seeking

        if not query.strip():
            raise MediaflowError("empty query")

        def locked():
            return lock if lock is not None else contextlib.nullcontext()

        if media_id:
            self._source(media_id)
            base = self.spec_for(media_id).stages.index.collection
            name = self.media_collection(media_id)
            sources = [(name, lambda: self.engines.embedder_of_collection(base, name))]
        else:
            with locked():
                # a collection with no points is not searched: its embedder is never loaded
                sources = [(name, get) for name, get in self.engines.embedders(collection or self.settings.collection)
                           if self.index(name).count() > 0]
        found: list[tuple[object, list[float], list[SearchHit]]] = []
        for name, get in sources:
            embedder = get()
            [vector] = embedder.embed([query])
            with locked():
                hits = self.index(name).search(vector, top_k=top_k, media_id=media_id)
            for hit in hits:
                hit.model = hit.indexed_with = embedder.name
            if seek:
                seeking.place(vector, hits, embedder, self.store)
            if hits:
                found.append((embedder, vector, hits))
        if len(found) <= 1:
            return found[0][2] if found else []
        return self.merge_hits(query, found, top_k)

    def merge_hits(self, query: str, found, top_k: int) -> list[SearchHit]:
        """The ``top_k`` best of the hits of several collections (``found``: each collection's
        embedder, query vector and hits), every one scored by the multilingual embedder.

        Why not reciprocal rank fusion or per-collection normalisation: both are made for lists
        that rank the same documents, or that share a score distribution. Here each collection
        holds other media, so either would give each collection's best hit the same fused
        score (a German query would rank the best English chunk as high as the German passage
        it is about), and raw cosines are not comparable (on bench/multilingual_embeddings.py a
        matching pair scores 0.61 on average for MiniLM, 0.40 for USE). The multilingual
        embedder reads every language the collections hold, so its cosine of the query and
        each candidate chunk ranks them all on one scale; it re-embeds only the other
        collections' candidates (``top_k`` chunks each; USE encodes ~1,000 sentences/s)."""
        judge = self.engines.multilingual_embedder
        query_vector = next((v for e, v, _ in found if e is judge), None)
        if query_vector is None:
            [query_vector] = judge.embed([query])
        hits = [hit for _, _, group in found for hit in group]
        rescore = [hit for hit in hits if hit.model != judge.name]
        if rescore:
            unit_query = grounding.unit([query_vector])[0]
            for hit, vector in zip(rescore, grounding.unit(judge.embed([h.text for h in rescore])), strict=True):
                hit.score, hit.model = float(vector @ unit_query), judge.name
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits[:top_k]

    def ask(
        self, question: str, *, media_id: str | None = None, top_k: int = 4,
        collection: str | None = None,
    ) -> Answer:
        """An answer from the ``top_k`` excerpts closest to ``question`` only (``answer``)."""
        hits = self.search(question, top_k=top_k, media_id=media_id, collection=collection)
        return self.answer(question, hits)

    def answer(self, question: str, hits: Sequence[SearchHit]) -> Answer:
        """The LLM's answer from ``hits`` (numbered excerpts), kept only where an excerpt's
        sentence supports it (``mediaflow.grounding.ground_answer``); citations are the
        supporting excerpts. Touches no index (the gateway calls it without its index lock)."""
        hits = list(hits)
        raw = self.engines.chat.complete(answer_prompt(question, hits), max_tokens=200) if hits else ""
        return grounding.ground_answer(
            question, raw, hits, self.answer_embedder(hits), store=self.store,
            min_similarity=self.settings.grounding_min_similarity,
            min_coverage=self.settings.grounding_min_coverage,
        )

    def answer_embedder(self, hits: Sequence[SearchHit]):
        """The embedder an answer's support check compares sentences with: the one the
        excerpts' media were indexed with; when any was indexed with the multilingual one,
        that one (the answer may be in another language than an excerpt, which it compares
        across languages and the English one cannot)."""
        multilingual = self.engines.multilingual_name
        if multilingual and any(hit.indexed_with == multilingual for hit in hits):
            return self.engines.multilingual_embedder
        return self.engines.embedder


ANSWER_SYSTEM_PROMPT = (
    "Answer the question using only the numbered excerpts of a recording. Answer in one or two "
    "short sentences. After each sentence, write the number of the excerpt it comes from in "
    "brackets, like [2]. If the excerpts do not answer the question, say so."
)


def answer_prompt(question: str, hits: Sequence[SearchHit]) -> list[dict[str, str]]:
    """The excerpts numbered [1], [2], … (``SentenceSupport.cited`` refers to these numbers)."""
    excerpts = "\n".join(f"[{n}] {h.text}" for n, h in enumerate(hits, start=1))
    return [
        {"role": "system", "content": ANSWER_SYSTEM_PROMPT},
        {"role": "user", "content": f"Excerpts:\n{excerpts}\n\nQuestion: {question}"},
    ]
