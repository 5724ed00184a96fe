"""Multipart upload streamed straight into the artifact store.

The request body is parsed incrementally (python-multipart's push parser): the
file part's bytes go to ``media/<id>/source<ext>.part`` as they arrive, are
counted against the size limit (413 as soon as it is crossed) and the type is
decided from the first bytes (415 before anything is written).
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from mediaflow.stores import ArtifactStore
from mediaflow_gateway.api.errors import ApiError
from mediaflow_gateway.sniff import SNIFF_BYTES, MediaType, sniff

MAX_FIELD_BYTES = 4096
MULTIPART_OVERHEAD = 64 * 1024  # headers, boundaries and small fields around the file
WRITE_BLOCK = 1 << 20


@dataclass
class StoredUpload:
    media_id: str
    artifact: str
    size_bytes: int
    media_type: MediaType
    filename: str
    fields: dict[str, str] = field(default_factory=dict)


class _Part:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.name = ""
        self.filename: str | None = None
        self.data = bytearray()


class _FileSink:
    """Writes one file part into the store; sniffs the type from its first bytes."""

    def __init__(self, store: ArtifactStore, media_id: str, max_bytes: int):
        self.store, self.media_id, self.max_bytes = store, media_id, max_bytes
        self.head = bytearray()
        self.size = 0
        self.media_type: MediaType | None = None
        self.artifact = ""
        self._fh = None
        self._buffer = bytearray()

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

    async def _flush(self) -> None:
        if self._buffer:
            block, self._buffer = bytes(self._buffer), bytearray()
            await asyncio.to_thread(self._fh.write, block)

    async def _open(self) -> None:
        self.media_type = sniff(bytes(self.head))
        if self.media_type is None:
            raise ApiError(415, "the upload is not an audio or video file (unrecognized content)")
        self.artifact = "source" + self.media_type.extension
        part = self.store.path(self.media_id, self.artifact + ".part")
        self.store.fs.makedirs(posixpath.dirname(part), exist_ok=True)
        self._fh = await asyncio.to_thread(self.store.fs.open, part, "wb")

    async def finish(self) -> None:
        if self._fh is None:
            if not self.head:
                raise ApiError(422, "the file part is empty")
            await self._open()
            self._buffer, self.head = self.head, bytearray()
        await self._flush()
        await asyncio.to_thread(self._fh.close)
        part = self.store.path(self.media_id, self.artifact + ".part")
        await asyncio.to_thread(self.store.fs.mv, part, self.store.path(self.media_id, self.artifact))

    def abort(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(Exception):
                self._fh.close()
        with contextlib.suppress(Exception):
            self.store.delete_media(self.media_id)


async def receive_upload(request: Request, store: ArtifactStore, media_id: str, max_bytes: int) -> StoredUpload:
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise ApiError(415, "send multipart/form-data with a 'file' part, or JSON {\"url\": ...}")
    declared = int(request.headers.get("content-length") or 0)
    if declared > max_bytes + MULTIPART_OVERHEAD:
        raise ApiError(413, f"upload of {declared} bytes exceeds the limit of {max_bytes} bytes")

    sink = _FileSink(store, media_id, max_bytes)
    parts: list[_Part] = []
    pending: list[bytes] = []  # file bytes the parser produced during one feed
    state = {"field": b"", "value": b"", "file": None}

    def on_part_begin():
        parts.append(_Part())

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        parts[-1].headers[state["field"].decode("latin-1").lower()] = state["value"].decode("utf-8", "replace")
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        part = parts[-1]
        _, disposition = parse_options_header(part.headers.get("content-disposition", ""))
        part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        if part.name == "file" and state["file"] is None:
            state["file"] = part

    def on_part_data(data, start, end):
        part = parts[-1]
        if part is state["file"]:
            pending.append(data[start:end])
        elif len(part.data) + end - start > MAX_FIELD_BYTES:
            raise ApiError(422, f"form field {part.name!r} is too long")
        else:
            part.data += data[start:end]

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
    })
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
        raise ApiError(422, f"malformed multipart body: {exc}") from None
    except BaseException:  # 413/415 on the way, a client that went away, a cancelled request
        sink.abort()
        raise
    fields = {p.name: p.data.decode("utf-8", "replace") for p in parts if p is not state["file"] and p.name}
    return StoredUpload(
        media_id=media_id,
        artifact=sink.artifact,
        size_bytes=sink.size,
        media_type=sink.media_type,
        filename=state["file"].filename or "upload",
        fields=fields,
    )
