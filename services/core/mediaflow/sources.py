"""Turning a user's source (path, http(s) URL, s3:// URI) into local bytes, safely.

- Paths must name an existing regular file; nothing is copied.
- http(s) downloads are streamed with a size cap and an overall deadline. Each hop of a
  redirect chain is vetted: the host is resolved once, every address it resolves to must
  be public (IPv4 inside IPv6 forms included), and the connection goes to the vetted
  address (Host header and TLS SNI keep the name), so a second DNS answer (rebinding)
  is never used. Non-public addresses are refused (SSRF) unless explicitly allowed.
- Any other scheme (file://, ftp://, gopher://, …) is refused.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import tempfile
import time
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


# IPv6 forms that carry an IPv4 address a router may forward to: NAT64 (RFC 6052, and the
# local-use prefix of RFC 8215), IPv4-compatible (deprecated ::a.b.c.d), 6to4, Teredo.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64) or address in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable unicast, and so is any IPv4 address it carries."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            return is_public_address(inner)
    return True


def vetted_address(host: str, port: int, *, allow_private: bool) -> str:
    """Resolve ``host`` once; the address to connect to, if every answer is public."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidSourceError(f"cannot resolve host {host!r}: {getattr(exc, 'strerror', exc)}") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if not allow_private:
        for address in addresses:
            if not is_public_address(address):
                raise InvalidSourceError(f"refusing to fetch from {host} ({address}): not a public address")
    if not addresses:
        raise InvalidSourceError(f"cannot resolve host {host!r}")
    return str(addresses[0])


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host written as an IP literal names, in any form the resolver accepts
    (``127.1``, ``0x7f000001``, ``2130706433``, ``0177.0.0.1``, ``[fe80::1%eth0]``); None for a name."""
    bare = host.split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except (OSError, UnicodeError, ValueError):
        return None


def check_url_source(url: str, *, allow_private: bool) -> None:
    """Refuse at once what needs no DNS lookup: scheme, port, a non-public address literal.

    A name is vetted when it is fetched (``download``), against the answer then used."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidSourceError(f"unsupported URL: {url}")
    try:
        _ = parts.port  # raises on a port out of range
    except ValueError:
        raise InvalidSourceError(f"invalid port in URL: {url}") from None
    address = literal_address(parts.hostname)
    if address is not None and not allow_private and not is_public_address(address):
        raise InvalidSourceError(f"refusing to fetch from {parts.hostname} ({address}): not a public address")


def _pinned_request(client: httpx.Client, url: str, *, allow_private: bool) -> httpx.Request:
    """A GET of ``url`` sent to the vetted address of its host, named by Host and SNI."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidSourceError(f"unsupported URL: {url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = vetted_address(parts.hostname, port, allow_private=allow_private)
    target = httpx.URL(url).copy_with(host=address)  # httpx brackets an IPv6 literal itself
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    return client.build_request("GET", target, headers={"Host": host_header},
                                extensions={"sni_hostname": parts.hostname})


def _blocks(response: httpx.Response, url: str):
    try:
        yield from response.iter_bytes()  # as they arrive: the deadline is checked per block
    except httpx.HTTPError as exc:
        raise InvalidSourceError(f"fetching {url} failed: {type(exc).__name__}: {exc}") from None


def download(url: str, target: Path, *, max_bytes: int, allow_private: bool, deadline_seconds: float = 600.0) -> None:
    deadline = time.monotonic() + deadline_seconds
    current = url
    with httpx.Client(follow_redirects=False, timeout=httpx.Timeout(30.0, read=60.0)) as client:
        for _ in range(MAX_REDIRECTS + 1):
            request = _pinned_request(client, current, allow_private=allow_private)
            try:
                response = client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise InvalidSourceError(f"cannot fetch {current}: {type(exc).__name__}: {exc}") from None
            try:
                if response.is_redirect:
                    current = urljoin(current, response.headers.get("location", ""))
                    continue
                if response.status_code != 200:
                    raise InvalidSourceError(f"GET {url} answered {response.status_code}")
                try:
                    declared = int(response.headers.get("content-length") or 0)
                except ValueError:
                    declared = 0
                if declared > max_bytes:
                    raise MediaTooLargeError(f"{url} is {declared} bytes, over the limit of {max_bytes}")
                written = 0
                with open(target, "wb") as fh:
                    for block in _blocks(response, current):
                        written += len(block)
                        if written > max_bytes:
                            raise MediaTooLargeError(f"{url} exceeds the limit of {max_bytes} bytes")
                        if time.monotonic() > deadline:  # a slow drip must not hold a worker forever
                            raise InvalidSourceError(f"downloading {url} took longer than {deadline_seconds:.0f} s")
                        fh.write(block)
                return
            finally:
                response.close()
    raise InvalidSourceError(f"too many redirects fetching {url}")


def check_under_roots(path: Path, roots: list[Path]) -> None:
    """Refuse a path outside every root. The same answer whether or not it exists, so the
    refusal tells nothing about the server's files."""
    resolved = path.resolve()
    if not any(resolved.is_relative_to(Path(root).resolve()) for root in roots):
        raise InvalidSourceError(f"local path {path} is not under an allowed media root")


class LocalSource:
    """A source's bytes as a local file for the duration of a ``with`` block."""

    def __init__(self, source: str, *, max_bytes: int, allow_private: bool, deadline_seconds: float = 600.0,
                 media_roots: list[Path] | None = None):
        self.source = source
        self.media_roots = media_roots
        self.max_bytes = max_bytes
        self.allow_private = allow_private
        self.deadline_seconds = deadline_seconds
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.path: Path
        self.downloaded = False
        self.title: str

    def __enter__(self) -> LocalSource:
        scheme = urlsplit(self.source).scheme.lower() if "://" in self.source else ""
        if not scheme:
            path = Path(self.source).expanduser()
            if self.media_roots is not None:
                check_under_roots(path, self.media_roots)
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
            download(self.source, self.path, max_bytes=self.max_bytes, allow_private=self.allow_private,
                     deadline_seconds=self.deadline_seconds)

    def __exit__(self, *exc) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
