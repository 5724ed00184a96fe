"""Job state from the pipeline's StageEvents, and live updates for SSE subscribers.

Workers run in threads; subscribers are asyncio queues on the server's loop, so
every change is handed over with ``loop.call_soon_threadsafe``.

With a :class:`JobJournal`, every job is also kept in the artifact store
(``jobs/<id>.json``: its view, its spec and the gateway that runs it), written at each
stage transition, so that a restarted gateway knows its jobs: finished ones answer as
before, interrupted ones are resumed (see ``EmbeddedBackend._recover``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from mediaflow.pipeline import StageEvent
from mediaflow.spec import MediaJobSpec
from mediaflow.stages import STAGES
from mediaflow.stores import ArtifactStore
from mediaflow_gateway.api.schemas import TERMINAL_PHASES, Condition, JobView
from mediaflow_gateway.api.upload import owner_alive, stamp, this_process

log = logging.getLogger(__name__)
JOURNAL = "jobs"
JOB_LEASE_REFRESH_SECONDS = 30.0  # an active job's record is rewritten at least this often
JOB_LEASE_STALE_SECONDS = 180.0  # an active job's record older than this: its gateway is dead
_LIVE_INSTANCES: set[str] = set()  # journal owners (backends) running in this process

_WEIGHTS = {s.name: s.weight for s in STAGES}
_TOTAL_WEIGHT = sum(_WEIGHTS.values())
_FINISHED = {"done": "Completed", "cached": "AlreadyDone", "skipped": "Skipped"}


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class JournalEntry:
    job: JobView
    spec: MediaJobSpec | None
    owner: dict
    age: float  # seconds since the record was written


class JobJournal:
    """Jobs as ``<store root>/jobs/<job id>.json``: ``{"owner", "spec", "job"}``.

    ``owner`` is the process that runs the job (``api.upload.this_process``) plus the
    backend instance in it (``instance``: two backends may share one process, e.g. tests)."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self.instance = uuid.uuid4().hex
        self.owner = {**this_process(), "instance": self.instance}
        self.root = f"{store.root}/{JOURNAL}"

    def __enter__(self) -> JobJournal:
        _LIVE_INSTANCES.add(self.instance)
        return self

    def __exit__(self, *exc) -> None:
        _LIVE_INSTANCES.discard(self.instance)

    def path(self, job_id: str) -> str:
        return f"{self.root}/{job_id}.json"

    def save(self, job: JobView, spec: MediaJobSpec | None) -> None:
        record = {"owner": self.owner, "spec": spec.model_dump(mode="json", by_alias=True) if spec else None,
                  "job": job.model_dump(mode="json")}
        fs, target, data = self.store.fs, self.path(job.id), json.dumps(record).encode()
        if not self.store.is_local:
            # An object store's PUT is atomic (a reader sees the old object or the new one,
            # never half), so the record goes straight to its key: a .part + mv would be a
            # copy and a delete more, and a failure between them left the .part behind.
            fs.pipe_file(target, data)
            return
        fs.makedirs(self.root, exist_ok=True)
        tmp = f"{target}.{uuid.uuid4().hex}.part"  # a reader (or a kill) never sees half a record
        try:
            fs.pipe_file(tmp, data)
            fs.mv(tmp, target)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.rm_file(tmp)
            raise

    def drop(self, job_id: str) -> None:
        try:
            self.store.fs.rm_file(self.path(job_id))
        except FileNotFoundError:
            pass

    def load(self) -> list[JournalEntry]:
        """Every readable record (a partial ``.part`` left by a kill is removed)."""
        fs = self.store.fs
        try:
            infos = fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return []
        entries = []
        for info in infos:
            name = info["name"]
            if name.endswith(".part"):
                if time.time() - (stamp(info) or 0) > JOB_LEASE_STALE_SECONDS:
                    self._remove(name)
                continue
            if not name.endswith(".json"):
                continue
            try:
                record = json.loads(fs.cat_file(name))
                job = JobView.model_validate(record["job"])
                spec = MediaJobSpec.model_validate(record["spec"]) if record.get("spec") else None
                owner = record.get("owner") or {}
            except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
                log.warning("unreadable job record %s (%s): ignored", name, exc)
                continue
            written = stamp(info)
            entries.append(JournalEntry(job, spec, owner if isinstance(owner, dict) else {},
                                        time.time() - written if written is not None else float("inf")))
        return entries

    def _remove(self, path: str) -> None:
        try:
            self.store.fs.rm_file(path)
        except FileNotFoundError:
            pass

    @staticmethod
    def owner_alive(owner: dict, age: float) -> bool:
        """Whether the gateway that wrote a record ``age`` seconds ago still runs its job:
        this process's backends by instance; another process on this host by pid and
        start time; another host by the record's lease (active jobs are rewritten every
        ``JOB_LEASE_REFRESH_SECONDS``)."""
        if owner.get("instance") in _LIVE_INSTANCES:
            return True
        alive = owner_alive(owner)
        if alive is None:
            return age <= JOB_LEASE_STALE_SECONDS
        if alive and owner.get("pid") == this_process()["pid"]:
            return False  # this process, but not a live backend of it: one that stopped
        return alive


class JobTracker:
    def __init__(self, loop: asyncio.AbstractEventLoop, journal: JobJournal | None = None):
        self._loop = loop
        self._journal = journal
        self._jobs: dict[str, JobView] = {}
        self._specs: dict[str, MediaJobSpec | None] = {}
        self._fractions: dict[str, dict[str, float]] = {}
        self._subscribers: dict[str, set[asyncio.Queue[JobView]]] = {}
        self._lock = threading.Lock()
        self._journal_lock = threading.Lock()  # journal writes in order; none after a remove

    # -- writes (any thread) ---------------------------------------------------
    def create(self, job_id: str, media_id: str, title: str | None, spec: MediaJobSpec | None = None,
               *, persist: bool = True) -> JobView:
        now = _now()
        job = JobView(id=job_id, media_id=media_id, title=title, phase="Pending", progress=0.0,
                      created_at=now, updated_at=now)
        with self._lock:
            self._jobs[job_id] = job
            self._specs[job_id] = spec
            self._fractions[job_id] = {}
        if persist:
            self.persist(job_id)
        return job

    def restore(self, job: JobView, spec: MediaJobSpec | None, *, persist: bool = False) -> None:
        """A job known from the journal (after a restart); ``persist``: now owned by this one."""
        with self._lock:
            self._jobs[job.id] = job
            self._specs[job.id] = spec
            self._fractions[job.id] = {c.type: 1.0 for c in job.conditions if c.status == "True"}
        if persist:
            self.persist(job.id)

    def persist(self, job_id: str) -> None:
        """Write the job as it is now to the journal (if any); a failed write is logged."""
        if self._journal is None:
            return
        with self._journal_lock:
            with self._lock:
                job, spec = self._jobs.get(job_id), self._specs.get(job_id)
            if job is None:  # removed meanwhile
                return
            try:
                self._journal.save(job, spec)
            except Exception:  # noqa: BLE001 - the job goes on; only a restart would miss it
                log.warning("could not record job %s in the journal", job_id, exc_info=True)

    def persist_active(self) -> None:
        """Rewrite every active job's record: its lease (see ``JobJournal.owner_alive``)."""
        with self._lock:
            active = [j.id for j in self._jobs.values() if j.phase not in TERMINAL_PHASES]
        for job_id in active:
            self.persist(job_id)

    def on_event(self, job_id: str, event: StageEvent) -> None:
        with self._lock:
            job = self._jobs[job_id]
            fractions = self._fractions[job_id]
            conditions = {c.type: c for c in job.conditions}
            update: dict = {"phase": "Running", "stage": event.stage}
            if event.status == "progress":
                fractions[event.stage] = event.fraction
            elif event.status == "started":
                fractions[event.stage] = 0.0
                conditions[event.stage] = Condition(type=event.stage, status="Unknown", reason="Running",
                                                    last_transition_time=_now())
            elif event.status in _FINISHED:
                fractions[event.stage] = 1.0
                conditions[event.stage] = Condition(
                    type=event.stage, status="True", reason=_FINISHED[event.status],
                    message=f"{event.seconds:.2f} s", last_transition_time=_now())
            elif event.status == "failed":
                conditions[event.stage] = Condition(type=event.stage, status="False", reason="Failed",
                                                    message=event.message or "", last_transition_time=_now())
            progress = sum(_WEIGHTS[name] * f for name, f in fractions.items()) / _TOTAL_WEIGHT
            update.update(progress=round(min(progress, 0.999), 4),
                          conditions=[conditions[s.name] for s in STAGES if s.name in conditions])
            self._store(job_id, job.model_copy(update=update))
        if event.status != "progress":
            self.persist(job_id)

    def finish(self, job_id: str, *, error: str | None = None, outputs: dict[str, str] | None = None) -> None:
        with self._lock:
            job = self._jobs[job_id]
            if error is None:
                update = {"phase": "Succeeded", "progress": 1.0, "stage": None, "outputs": outputs or {}}
            else:
                update = {"phase": "Failed", "message": error, "stage": None}
            self._store(job_id, job.model_copy(update=update))
        self.persist(job_id)

    def remove(self, job_id: str) -> None:
        with self._journal_lock:
            with self._lock:
                self._jobs.pop(job_id, None)
                self._specs.pop(job_id, None)
                self._fractions.pop(job_id, None)
            if self._journal is not None:
                try:
                    self._journal.drop(job_id)
                except Exception:  # noqa: BLE001
                    log.warning("could not drop job %s from the journal", job_id, exc_info=True)

    def _store(self, job_id: str, job: JobView) -> None:
        job = job.model_copy(update={"updated_at": _now()})
        self._jobs[job_id] = job
        for queue in self._subscribers.get(job_id, ()):
            self._loop.call_soon_threadsafe(queue.put_nowait, job)

    # -- reads -------------------------------------------------------------------
    def get(self, job_id: str) -> JobView | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[JobView]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)

    def active(self) -> int:
        with self._lock:
            return sum(j.phase not in TERMINAL_PHASES for j in self._jobs.values())

    async def watch(self, job_id: str) -> AsyncIterator[JobView]:
        queue: asyncio.Queue[JobView] = asyncio.Queue()
        with self._lock:
            current = self._jobs.get(job_id)
            self._subscribers.setdefault(job_id, set()).add(queue)
        try:
            if current is None:
                return
            yield current
            while current.phase not in TERMINAL_PHASES:
                current = await queue.get()
                yield current
        finally:
            with self._lock:
                self._subscribers.get(job_id, set()).discard(queue)
