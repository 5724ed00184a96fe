"""Bearer auth from a service-account token file, re-read as the kubelet rotates it.

Bound service-account tokens expire (an hour by default) and the kubelet writes a
fresh one into the projected volume well before that: a client that read the file
once at startup starts getting 401s. The operator's and the gateway's API clients
both authenticate with this.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Generator
from pathlib import Path

import httpx

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class TokenFileAuth(httpx.Auth):
    """``Authorization: Bearer <file content>``; the file is re-read when it changes, and
    once more after a 401 (the token may have been rotated between check and request)."""

    def __init__(self, path: Path | str = SERVICE_ACCOUNT_DIR / "token"):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    def token(self, *, force: bool = False) -> str:
        stat = os.stat(self.path)
        # kubelet swaps the file through a symlinked directory: inode and mtime both move.
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if force or stamp != self._stamp:
                self._token = self.path.read_text().strip()
                self._stamp = stamp
            return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        sent = self.token()
        request.headers["Authorization"] = f"Bearer {sent}"
        response = yield request
        if response.status_code == 401:
            fresh = self.token(force=True)
            if fresh != sent:
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request
