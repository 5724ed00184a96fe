"""HTTP range requests over any fsspec file, so a browser's <video> can seek."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import IO

from starlette.responses import StreamingResponse

from mediaflow_gateway.api.errors import ApiError

BLOCK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte positions, inclusive; None = the whole file. One range only."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.group(1) == match.group(2) == "":
        raise ApiError(416, f"unsupported range {header!r}", headers={"Content-Range": f"bytes */{size}"})
    first, last = match.groups()
    if first == "":  # suffix: the last N bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise ApiError(416, f"range {header!r} outside 0-{size - 1}", headers={"Content-Range": f"bytes */{size}"})
    return start, end


def ranged_response(open_file: Callable[[], IO[bytes]], size: int, mime: str, range_header: str | None) -> StreamingResponse:
    byte_range = parse_range(range_header, size)
    start, end = byte_range or (0, size - 1)
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start + 1)}
    if byte_range:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"

    async def body() -> AsyncIterator[bytes]:
        fh = await asyncio.to_thread(open_file)
        try:
            await asyncio.to_thread(fh.seek, start)
            remaining = end - start + 1
            while remaining > 0:
                block = await asyncio.to_thread(fh.read, min(BLOCK, remaining))
                if not block:
                    break
                remaining -= len(block)
                yield block
        finally:
            await asyncio.to_thread(fh.close)

    return StreamingResponse(body(), status_code=206 if byte_range else 200, media_type=mime, headers=headers)
