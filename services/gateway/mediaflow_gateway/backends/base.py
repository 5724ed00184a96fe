"""The backend interface, and the reads both backends share.

Jobs differ (in-process worker pool vs MediaJob objects); reading results does
not: transcripts and summaries come from the artifact store, search and ask go
through the core ``Pipeline`` (Qdrant + the configured embedder and LLM).
Pipeline calls block, so they run in threads; the embedded Qdrant client is not
safe across threads, so every index access holds ``index_lock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from mediaflow.errors import InvalidSourceError, NotFoundError
from mediaflow.models import Answer, ProbeResult, SearchHit, SourceRecord, SummaryRecord, Transcript
from mediaflow.pipeline import Pipeline
from mediaflow.sources import check_under_roots, media_id_for
from mediaflow.spec import MediaJobSpec
from mediaflow.stages import STAGES
from mediaflow_gateway.api.schemas import JobView
from mediaflow_gateway.settings import GatewaySettings
from mediaflow_gateway.sniff import MIME_BY_EXTENSION

log = logging.getLogger(__name__)
STAGING_CLEAN_SECONDS = 60.0  # how often the staging area is checked for dead uploads


@dataclass
class MediaInfo:
    media_id: str
    title: str
    duration: float | None
    has_video: bool
    stages_done: list[str]
    language: str | None = None  # of the transcript (single-media reads only: listings skip it)
    language_probability: float | None = None  # detected with this probability; None when given


@dataclass
class SourceFile:
    open: Callable[[], IO[bytes]]
    size: int
    mime: str
    extension: str = ".bin"  # ".mp4": a known, safe suffix (for Content-Disposition)


class Backend(ABC):
    kind: str

    def __init__(self, settings: GatewaySettings, pipeline: Pipeline, *, owns_pipeline: bool = False):
        self.settings = settings
        self.pipeline = pipeline
        self.owns_pipeline = owns_pipeline
        self.index_lock = threading.Lock()
        self._submit_locks: dict[str, list] = {}  # job id -> [asyncio.Lock, users]
        self._janitor: asyncio.Task | None = None

    @property
    def store(self):
        return self.pipeline.store

    @property
    def max_upload_bytes(self) -> int:
        return self.settings.max_upload_bytes or self.pipeline.settings.max_media_bytes

    async def start(self) -> None:
        log.info("%s backend: artifacts at %s", self.kind, self.store.root_uri)
        await asyncio.to_thread(self._clean_staging)
        self._janitor = asyncio.create_task(self._clean_periodically(), name="staging-janitor")

    async def _clean_periodically(self) -> None:
        while True:
            await asyncio.sleep(STAGING_CLEAN_SECONDS)
            try:
                await asyncio.to_thread(self._clean_staging)
            except Exception:  # noqa: BLE001 - a store hiccup: the next round retries
                log.warning("cleaning the upload staging area failed", exc_info=True)

    def _clean_staging(self) -> list[str]:
        """Drop uploads left in the staging area by a process that died mid-upload: a dir
        whose owner is provably dead (this host, that process is gone: at once), whose
        lease went stale (another replica that stopped refreshing it), or, without an owner
        file (an older gateway's), untouched for ``UNOWNED_STALE_SECONDS``. A live
        upload, of this process or of another replica sharing the store, is kept (see
        ``api.upload.stale_staging``). Returns the dirs removed."""
        from mediaflow_gateway.api import upload

        root = upload.staging_root(self.store)
        try:
            entries = self.store.fs.ls(root, detail=True)
        except FileNotFoundError:
            return []
        removed = []
        for entry in entries:
            # A local dir has an mtime; an object-store prefix has none: its newest object then.
            stamps = [upload.stamp(entry)] if upload.stamp(entry) is not None else [
                upload.stamp(info) for info in self.store.fs.find(entry["name"], detail=True).values()]
            stamps = [s for s in stamps if s is not None]
            age = time.time() - max(stamps) if stamps else float("inf")
            if upload.stale_staging(self.store, entry["name"], age=age):
                with contextlib.suppress(FileNotFoundError):
                    self.store.fs.rm(entry["name"], recursive=True)
                removed.append(entry["name"])
        if removed:
            log.info("dropped %d upload(s) left in the staging area by dead processes", len(removed))
        return removed

    async def stop(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        if self.owns_pipeline:
            self.pipeline.close()

    def _locked(self, fn, *args, **kwargs):
        with self.index_lock:
            return fn(*args, **kwargs)

    async def _in_thread_locked(self, fn, *args, **kwargs):
        return await asyncio.to_thread(self._locked, fn, *args, **kwargs)

    # -- jobs ------------------------------------------------------------------
    def job_id_for_content(self, sha256: str) -> str:
        """The job id of an upload: derived from its bytes, so the same bytes are one job
        and one media (``media_id_for_job``). Here the CLI's content id, ``media_id_for``."""
        return media_id_for(sha256)

    def media_id_for_job(self, job_id: str) -> str:
        """The media id a new job's artifacts are stored under (here: the job id itself)."""
        return job_id

    async def existing_job(self, job_id: str) -> JobView | None:
        """The job ``job_id`` if this backend has it, else None."""
        try:
            return await self.get_job(job_id)
        except NotFoundError:
            return None

    @contextlib.asynccontextmanager
    async def submitting(self, job_id: str) -> AsyncIterator[None]:
        """Held while one request checks for, stores and submits job ``job_id``, so that two
        uploads of the same bytes at once make one job (other ids do not wait)."""
        entry = self._submit_locks.setdefault(job_id, [asyncio.Lock(), 0])
        entry[1] += 1  # holders and waiters: the lock is dropped when the last one is done
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._submit_locks[job_id]

    def job_counts(self) -> dict[str, int] | None:
        """Jobs by phase, known without any I/O (for /metrics); None when only a remote
        system knows them (the cluster: the operator exports MediaJobs by phase)."""
        return None

    @abstractmethod
    async def submit(self, job_id: str, spec: MediaJobSpec) -> JobView:
        """Start processing ``spec.source`` as job ``job_id`` (media ``media_id_for_job(job_id)``)."""

    @abstractmethod
    async def get_job(self, job_id: str) -> JobView: ...

    @abstractmethod
    async def list_jobs(self) -> list[JobView]: ...

    @abstractmethod
    def watch_job(self, job_id: str) -> AsyncIterator[JobView]:
        """The job now, then at every change, until a terminal phase."""

    @abstractmethod
    async def forget_job(self, job_id: str) -> None:
        """Drop the job (409 while it still runs, where it cannot be stopped)."""

    def source_uri(self, media_id: str, artifact: str) -> str:
        """Where an uploaded artifact is, as a MediaJob ``source.uri``."""
        uri = self.store.uri(media_id, artifact)
        return uri if "://" in uri else str(Path(uri).resolve())

    # -- reads -----------------------------------------------------------------
    def _source(self, media_id: str) -> SourceRecord:
        return self.pipeline._source(media_id)

    def _media_info(self, media_id: str) -> MediaInfo:
        src = self._source(media_id)
        probe = self.store.read_model(media_id, "probe.json", ProbeResult)
        return MediaInfo(
            media_id=media_id,
            title=src.title,
            duration=probe.duration if probe else None,
            has_video=probe.has_video if probe else False,
            stages_done=[s.name for s in STAGES if self.store.exists(media_id, s.artifact)],
        )

    def _media_detail(self, media_id: str) -> MediaInfo:
        info = self._media_info(media_id)
        transcript = self.store.read_model(media_id, "transcript.json", Transcript)
        if transcript is not None:
            info.language, info.language_probability = transcript.language, transcript.language_probability
        return info

    async def media(self, media_id: str) -> MediaInfo:
        return await asyncio.to_thread(self._media_detail, media_id)

    async def list_media(self) -> list[MediaInfo]:
        def collect() -> list[MediaInfo]:
            items = []
            for media_id in self.store.list_media():
                try:
                    items.append(self._media_info(media_id))
                except NotFoundError:  # an upload still arriving: no source.json yet
                    continue
            return items

        return await asyncio.to_thread(collect)

    async def transcript(self, media_id: str) -> Transcript:
        return await asyncio.to_thread(self.pipeline.transcript, media_id)

    async def summary(self, media_id: str) -> tuple[SummaryRecord, str]:
        def read() -> tuple[SummaryRecord, str]:
            self._source(media_id)
            record = self.store.read_model(media_id, "summary.json", SummaryRecord)
            if record is None:
                raise NotFoundError(f"media {media_id} has no summary (yet, or summaries are disabled)")
            return record, self.store.read_text(media_id, "summary.md")

        return await asyncio.to_thread(read)

    async def source_file(self, media_id: str) -> SourceFile:
        def locate() -> SourceFile:
            src = self._source(media_id)
            if src.stored_as:
                name = src.stored_as
                size = self.store.size(media_id, name)
                opener = lambda: self.store.open(media_id, name)  # noqa: E731
            elif "://" not in src.uri and (stored := self._stored_upload(media_id, Path(src.uri))):
                name = stored
                size = self.store.size(media_id, name)
                opener = lambda: self.store.open(media_id, name)  # noqa: E731
            elif "://" not in src.uri and self._servable(Path(src.uri)):
                path = Path(src.uri)
                name, size = path.name, path.stat().st_size
                opener = lambda: open(path, "rb")  # noqa: E731
            else:
                raise NotFoundError(f"the source of media {media_id} is not stored by the gateway")
            suffix = Path(name).suffix.lower()
            mime = MIME_BY_EXTENSION.get(suffix, "application/octet-stream")
            return SourceFile(open=opener, size=size, mime=mime,
                              extension=suffix if suffix in MIME_BY_EXTENSION else ".bin")

        return await asyncio.to_thread(locate)

    def _stored_upload(self, media_id: str, path: Path) -> str | None:
        """The artifact name when ``path`` is this media's own upload in the (local) store."""
        if not self.store.is_local:
            return None
        own_dir = Path(self.store.path(media_id, "source")).parent.resolve()
        resolved = path.resolve()
        if resolved.parent != own_dir or not resolved.name.startswith("source") or not resolved.is_file():
            return None
        return resolved.name

    def _servable(self, path: Path) -> bool:
        """A source the gateway did not store is streamed only from a configured media root."""
        try:
            check_under_roots(path, self.settings.media_roots)
        except InvalidSourceError:
            return False
        return path.is_file()

    async def delete(self, media_id: str) -> None:
        """Artifacts, indexed chunks and job; NotFoundError when none of them existed."""
        try:
            await self.get_job(media_id)
            had_job = True
        except NotFoundError:
            had_job = False
        await self.forget_job(media_id)
        had_artifacts = await self._in_thread_locked(self.pipeline.delete, media_id)
        if not (had_job or had_artifacts):
            raise NotFoundError(f"no such media: {media_id}")

    async def search(self, query: str, *, media_id: str | None, top_k: int) -> list[SearchHit]:
        """The core's search: hits with their ``seek`` (the best-matching sentence's start).
        Only the index access holds the lock; embedding the query and the sentences does not."""
        return await asyncio.to_thread(self.pipeline.search, query, top_k=top_k, media_id=media_id,
                                       lock=self.index_lock)

    async def ask(self, question: str, *, media_id: str | None, top_k: int) -> Answer:
        # Retrieval holds the index lock; the slow LLM call and the support check must not,
        # so this is Pipeline.ask in its two steps: search (locked index), then answer.
        hits = await self.search(question, media_id=media_id, top_k=top_k)
        return await asyncio.to_thread(self.pipeline.answer, question, hits)

    # -- readiness -------------------------------------------------------------
    async def readiness(self) -> dict[str, str]:
        """Each dependency → "ok" or what is wrong."""
        checks = {"qdrant": self._check_qdrant, **self._model_checks()}
        results = await asyncio.gather(*(asyncio.to_thread(fn) for fn in checks.values()))
        return dict(zip(checks, results, strict=True))

    def _check_qdrant(self) -> str:
        try:
            self._locked(lambda: self.pipeline.index().check())
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return f"unreachable: {type(exc).__name__}: {exc}"
        return "ok"

    def _model_checks(self) -> dict[str, Callable[[], str]]:
        s = self.pipeline.settings
        checks: dict[str, Callable[[], str]] = {}
        if s.embedder == "remote":
            checks["embeddings"] = lambda: _http_check(s.embedding_url)
        else:
            checks["embeddings"] = lambda: "ok" if "embedder" in self.pipeline.engines.__dict__ else "loading"
        if s.transcriber == "remote":
            checks["transcription"] = lambda: _http_check(s.transcription_url)
        if s.llm_url:
            checks["llm"] = lambda: _http_check(s.llm_url.rstrip("/") + "/models")
        return checks


def _http_check(url: str | None) -> str:
    if not url:
        return "not configured"
    try:
        response = httpx.get(url, timeout=3.0)
    except httpx.HTTPError as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ok" if response.status_code < 500 else f"answered {response.status_code}"


def outputs_for(media_id: str, store) -> dict[str, str]:
    base = f"/v1/media/{media_id}"
    outputs = {f"transcript_{fmt}": f"{base}/transcript?format={fmt}" for fmt in ("json", "srt", "vtt", "txt")}
    if store.exists(media_id, "summary.json"):
        outputs["summary"] = f"{base}/summary"
    outputs["page"] = f"/media/{media_id}"
    return outputs

