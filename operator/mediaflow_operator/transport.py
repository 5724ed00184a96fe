"""An httpx transport that sends requests with aiohttp, the HTTP client kopf itself uses.

The operator's API client keeps httpx's interface (``httpx.Response``, ``raise_for_status``,
the token-file ``httpx.Auth``, httpx's request log); only the connection handling below it
is aiohttp's. httpcore's pool re-checks every pooled connection with a ``poll()`` each time
it hands out one: in a burst of MediaJobs that costs several times the CPU of kopf's own
requests to the same API server, and it is what delays the next MediaJob's worker Job.
"""

from __future__ import annotations

import ssl

import aiohttp
import httpx

# Set by aiohttp from the request itself; a second copy from httpx would be sent twice.
_HEADERS_AIOHTTP_SETS = {"host", "content-length", "transfer-encoding", "connection"}


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``verify``: an ``ssl.SSLContext`` (CA and client certificate loaded), or False for none."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True, max_connections: int = 8):
        self._ssl: ssl.SSLContext | bool = verify if isinstance(verify, ssl.SSLContext) else (
            True if verify else False)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: a ClientSession belongs to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl),
                # httpx decodes the body by its Content-Encoding, as it would its own.
                auto_decompress=False,
                # No cookie jar, like a fresh httpx client: the API server's cookies mean nothing here.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.get("connect"),
                                        sock_read=timeouts.get("read"))
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in _HEADERS_AIOHTTP_SETS]
        body = await request.aread()
        try:
            async with self._client().request(
                request.method, str(request.url), headers=headers, data=body or None,
                allow_redirects=False, timeout=timeout,
            ) as response:
                content = await response.read()
                return httpx.Response(
                    response.status, headers=[(k.decode("latin-1"), v.decode("latin-1"))
                                              for k, v in response.raw_headers],
                    content=content, request=request,
                    extensions={"http_version": f"HTTP/{response.version.major}.{response.version.minor}".encode(),
                                "reason_phrase": (response.reason or "").encode()},
                )
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"no answer from {request.url.host} in time", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.NetworkError(str(exc), request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
