"""HTTP range requests over any fsspec file, so a browser's <video> can seek."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import IO

from starlette.responses import StreamingResponse

from mediaflow_gateway.api.errors import ApiError

BLOCK = 256 * 1024
MAX_DIGITS = 19  # positions up to 10**19 - 1: beyond any file, and int() never sees thousands of digits
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.ASCII)


def _shown(header: str) -> str:
    # The header as echoed in an error message: bounded, printable ASCII.
    text = header[:40].encode("ascii", "backslashreplace").decode("ascii")
    return repr(text + ("…" if len(header) > 40 else ""))


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte positions, inclusive; None = the whole file. One range only.

    Anything else (other units, several ranges, junk, positions of more than 19 digits)
    is a 416 naming the header, never an exception."""
    if not header:
        return None
    unsatisfiable = {"Content-Range": f"bytes */{size}"}
    match = _RANGE.fullmatch(header.strip())
    if not match or match.group(1) == match.group(2) == "":
        raise ApiError(416, f"unsupported range {_shown(header)}: send one range, bytes=FIRST-[LAST] or "
                       "bytes=-SUFFIX", headers=unsatisfiable)
    first, last = match.groups()
    if len(first) > MAX_DIGITS or len(last) > MAX_DIGITS:
        raise ApiError(416, f"range {_shown(header)} outside 0-{size - 1}", headers=unsatisfiable)
    if first == "":  # suffix: the last N bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise ApiError(416, f"range {_shown(header)} outside 0-{size - 1}", headers=unsatisfiable)
    return start, end


def ranged_response(open_file: Callable[[], IO[bytes]], size: int, mime: str, range_header: str | None,
                    *, filename: str | None = None) -> StreamingResponse:
    byte_range = parse_range(range_header, size)
    start, end = byte_range or (0, size - 1)
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start + 1)}
    if filename:  # the caller's safe name (media id + known extension), never a user's
        headers["Content-Disposition"] = f'inline; filename="{filename}"'
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
