"""TokenFileAuth against a real HTTP server on loopback that, like the API server, accepts
only the service-account token currently in the file and answers 401 to any other.

The file is rotated as the kubelet does it for a projected volume: ``token`` is a symlink
through ``..data``, itself a symlink to a timestamped directory; a rotation writes a new
directory and renames a fresh ``..data`` symlink over the old one (one atomic step).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import kopf
import pytest

from mediaflow.kubeauth import TokenFileAuth


class ProjectedToken:
    """A service-account token volume, rotated the kubelet's way (AtomicWriter)."""

    def __init__(self, root: Path, token: str):
        self.root, self.generation = root, 0
        self.root.mkdir(parents=True, exist_ok=True)
        self.rotate(token)
        (self.root / "token").symlink_to("..data/token")

    @property
    def path(self) -> Path:
        return self.root / "token"

    def rotate(self, token: str) -> None:
        self.generation += 1
        data = self.root / f"..2026_01_01_00_00_{self.generation:02d}.000000001"
        data.mkdir()
        (data / "token").write_text(token + "\n")
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(data.name)
        os.replace(tmp, self.root / "..data")  # the atomic swap

    def current(self) -> str:
        return self.path.read_text().strip()


@dataclass
class TokenCheckingServer:
    """Answers 200 with the request's body echoed iff the bearer is the file's current token."""

    volume: ProjectedToken
    seen: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    # Called before a request is checked: lets a test rotate the token "while it is in flight".
    before_check: Callable[[], None] | None = None
    before_every_check: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                auth = self.headers.get("Authorization", "")
                outer.seen.append(auth)
                outer.bodies.append(body)
                if outer.before_check is not None:
                    hook, outer.before_check = outer.before_check, None
                    hook()
                if outer.before_every_check is not None:
                    outer.before_every_check()
                ok = auth == f"Bearer {outer.volume.current()}"
                payload = json.dumps({"path": self.path, "body": body.decode()} if ok else
                                     {"kind": "Status", "code": 401, "reason": "Unauthorized"}).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def volume(tmp_path) -> ProjectedToken:
    return ProjectedToken(tmp_path / "serviceaccount", "token-one")


@pytest.fixture
def server(volume) -> Iterator[TokenCheckingServer]:
    srv = TokenCheckingServer(volume)
    yield srv
    srv.close()


@pytest.fixture
def client(server, volume) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, auth=TokenFileAuth(volume.path), timeout=10) as c:
        yield c


def test_the_first_request_carries_the_file_token(client, server):
    response = client.get("/api/v1/namespaces")
    assert response.status_code == 200
    assert server.seen == ["Bearer token-one"]


def test_a_rotated_file_is_read_again_before_the_next_request(client, server, volume):
    assert client.get("/a").status_code == 200
    volume.rotate("token-two")
    assert client.get("/b").status_code == 200
    volume.rotate("token-three")
    assert client.get("/c").status_code == 200
    # No 401 on the way: each request went out with the token current at that moment.
    assert server.seen == ["Bearer token-one", "Bearer token-two", "Bearer token-three"]


def test_the_file_is_not_reread_while_it_is_unchanged(volume):
    auth = TokenFileAuth(volume.path)
    assert auth.token() == "token-one"
    data = (volume.root / "..data").resolve() / "token"
    # Changed behind the cache's back (same inode, size and mtime): the cached token stays…
    stat = os.stat(data)
    data.write_text("token-uno\n")
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert auth.token() == "token-one"
    # …until a forced read (what a 401 triggers).
    assert auth.token(force=True) == "token-uno"


def test_a_token_that_went_stale_in_flight_is_retried_once_with_the_fresh_one(client, server, volume):
    assert client.get("/warm").status_code == 200
    # The kubelet rotates after the client read the file, before the server checks the request.
    server.before_check = lambda: volume.rotate("token-two")
    response = client.patch("/apis/x/v1/things/a", json={"status": {"phase": "Running"}})
    assert response.status_code == 200, response.text
    assert server.seen == ["Bearer token-one", "Bearer token-one", "Bearer token-two"]
    # The retried request carried the same body.
    assert server.bodies[-1] == server.bodies[-2] == b'{"status":{"phase":"Running"}}'
    assert response.json()["body"] == '{"status":{"phase":"Running"}}'


def test_a_stale_cache_without_a_visible_file_change_is_refreshed_on_401(client, server, volume):
    assert client.get("/warm").status_code == 200
    # Rewritten in place with the same size and mtime: the stat stamp cannot tell.
    data = (volume.root / "..data").resolve() / "token"
    stat = os.stat(data)
    data.write_text("token-uno\n")
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    response = client.get("/next")
    assert response.status_code == 200
    assert server.seen[1:] == ["Bearer token-one", "Bearer token-uno"]


def test_a_rejected_token_that_the_file_still_holds_is_not_retried(client, server, volume):
    assert client.get("/warm").status_code == 200
    # The server now wants another token, but the file still says token-one: one 401, no loop.
    server.volume = ProjectedToken(volume.root.parent / "other", "somebody-else")
    response = client.get("/denied")
    assert response.status_code == 401
    assert server.seen == ["Bearer token-one", "Bearer token-one"]


def test_the_retry_after_a_401_happens_once(client, server, volume):
    assert client.get("/warm").status_code == 200
    # A token that is always stale by the time it arrives: one retry, then the 401 is the answer.
    rotations = iter(range(100))
    server.before_every_check = lambda: volume.rotate(f"token-r{next(rotations)}")
    response = client.get("/always-stale")
    assert response.status_code == 401
    assert server.seen == ["Bearer token-one", "Bearer token-one", "Bearer token-r0"]


async def test_async_client_follows_rotation(server, volume):
    async with httpx.AsyncClient(base_url=server.url, auth=TokenFileAuth(volume.path), timeout=10) as c:
        assert (await c.get("/a")).status_code == 200
        volume.rotate("token-two")
        assert (await c.get("/b")).status_code == 200
        server.before_check = lambda: volume.rotate("token-three")
        assert (await c.get("/c")).status_code == 200
    assert server.seen == ["Bearer token-one", "Bearer token-two", "Bearer token-two", "Bearer token-three"]


# -- the operator's API client -------------------------------------------------------

async def test_operator_kube_api_sends_the_file_token_not_the_login_token(server, volume):
    from mediaflow_operator.kube import KubeApi

    info = kopf.ConnectionInfo(server=server.url, scheme="Bearer", token="token-kopf-read-at-login")
    kube = KubeApi.from_connection(info, timeout=10, connect_timeout=5, token_file=TokenFileAuth(volume.path))
    try:
        job = await kube.get_job("media", "island-extract")
        assert job == {"path": "/apis/batch/v1/namespaces/media/jobs/island-extract", "body": ""}
        volume.rotate("token-two")
        await kube.patch_status("media", "island", {"phase": "Running"})
    finally:
        await kube.close()
    assert server.seen == ["Bearer token-one", "Bearer token-two"]
    assert all("token-kopf-read-at-login" not in seen for seen in server.seen)


async def test_operator_kube_api_retries_once_a_token_that_went_stale_in_flight(server, volume):
    from mediaflow_operator.kube import KubeApi, KubeApiError

    info = kopf.ConnectionInfo(server=server.url, scheme="Bearer", token="token-kopf-read-at-login")
    kube = KubeApi.from_connection(info, timeout=10, connect_timeout=5, token_file=TokenFileAuth(volume.path))
    try:
        assert await kube.get_job("media", "warm") is not None
        # The kubelet rotates after the client read the file, before the server checks the request.
        server.before_check = lambda: volume.rotate("token-two")
        await kube.patch_status("media", "island", {"phase": "Running"})
        assert server.seen == ["Bearer token-one", "Bearer token-one", "Bearer token-two"]
        # The retried request carried the same body.
        assert json.loads(server.bodies[-1]) == json.loads(server.bodies[-2]) == {"status": {"phase": "Running"}}
        # A token the server rejects while the file still holds it: one 401, no loop.
        server.before_every_check = lambda: volume.rotate(f"token-r{len(server.seen)}")
        with pytest.raises(KubeApiError) as refused:
            await kube.get_job("media", "x")
        assert refused.value.status == 401 and len(server.seen) == 5
    finally:
        await kube.close()


async def test_operator_kube_api_without_a_token_file_uses_the_login_token(server, volume):
    from mediaflow_operator.kube import KubeApi, KubeApiError

    info = kopf.ConnectionInfo(server=server.url, scheme="Bearer", token="token-one")
    kube = KubeApi.from_connection(info, timeout=10, connect_timeout=5)
    try:
        assert await kube.get_job("media", "x") is not None
        volume.rotate("token-two")
        # The kubeconfig case: no file to follow, the login token goes out (and is now stale).
        with pytest.raises(KubeApiError) as refused:
            await kube.get_job("media", "x")
        assert refused.value.status == 401
    finally:
        await kube.close()
    assert server.seen == ["Bearer token-one", "Bearer token-one"]
