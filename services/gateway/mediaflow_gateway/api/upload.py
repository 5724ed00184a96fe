"""Multipart upload streamed into a staging area of the artifact store, hashed as it comes.

The request body is parsed incrementally (python-multipart's push parser): the file
part's bytes go to ``incoming/<random>/source<ext>`` under the store's root as they
arrive, are counted against the size limit (413 as soon as it is crossed), hashed
(sha256: the media id derives from it) and typed from their first bytes (415 before
anything is written). Everything else is bounded as it streams: at most ``MAX_PARTS``
parts, ``MAX_HEADER_BYTES`` of headers per part and ``MAX_FIELD_BYTES`` per form field
(413 beyond); only the fields the API reads are kept.

The staged file is moved under its media id by :func:`adopt` once the caller knows the
id; on any failure (a refusal, a client that went away) the staging dir is removed.

A process killed mid-upload cannot remove its staging dir, so each one names its owner
in ``owner.json`` (host, pid, process start, see :func:`this_process`), rewritten every
``LEASE_REFRESH_SECONDS`` while the upload is open (a lease). The backend drops a dir at
start and periodically when its owner is provably dead (this host, that process is gone)
or its lease is older than ``LEASE_STALE_SECONDS`` (an owner on another replica that
stopped refreshing): see :func:`stale_staging` and ``Backend._clean_staging``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import posixpath
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from mediaflow.stores import ArtifactStore
from mediaflow_gateway.api.errors import ApiError
from mediaflow_gateway.sniff import SNIFF_BYTES, MediaType, sniff

MAX_FIELD_BYTES = 4096
MAX_HEADER_BYTES = 8192  # all header lines of one part
MAX_PARTS = 8
MAX_BOUNDARY_BYTES = 200  # RFC 2046 allows 70
KEPT_FIELDS = ("title", "language")
MULTIPART_OVERHEAD = 64 * 1024  # headers, boundaries and small fields around the file
WRITE_BLOCK = 1 << 20
STAGING = "incoming"
OWNER_FILE = "owner.json"
LEASE_REFRESH_SECONDS = 15.0  # a live upload rewrites its owner file this often
LEASE_STALE_SECONDS = 120.0  # an owner file older than this: its upload is dead
UNOWNED_STALE_SECONDS = 24 * 3600.0  # a dir without an owner file (written by an older version)


@dataclass
class StagedUpload:
    """An upload complete in the staging area: ``path`` is ``<staging dir>/<artifact>``."""

    staging_dir: str
    artifact: str
    sha256: str
    size_bytes: int
    media_type: MediaType
    filename: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"{self.staging_dir}/{self.artifact}"


def staging_root(store: ArtifactStore) -> str:
    return f"{store.root}/{STAGING}"


# -- ownership ------------------------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def _start_ticks(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22)."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None


@functools.cache
def _boot_id() -> str:
    return (_read("/proc/sys/kernel/random/boot_id") or "").strip()


def this_process() -> dict[str, str | int]:
    """This process, as an owner: host name, pid, and its start (boot id + start ticks: a
    reused pid, or the same pid in a restarted container, is another process)."""
    ticks = _start_ticks(os.getpid())
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": f"{_boot_id()}:{ticks}" if ticks is not None else ""}


def owner_alive(owner: dict) -> bool | None:
    """Whether the process ``owner`` names runs: True, False, or None when that cannot be
    known from here (another host: another replica, or this host's pids are not visible)."""
    if owner.get("host") != socket.gethostname():
        return None
    pid, started = owner.get("pid"), owner.get("started")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return started == this_process()["started"]
    ticks = _start_ticks(pid)
    if ticks is not None:
        return bool(started) and started == f"{_boot_id()}:{ticks}"
    if os.path.isdir("/proc/self"):  # /proc is there and has no such pid
        return False
    try:  # no /proc (macOS): whether the pid exists; a reused pid looks alive (the lease then decides)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_owner(store: ArtifactStore, staging_dir: str) -> None:
    owner = {**this_process(), "refreshed": time.time()}
    store.fs.pipe_file(f"{staging_dir}/{OWNER_FILE}", json.dumps(owner).encode())


def stale_staging(store: ArtifactStore, staging_dir: str, *, age: float) -> bool:
    """Whether staging dir ``staging_dir`` is left by a dead upload (so may be removed).

    ``age``: seconds since anything in the dir was last written. With an owner file: its
    owner is provably dead (at once), or its lease (the owner file's age) is stale; a live
    upload, here or on another replica, refreshes its lease and is kept. Without one (an
    older gateway's upload): ``UNOWNED_STALE_SECONDS`` since the last write."""
    path = f"{staging_dir}/{OWNER_FILE}"
    try:
        owner = json.loads(store.fs.cat_file(path))
        info = store.fs.info(path)
    except FileNotFoundError:
        return age > UNOWNED_STALE_SECONDS
    except (OSError, ValueError):  # unreadable: judged by its lease alone
        owner, info = {}, None
    if not isinstance(owner, dict):
        owner = {}
    if owner and owner_alive(owner) is False:
        return True
    written = stamp(info) if info else None
    lease_age = time.time() - written if written is not None else age
    return lease_age > LEASE_STALE_SECONDS


def stamp(info: dict) -> float | None:
    """When an fsspec entry was last written (``mtime``, or an object's ``LastModified``)."""
    modified = info.get("mtime") or info.get("LastModified")
    if hasattr(modified, "timestamp"):
        return modified.timestamp()
    return float(modified) if modified is not None else None


def discard(store: ArtifactStore, staging_dir: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if store.fs.exists(staging_dir):
            store.fs.rm(staging_dir, recursive=True)


def adopt(store: ArtifactStore, upload: StagedUpload, media_id: str) -> bool:
    """Move the staged file to ``media/<media_id>/<artifact>``; True if it was moved,
    False when that artifact is there already (the same bytes: the staged copy goes)."""
    try:
        if store.exists(media_id, upload.artifact):
            return False
        target = store.path(media_id, upload.artifact)
        store.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        store.fs.mv(upload.path, target)
        return True
    finally:
        discard(store, upload.staging_dir)


class _Part:
    __slots__ = ("name", "filename", "header_bytes", "size", "data", "keep")

    def __init__(self) -> None:
        self.name = ""
        self.filename: str | None = None
        self.header_bytes = 0
        self.size = 0
        self.data = bytearray()  # only for a kept field
        self.keep = False


class _FileSink:
    """Writes one file part into the staging dir; sniffs the type from its first bytes."""

    def __init__(self, store: ArtifactStore, max_bytes: int):
        self.store, self.max_bytes = store, max_bytes
        self.staging_dir = f"{staging_root(store)}/{uuid.uuid4().hex}"
        self.head = bytearray()
        self.size = 0
        self.digest = hashlib.sha256()
        self.media_type: MediaType | None = None
        self.artifact = ""
        self._fh = None
        self._buffer = bytearray()
        self._lease_lock = threading.Lock()  # a lease refresh never recreates a discarded dir
        self._closed = False

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise ApiError(413, f"upload exceeds the limit of {self.max_bytes} bytes")
        if self._fh is None:
            self.head += data
            if len(self.head) < SNIFF_BYTES:
                return
            await self._open()
            data, self.head = bytes(self.head), bytearray()
        self._buffer += data
        if len(self._buffer) >= WRITE_BLOCK:  # one thread hop per MiB, not per network chunk
            await self._flush()

    def _write_block(self, block: bytes) -> None:
        self.digest.update(block)  # hashlib releases the GIL for large blocks
        self._fh.write(block)

    async def _flush(self) -> None:
        if self._buffer:
            block, self._buffer = bytes(self._buffer), bytearray()
            await asyncio.to_thread(self._write_block, block)

    async def _open(self) -> None:
        self.media_type = sniff(bytes(self.head))
        if self.media_type is None:
            raise ApiError(415, "the upload is not an audio or video file (unrecognized content)")
        self.artifact = "source" + self.media_type.extension
        self._fh = await asyncio.to_thread(self._create)

    def _create(self):
        # The owner file first: a dir never holds upload bytes without naming its owner.
        self.store.fs.makedirs(self.staging_dir, exist_ok=True)
        _write_owner(self.store, self.staging_dir)
        return self.store.fs.open(f"{self.staging_dir}/{self.artifact}", "wb")

    async def keep_lease(self) -> None:
        """Rewrite the owner file every ``LEASE_REFRESH_SECONDS`` while the upload is open
        (whether or not bytes arrive), so that no other replica takes it for dead."""
        while True:
            await asyncio.sleep(LEASE_REFRESH_SECONDS)
            if self._fh is not None:
                with contextlib.suppress(Exception):  # a failed refresh: the next one may succeed
                    await asyncio.to_thread(self._refresh)

    def _refresh(self) -> None:
        with self._lease_lock:
            if not self._closed:
                _write_owner(self.store, self.staging_dir)

    def _close_lease(self) -> None:
        with self._lease_lock:
            self._closed = True

    async def finish(self) -> None:
        if self._fh is None:
            if not self.head:
                raise ApiError(422, "the file part is empty")
            await self._open()
            self._buffer, self.head = self.head, bytearray()
        await self._flush()
        await asyncio.to_thread(self._close_lease)
        fh, self._fh = self._fh, None
        await asyncio.to_thread(fh.close)

    def abort(self) -> None:
        self._close_lease()
        if self._fh is not None:
            with contextlib.suppress(Exception):
                self._fh.close()
        with contextlib.suppress(Exception):
            discard(self.store, self.staging_dir)


def _too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, f"{what} exceeds the limit of {limit} bytes")


async def receive_upload(request: Request, store: ArtifactStore, max_bytes: int) -> StagedUpload:
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise ApiError(415, "send multipart/form-data with a 'file' part, or JSON {\"url\": ...}")
    if len(boundary) > MAX_BOUNDARY_BYTES:
        raise ApiError(400, f"the multipart boundary is longer than {MAX_BOUNDARY_BYTES} bytes")

    sink = _FileSink(store, max_bytes)
    parts: list[_Part] = []
    pending: list[bytes] = []  # file bytes the parser produced during one feed
    state = {"field": b"", "value": b"", "file": None, "disposition": b""}

    def header_bytes(n: int) -> None:
        part = parts[-1]
        part.header_bytes += n
        if part.header_bytes > MAX_HEADER_BYTES:
            raise ApiError(413, f"the headers of a multipart part exceed the limit of {MAX_HEADER_BYTES} bytes")

    def on_part_begin():
        if len(parts) >= MAX_PARTS:
            raise ApiError(413, f"the multipart body has more than {MAX_PARTS} parts")
        parts.append(_Part())

    def on_header_field(data, start, end):
        header_bytes(end - start)
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        header_bytes(end - start)
        state["value"] += data[start:end]

    def on_header_end():
        if state["field"].lower() == b"content-disposition":
            state["disposition"] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        part = parts[-1]
        _, disposition = parse_options_header(state["disposition"])
        state["disposition"] = b""
        part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        if part.name == "file":
            if state["file"] is not None:
                raise ApiError(422, "the multipart body has more than one 'file' part")
            state["file"] = part
        else:
            part.keep = part.name in KEPT_FIELDS

    def on_part_data(data, start, end):
        part = parts[-1]
        if part is state["file"]:
            pending.append(data[start:end])
            return
        part.size += end - start
        if part.size > MAX_FIELD_BYTES:
            raise _too_large(f"form field {part.name[:64]!r}", MAX_FIELD_BYTES)
        if part.keep:
            part.data += data[start:end]

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
    })
    lease = asyncio.create_task(sink.keep_lease())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            for data in pending:
                await sink.write(data)
            pending.clear()
        parser.finalize()
        if state["file"] is None:
            raise ApiError(422, "the multipart body has no 'file' part")
        await sink.finish()
    except MultipartParseError as exc:
        sink.abort()
        if str(exc).startswith("Maximum header"):  # python-multipart's own bounds (line size, count)
            raise ApiError(413, f"the headers of a multipart part exceed the parser's limit: {exc}") from None
        raise ApiError(422, f"malformed multipart body: {exc}") from None
    except BaseException:  # 413/415 on the way, a client that went away, a cancelled request
        sink.abort()
        raise
    finally:
        lease.cancel()
    fields = {p.name: p.data.decode("utf-8", "replace") for p in parts if p.keep}
    return StagedUpload(
        staging_dir=sink.staging_dir,
        artifact=sink.artifact,
        sha256=sink.digest.hexdigest(),
        size_bytes=sink.size,
        media_type=sink.media_type,
        filename=state["file"].filename or "upload",
        fields=fields,
    )
