"""Turning a user's source (path, http(s) URL, s3:// URI) into local bytes, safely.

- Paths must name an existing regular file; nothing is copied.
- http(s) downloads are streamed with a size cap; every hop of a redirect chain
  is checked, and hosts that resolve to loopback, private, link-local or other
  non-public addresses are refused (SSRF) unless explicitly allowed.
- Any other scheme (file://, ftp://, gopher://, …) is refused.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import tempfile
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from mediaflow.errors import InvalidMediaError, InvalidSourceError, MediaTooLargeError

MAX_REDIRECTS = 5
_SAFE_SUFFIX = re.compile(r"^\.[a-z0-9]{1,5}$")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def media_id_for(sha256: str) -> str:
    # Content-addressed: processing the same bytes again resumes the same media.
    return sha256[:16]


def safe_suffix(name: str) -> str:
    suffix = Path(urlsplit(name).path).suffix.lower()
    return suffix if _SAFE_SUFFIX.match(suffix) else ".bin"


def check_public_host(host: str, port: int | None, *, allow_private: bool) -> None:
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise InvalidSourceError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise InvalidSourceError(
                f"refusing to fetch from {host} ({address}): not a public address"
            )


def download(url: str, target: Path, *, max_bytes: int, allow_private: bool) -> None:
    current = url
    with httpx.Client(follow_redirects=False, timeout=httpx.Timeout(30.0, read=120.0)) as client:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(current)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InvalidSourceError(f"unsupported URL: {current}")
            check_public_host(parts.hostname, parts.port, allow_private=allow_private)
            with client.stream("GET", current) as response:
                if response.is_redirect:
                    current = urljoin(current, response.headers.get("location", ""))
                    continue
                if response.status_code != 200:
                    raise InvalidSourceError(f"GET {url} answered {response.status_code}")
                declared = int(response.headers.get("content-length") or 0)
                if declared > max_bytes:
                    raise MediaTooLargeError(f"{url} is {declared} bytes, over the limit of {max_bytes}")
                written = 0
                with open(target, "wb") as fh:
                    for block in response.iter_bytes(1 << 20):
                        written += len(block)
                        if written > max_bytes:
                            raise MediaTooLargeError(f"{url} exceeds the limit of {max_bytes} bytes")
                        fh.write(block)
                return
    raise InvalidSourceError(f"too many redirects fetching {url}")


class LocalSource:
    """A source's bytes as a local file for the duration of a ``with`` block."""

    def __init__(self, source: str, *, max_bytes: int, allow_private: bool):
        self.source = source
        self.max_bytes = max_bytes
        self.allow_private = allow_private
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.path: Path
        self.downloaded = False
        self.title: str

    def __enter__(self) -> LocalSource:
        scheme = urlsplit(self.source).scheme.lower() if "://" in self.source else ""
        if not scheme:
            path = Path(self.source).expanduser()
            if not path.exists():
                raise InvalidMediaError(f"no such file: {self.source}")
            if not path.is_file():
                raise InvalidMediaError(f"not a regular file: {self.source}")
            self.path = path.resolve()
            self.title = path.name
            return self
        if scheme not in ("http", "https", "s3"):
            raise InvalidSourceError(f"unsupported source scheme {scheme}:// (use a path, http(s):// or s3://)")
        self._tmp = tempfile.TemporaryDirectory(prefix="mediaflow-dl-")
        self.path = Path(self._tmp.name) / ("source" + safe_suffix(self.source))
        self.title = os.path.basename(urlsplit(self.source).path) or urlsplit(self.source).netloc
        self.downloaded = True
        try:
            self._fetch(scheme)
        except BaseException:
            self._tmp.cleanup()
            raise
        return self

    def _fetch(self, scheme: str) -> None:
        if scheme == "s3":
            import fsspec

            fs, path = fsspec.core.url_to_fs(self.source)
            if fs.size(path) > self.max_bytes:
                raise MediaTooLargeError(f"{self.source} is over the limit of {self.max_bytes} bytes")
            fs.get_file(path, str(self.path))
        else:
            download(self.source, self.path, max_bytes=self.max_bytes, allow_private=self.allow_private)

    def __exit__(self, *exc) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
