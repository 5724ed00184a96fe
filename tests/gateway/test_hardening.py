"""Issue 13 (gateway): what an attacker with an API key, or without one, could do to a
loopback gateway. Every refusal is checked for its status, its message, and that nothing
was stored (no media dir, nothing staged, no index point)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from mediaflow.errors import EngineUnavailableError
from mediaflow.sources import media_id_for
from mediaflow_gateway.api.upload import MAX_FIELD_BYTES, MAX_HEADER_BYTES, MAX_PARTS
from tests.conftest import free_port
from tests.gateway.conftest import (
    API_KEY,
    AUTH,
    assert_error,
    assert_nothing_stored,
    gateway_settings,
    multipart,
    raw_request,
    running_app,
    staged_uploads,
    tone,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.bad_input]
BODY_LIMIT = 64 * 1024
KEY = [(b"authorization", f"Bearer {API_KEY}".encode())]
MISSING_KEY = "missing bearer API key (Authorization: Bearer <key>)"
WRONG_KEY = "this API key is not valid"
STOCK = "stock0000000001"  # a media in the store (not indexed), for stream and range checks


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tmp_path_factory, engines_cache, sample_video):
    data = tmp_path_factory.mktemp("gw-hardening")
    # failed keys here are test cases, not an attack: the failure budget is tested on its own app
    async with running_app(data, engines_cache, media_roots=[Path(sample_video.media).parent],
                           auth_failures_per_minute=10_000) as client:
        backend = client.app.state.backend
        await asyncio.to_thread(backend.pipeline.ingest, str(sample_video.media), media_id=STOCK, title="stock")
        yield client


@pytest.fixture
def no_processing(client, monkeypatch):
    """Jobs are created but never run (the checks here are about what a request stores)."""
    monkeypatch.setattr(client.app.state.backend._pool, "submit", lambda *args, **kwargs: None)
    yield
    for job in client.app.state.backend.tracker.all():
        client.app.state.backend.tracker.remove(job.id)


def assert_clean(client, *also: str) -> None:
    assert_nothing_stored(client.app, media=[STOCK, *also])


def never(*_args):
    raise AssertionError("the body was read")


def endless(chunk: bytes = b"x" * 16384):
    while True:
        yield chunk


# -- 1. key and body limit before the body is read -----------------------------------------

@pytest.mark.parametrize("method,path,headers,status,message", [
    ("POST", "/v1/search", [(b"content-type", b"application/json")], 401, MISSING_KEY),
    ("POST", "/v1/search", [(b"content-type", b"application/json"), (b"authorization", b"Bearer wrong")],
     403, WRONG_KEY),
    ("POST", "/v1/media", [(b"content-type", b"application/json")], 401, MISSING_KEY),
    ("POST", "/v1/media", [(b"content-type", b"multipart/form-data; boundary=x")], 401, MISSING_KEY),
    ("POST", "/v1/no-such-route", [(b"content-type", b"application/json")], 401, MISSING_KEY),
    ("POST", "/v1/ask", [(b"content-type", b"application/json"), *KEY], 413,
     f"request body of {64 << 20} bytes exceeds the limit of {BODY_LIMIT} bytes"),
    ("POST", "/v1/media", [(b"content-type", b"application/json"), *KEY], 413,
     f"request body of {64 << 20} bytes exceeds the limit of {BODY_LIMIT} bytes"),
])
async def test_key_and_declared_size_are_checked_before_the_body_is_read(client, method, path, headers, status,
                                                                         message):
    headers = [*headers, (b"content-length", str(64 << 20).encode())]
    response = await raw_request(client.app, method, path, headers=headers, body_chunks=endless())
    assert response.status == status and response.json()["error"]["message"] == message, response.body
    assert response.receive_calls == 0  # answered before the app's receive was called
    assert_clean(client)


async def test_an_upload_declared_over_the_limit_is_413_unread(client):
    limit = client.app.state.backend.max_upload_bytes
    declared = limit + (1 << 20)
    headers = [(b"content-type", b"multipart/form-data; boundary=x"), (b"content-length", str(declared).encode()),
               *KEY]
    response = await raw_request(client.app, "POST", "/v1/media", headers=headers, body_chunks=endless())
    assert response.status == 413 and response.receive_calls == 0
    assert re.fullmatch(rf"request body of {declared} bytes exceeds the limit of \d+ bytes",
                        response.json()["error"]["message"])
    assert_clean(client)


@pytest.mark.parametrize("path", ["/v1/search", "/v1/media", "/v1/ask"])
async def test_a_json_body_without_length_is_cut_at_the_limit(client, path):
    headers = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked"), *KEY]
    response = await raw_request(client.app, "POST", path, headers=headers, body_chunks=endless())
    assert response.status == 413, response.body
    assert response.json()["error"]["message"] == f"request body exceeds the limit of {BODY_LIMIT} bytes"
    assert response.received_bytes <= BODY_LIMIT + 16384  # read up to the limit, not on
    assert_clean(client)


def form(*parts: tuple[bytes, bytes], boundary: bytes = b"bnd") -> bytes:
    body = b""
    for headers, value in parts:
        body += b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + value + b"\r\n"
    return body + b"--" + boundary + b"--\r\n"


def field(name: str, value: bytes) -> tuple[bytes, bytes]:
    return f'Content-Disposition: form-data; name="{name}"'.encode(), value


def file_part(payload: bytes, name: str = "file") -> tuple[bytes, bytes]:
    return f'Content-Disposition: form-data; name="{name}"; filename="a.wav"\r\nContent-Type: audio/wav'.encode(), payload


@pytest.mark.parametrize("case,message", [
    ("title before the file", f"form field 'title' exceeds the limit of {MAX_FIELD_BYTES} bytes"),
    ("title after the file", f"form field 'title' exceeds the limit of {MAX_FIELD_BYTES} bytes"),
    ("unknown field", f"form field 'junk' exceeds the limit of {MAX_FIELD_BYTES} bytes"),
    ("too many parts", f"the multipart body has more than {MAX_PARTS} parts"),
    ("huge part headers", f"the headers of a multipart part exceed the limit of {MAX_HEADER_BYTES} bytes"),
    ("one huge header line", "the headers of a multipart part exceed the parser's limit: Maximum header size exceeded"),
    ("many header lines", "the headers of a multipart part exceed the parser's limit: Maximum header count exceeded"),
])
async def test_multipart_fields_are_bounded_as_they_stream(client, tmp_path, case, message):
    payload = tone(tmp_path, 700)
    big = b"t" * (MAX_FIELD_BYTES + 1)
    parts = {
        "title before the file": [field("title", big), file_part(payload)],
        "title after the file": [file_part(payload), field("title", big)],
        "unknown field": [field("junk", big), file_part(payload)],
        "too many parts": [field(f"f{i}", b"v") for i in range(MAX_PARTS)] + [file_part(payload)],
        "huge part headers": [(b"Content-Disposition: form-data; name=\"title\"" +
                               b"".join(b"\r\nX-Pad-%d: " % i + b"p" * 3000 for i in range(3)), b"v"), file_part(payload)],
        "one huge header line": [(b"Content-Disposition: form-data; name=\"title\"\r\nX-Pad: " + b"p" * 5000, b"v"),
                                 file_part(payload)],
        "many header lines": [(b"Content-Disposition: form-data; name=\"title\"" +
                               b"".join(b"\r\nX-%d: p" % i for i in range(20)), b"v"), file_part(payload)],
    }[case]
    response = await client.post("/v1/media", headers={**AUTH, "Content-Type": "multipart/form-data; boundary=bnd"},
                                 content=form(*parts))
    assert_error(response, 413, "payload_too_large", message)
    assert_clean(client)


async def test_an_endless_form_field_is_refused_after_its_limit_not_read_on(client):
    head = b'--bnd\r\nContent-Disposition: form-data; name="title"\r\n\r\n'
    headers = [(b"content-type", b"multipart/form-data; boundary=bnd"), *KEY]
    response = await raw_request(client.app, "POST", "/v1/media", headers=headers,
                                 body_chunks=[head, *([b"t" * 1024] * 10_000)])
    assert response.status == 413
    assert response.json()["error"]["message"] == f"form field 'title' exceeds the limit of {MAX_FIELD_BYTES} bytes"
    assert response.received_bytes < MAX_FIELD_BYTES + 4096
    assert_clean(client)


async def test_pages_static_probes_and_signed_streams_need_no_key(client):
    for path in ("/", f"/media/{STOCK}", "/static/api.js", "/static/app.css", "/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status_code == 200, path
    signed = client.app.state.signer.sign(STOCK)
    response = await client.get(signed, headers={"Range": "bytes=0-99"})
    assert response.status_code == 206 and len(response.content) == 100
    # a signed URL passes the key check; the media must still exist
    assert_error(await client.get(client.app.state.signer.sign("0123456789abcdef")), 404, "not_found",
                 "no such media: 0123456789abcdef")
    assert_error(await client.get(f"/v1/media/{STOCK}/stream"), 401, "unauthorized", MISSING_KEY)


# -- 2. failed authentication is rate-limited per client address -----------------------------

async def test_repeated_bad_keys_from_one_address_are_429(tmp_path, engines_cache):
    async with running_app(tmp_path / "data", engines_cache, auth_failures_per_minute=3) as limited:
        app = limited.app
        other = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.9.8.7", 1234)),
                                  base_url="http://gateway")
        async with other:
            for _ in range(10):  # no key at all guesses nothing, and is not charged
                assert_error(await limited.get("/v1/jobs"), 401, "unauthorized", MISSING_KEY)
            for n in range(3):
                bad = {"Authorization": f"Bearer guess-{n}", "X-Forwarded-For": f"203.0.113.{n}"}
                assert_error(await limited.get("/v1/jobs", headers=bad), 403, "forbidden", WRONG_KEY)
            for headers in ({"Authorization": "Bearer guess-4"}, AUTH, {**AUTH, "X-Forwarded-For": "198.51.100.1"}):
                # spent: a wrong key, the right one (else 429 vs 200 would tell), a claimed address
                response = await limited.get("/v1/jobs", headers=headers)
                assert_error(response, 429, "rate_limited", "too many failed authentication attempts from this address")
                assert 1 <= int(response.headers["retry-after"]) <= 20
            # before the body is read, too
            refused = await raw_request(app, "POST", "/v1/search", headers=[*KEY, (b"content-length", b"99999999")],
                                        body_chunks=endless())
            assert refused.status == 429 and refused.receive_calls == 0
            # another address is not affected, and its right key has its own (per-key) budget
            assert (await other.get("/v1/jobs", headers=AUTH)).status_code == 200
            assert_error(await other.get("/v1/jobs", headers={"Authorization": "Bearer nope"}), 403, "forbidden")
            assert_nothing_stored(app)


# -- 3. odd input: a clear 4xx, never a 500 ----------------------------------------------------

ODD_REQUESTS = [
    # (id, path, query, headers, status, code, message)
    ("non-ascii bearer key", "/v1/jobs", b"", [(b"authorization", "Bearer ключ-🔑".encode())],
     403, "forbidden", WRONG_KEY),
    ("latin-1 bearer key", "/v1/jobs", b"", [(b"authorization", b"Bearer \xff\xfe\x00")], 403, "forbidden", WRONG_KEY),
    ("10k-char bearer key", "/v1/jobs", b"", [(b"authorization", b"Bearer " + b"k" * 10_000)],
     403, "forbidden", WRONG_KEY),
    ("non-ascii scheme", "/v1/jobs", b"", [(b"authorization", "Béarer x".encode())], 401, "unauthorized", MISSING_KEY),
    ("5000-digit expires", f"/v1/media/{STOCK}/stream", b"expires=" + b"9" * 5000 + b"&sig=" + b"a" * 64, [],
     401, "unauthorized", MISSING_KEY),
    ("non-ascii sig", f"/v1/media/{STOCK}/stream", b"expires=99999999999&sig=" + "é".encode() * 32, [],
     401, "unauthorized", MISSING_KEY),
    ("percent-garbage sig", f"/v1/media/{STOCK}/stream", b"expires=99999999999&sig=%ff%fe%00%c3", [],
     401, "unauthorized", MISSING_KEY),
    ("unicode-digit expires", f"/v1/media/{STOCK}/stream", "expires=٣٣٣٣٣٣٣٣٣٣&sig=".encode() + b"a" * 64, [],
     401, "unauthorized", MISSING_KEY),
    ("many query fields", f"/v1/media/{STOCK}/stream", b"&".join(b"f%d=1" % i for i in range(500)), [],
     401, "unauthorized", MISSING_KEY),
    ("5000-digit expires with a key", f"/v1/media/{STOCK}/stream", b"expires=" + b"9" * 5000, KEY,
     422, "invalid_request", "the request body or parameters are invalid"),
    ("5000-digit range", f"/v1/media/{STOCK}/stream", b"", [*KEY, (b"range", b"bytes=" + b"9" * 5000 + b"-")],
     416, "range_not_satisfiable", None),
    ("5000-digit range end", f"/v1/media/{STOCK}/stream", b"", [*KEY, (b"range", b"bytes=0-" + b"9" * 5000)],
     416, "range_not_satisfiable", None),
    ("5000-digit suffix range", f"/v1/media/{STOCK}/stream", b"", [*KEY, (b"range", b"bytes=-" + b"9" * 5000)],
     416, "range_not_satisfiable", None),
    ("range of words", f"/v1/media/{STOCK}/stream", b"", [*KEY, (b"range", b"bytes=abc-def")],
     416, "range_not_satisfiable", None),
    ("two ranges", f"/v1/media/{STOCK}/stream", b"", [*KEY, (b"range", b"bytes=0-1,4-5")],
     416, "range_not_satisfiable", None),
    ("other unit", f"/v1/media/{STOCK}/stream", b"", [*KEY, (b"range", b"pages=1-2")], 416, "range_not_satisfiable", None),
    ("non-ascii digits range", f"/v1/media/{STOCK}/stream", b"", [*KEY, (b"range", "bytes=٣-٤".encode())],
     416, "range_not_satisfiable", None),
    ("negative range", f"/v1/media/{STOCK}/stream", b"", [*KEY, (b"range", b"bytes=--5")],
     416, "range_not_satisfiable", None),
    ("unknown format", f"/v1/media/{STOCK}/transcript", b"format=%00", KEY, 422, "invalid_request", None),
    ("non-ascii media id", "/v1/media/médiå-id", b"", KEY, 422, "invalid_request", None),
    ("bad job id events", "/v1/jobs/BAD_ID/events", b"", KEY, 422, "invalid_request", None),
]


@pytest.mark.parametrize("case,path,query,headers,status,code,message", ODD_REQUESTS, ids=[c[0] for c in ODD_REQUESTS])
async def test_odd_input_is_a_clear_4xx(client, case, path, query, headers, status, code, message):
    response = await raw_request(client.app, "GET", path, query=query, headers=headers)
    assert response.status == status, response.body
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    if message is not None:
        assert error["message"] == message
    if status == 416:
        assert error["message"].startswith(("unsupported range", "range ")), error
        assert response.headers["content-range"].startswith("bytes */")
    assert_clean(client)


DOT_SEGMENT = "the URL path contains a '.' or '..' segment"
ODD_PATHS = [
    # (id, decoded path, raw path, status, code, message)
    ("dot-dot", "/v1/media/../jobs", b"/v1/media/../jobs", 400, "bad_request", DOT_SEGMENT),
    ("dot-dot in static", "/static/../templates/base.html", b"/static/../templates/base.html", 400, "bad_request",
     DOT_SEGMENT),
    ("encoded dot-dot", "/static/../templates/base.html", b"/static/%2e%2e/templates/base.html", 400, "bad_request",
     DOT_SEGMENT),
    ("upper-case encoded", "/v1/media/../jobs", b"/v1/media/%2E%2E/jobs", 400, "bad_request", DOT_SEGMENT),
    ("double-encoded", "/static/%2e%2e/templates/base.html", b"/static/%252e%252e/templates/base.html", 400,
     "bad_request", DOT_SEGMENT),
    ("backslash", "/static/..\\templates\\base.html", b"/static/..%5ctemplates%5cbase.html", 400, "bad_request",
     DOT_SEGMENT),
    ("single dot", "/v1/./jobs", b"/v1/./jobs", 400, "bad_request", DOT_SEGMENT),
    ("NUL", "/static/app.css\x00.html", b"/static/app.css%00.html", 400, "bad_request",
     "the URL path contains a control character"),
    ("newline", "/media/abc\ndef", b"/media/abc%0adef", 400, "bad_request", "the URL path contains a control character"),
    ("long", "/static/" + "a" * 3000, b"/static/" + b"a" * 3000, 414, "uri_too_long",
     "the URL path is longer than 2048 bytes"),
]


@pytest.mark.parametrize("case,path,raw_path,status,code,message", ODD_PATHS, ids=[c[0] for c in ODD_PATHS])
async def test_odd_paths_are_refused(client, case, path, raw_path, status, code, message):
    for headers in ([], KEY):
        response = await raw_request(client.app, "GET", path, raw_path=raw_path, headers=headers)
        assert response.status == status, response.body
        assert response.json()["error"] == {"code": code, "message": message}
    assert_clean(client)


async def test_dot_segments_sent_by_a_client_are_refused(client):
    # httpx removes literal dot segments; percent-encoded ones reach the server.
    for path in ("/static/%2e%2e/templates/base.html", "/v1/media/%2E%2E/jobs"):
        assert_error(await client.get(path, headers=AUTH), 400, "bad_request", DOT_SEGMENT)


@pytest.mark.parametrize("headers,message", [
    ([(b"content-length", b"12abc")], "invalid Content-Length header"),
    ([(b"content-length", b"9" * 30)], "invalid Content-Length header"),
    ([(b"content-length", b"10"), (b"content-length", b"20")], "invalid Content-Length header"),
    ([(b"content-length", "１２".encode())], "invalid Content-Length header"),
])
async def test_a_bad_content_length_is_400(client, headers, message):
    response = await raw_request(client.app, "POST", "/v1/search", body_chunks=endless(),
                                 headers=[(b"content-type", b"application/json"), *KEY, *headers])
    assert response.status == 400 and response.receive_calls == 0
    assert response.json()["error"] == {"code": "bad_request", "message": message}
    assert_clean(client)


@pytest.mark.parametrize("content_type,body,status,message", [
    ("multipart/form-data; boundary=" + "b" * 300, b"--x--", 400, "the multipart boundary is longer than 200 bytes"),
    ("multipart/form-data", b"--x--", 415, "send multipart/form-data with a 'file' part, or JSON {\"url\": ...}"),
    ("text/plain", b"hello", 415, "send multipart/form-data with a 'file' part, or JSON {\"url\": ...}"),
    ("application/json", b'{"url": "\xff\xfe"}', 422, "the request body or parameters are invalid"),
    ("application/json", b"[" * 10_000, 422, "the request body or parameters are invalid"),
])
async def test_odd_bodies_are_a_clear_4xx(client, content_type, body, status, message):
    response = await client.post("/v1/media", headers={**AUTH, "Content-Type": content_type}, content=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"] == message
    assert_clean(client)


# -- 4. no Host reflection; forwarded headers only from configured proxies ---------------------

async def test_assets_never_come_from_the_host_header(client):
    headers = {"Host": "evil.example", "X-Forwarded-Host": "evil2.example", "X-Forwarded-Proto": "https",
               "Forwarded": "host=evil3.example"}
    for path in ("/", f"/media/{STOCK}"):
        html = (await client.get(path, headers=headers)).text
        assert 'src="/static/api.js"' in html and 'href="/static/app.css"' in html
        assert "evil" not in html


async def test_assets_from_a_configured_public_base_url(tmp_path, engines_cache):
    async with running_app(tmp_path / "data", engines_cache, public_base_url="https://assets.example.org/mf/") as c:
        response = await c.get("/", headers={"Host": "evil.example"})
        assert 'src="https://assets.example.org/mf/static/api.js"' in response.text and "evil" not in response.text
        csp = response.headers["content-security-policy"]
        assert "script-src 'self' https://assets.example.org;" in csp


def test_run_trusts_no_proxy_by_default(monkeypatch):
    import uvicorn

    from mediaflow_gateway import main

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    for settings, expected in ((gateway_settings(), {"proxy_headers": False}),
                               (gateway_settings(forwarded_allow_ips=["10.0.0.0/8"]),
                                {"proxy_headers": True, "forwarded_allow_ips": ["10.0.0.0/8"]})):
        monkeypatch.setattr(main, "get_gateway_settings", lambda s=settings: s)
        monkeypatch.setattr(main, "create_app", lambda s: object())
        main.run()
        options = calls.pop()
        assert {k: options[k] for k in expected} == expected and (expected["proxy_headers"] or
                                                                  "forwarded_allow_ips" not in options)


@pytest.mark.parametrize("allow,expected_client", [([], "127.0.0.1"), (["127.0.0.1"], "203.0.113.9")])
def test_uvicorn_honours_forwarded_for_only_from_configured_proxies(allow, expected_client):
    """The options main.run gives uvicorn, on a real uvicorn: who the client is."""
    import uvicorn

    from mediaflow_gateway.main import uvicorn_options

    async def echo(scope, receive, send):
        if scope["type"] != "http":
            return
        body = f"{scope['client'][0]} {scope['scheme']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})

    port = free_port()
    options = uvicorn_options(gateway_settings(forwarded_allow_ips=allow))
    server = uvicorn.Server(uvicorn.Config(echo, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                           **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        text = httpx.get(f"http://127.0.0.1:{port}/", headers={"X-Forwarded-For": "203.0.113.9",
                                                              "X-Forwarded-Proto": "https"}).text
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert text == f"{expected_client} {'https' if allow else 'http'}"


# -- 5. security headers on every response ------------------------------------------------------

SECURITY = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_security_headers(headers) -> None:
    for name, value in SECURITY.items():
        assert headers[name] == value, name
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


@pytest.mark.parametrize("method,path,headers,status", [
    ("GET", "/", {}, 200),
    ("GET", f"/media/{STOCK}", {}, 200),
    ("GET", "/static/api.js", {}, 200),
    ("GET", "/healthz", {}, 200),
    ("GET", "/metrics", {}, 200),
    ("GET", "/v1/jobs", {}, 401),
    ("GET", "/v1/jobs", AUTH, 200),
    ("GET", "/v1/media/0123456789abcdef", AUTH, 404),
    ("GET", f"/v1/media/{STOCK}/stream", {**AUTH, "Range": "bytes=0-9"}, 206),
    ("GET", f"/v1/media/{STOCK}/stream", {**AUTH, "Range": "bytes=x"}, 416),
    ("GET", "/static/%2e%2e/x", {}, 400),
    ("POST", "/v1/search", {**AUTH, "Content-Length": str(1 << 30)}, 413),
])
async def test_security_headers_on_every_response(client, method, path, headers, status):
    response = await client.request(method, path, headers=headers)
    assert response.status_code == status, response.text
    assert_security_headers(response.headers)


async def test_security_headers_on_a_500(client, monkeypatch):
    async def broken():
        raise RuntimeError("a bug")

    monkeypatch.setattr(client.app.state.backend, "list_jobs", broken)
    transport = httpx.ASGITransport(app=client.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as plain:
        response = await plain.get("/v1/jobs", headers=AUTH)
    assert_error(response, 500, "internal_error", "internal error")
    assert_security_headers(response.headers)


async def test_pages_have_no_inline_script_or_style(client):
    for path in ("/", f"/media/{STOCK}"):
        html = (await client.get(path)).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
        assert "<style" not in html and not re.search(r"\sstyle=", html)
        assert not re.search(r"\son[a-z]+=", html), "inline event handler"


async def test_stream_names_a_safe_file(client):
    response = await client.get(f"/v1/media/{STOCK}/stream", headers={**AUTH, "Range": "bytes=0-9"})
    assert response.headers["content-disposition"] == f'inline; filename="{STOCK}.mp4"'


# -- 6. docs and metrics behind settings -----------------------------------------------------

async def test_docs_are_off_by_default(client):
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert_error(await client.get(path), 404, "not_found", "Not Found")
    assert 'href="/docs"' not in (await client.get("/")).text


async def test_docs_and_metrics_settings(tmp_path, engines_cache):
    async with running_app(tmp_path / "data", engines_cache, docs_enabled=True, metrics_enabled=False) as c:
        assert (await c.get("/openapi.json")).json()["info"]["title"] == "Mediaflow gateway"
        for path in ("/docs", "/redoc"):
            page = await c.get(path)
            assert page.status_code == 200
            csp = page.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self' https://cdn.jsdelivr.net" in csp
        inline = re.search(r"<script>(.*?)</script>", (await c.get("/docs")).text, re.S).group(1)
        import base64
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in (await c.get("/docs")).headers["content-security-policy"]
        assert 'href="/docs"' in (await c.get("/")).text
        assert_error(await c.get("/metrics"), 404, "not_found")


# -- 7. nothing stored when a request fails ----------------------------------------------------

@pytest.mark.parametrize("failure,status,message", [
    ("queue full", 503, "too many jobs queued; try again later"),
    ("engine down", 503, "the job queue is unavailable"),
])
async def test_a_refused_submission_leaves_nothing(client, tmp_path, monkeypatch, failure, status, message):
    backend = client.app.state.backend
    if failure == "queue full":
        monkeypatch.setattr(backend.tracker, "active", lambda: backend.settings.max_queued_jobs)
    else:
        async def down(job_id, spec):
            raise EngineUnavailableError("the job queue is unavailable")
        monkeypatch.setattr(backend, "submit", down)
    payload = tone(tmp_path, 900)
    response = await client.post("/v1/media", headers=AUTH, **multipart("a.wav", payload))
    assert_error(response, status, "unavailable", message)
    if failure == "queue full":
        assert response.headers["retry-after"] == "30"
    assert not backend.store.fs.exists(f"{backend.store.root}/media/{media_id_for(hashlib.sha256(payload).hexdigest())}")
    assert backend.tracker.all() == []
    assert_clean(client)


@pytest.mark.parametrize("after_chunks", [1, 3, 40])
async def test_a_client_that_goes_away_mid_upload_leaves_nothing(client, sample_bytes, after_chunks):
    head = (b'--bnd\r\nContent-Disposition: form-data; name="title"\r\n\r\nx\r\n'
            b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n')
    chunks = [head] + [sample_bytes[i:i + 32768] for i in range(0, len(sample_bytes), 32768)]
    response = await raw_request(client.app, "POST", "/v1/media", body_chunks=chunks, disconnect_after=after_chunks,
                                 headers=[(b"content-type", b"multipart/form-data; boundary=bnd"), *KEY])
    assert response.status == 400  # nobody reads it; not a 500 in the log
    assert client.app.state.backend.tracker.all() == []
    assert_clean(client)


async def test_a_cancelled_upload_leaves_nothing(client, sample_bytes):
    gate = asyncio.Event()

    async def slow_body():
        yield (b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'
               + sample_bytes[:1 << 20])
        gate.set()
        await asyncio.sleep(3600)
        yield b""

    task = asyncio.create_task(client.post("/v1/media", content=slow_body(),
                                           headers={**AUTH, "Content-Type": "multipart/form-data; boundary=bnd"}))
    await asyncio.wait_for(gate.wait(), 30)
    for _ in range(50):  # the first MiB is written to the staging area
        if staged_uploads(client.app):
            break
        await asyncio.sleep(0.02)
    assert staged_uploads(client.app)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_clean(client)


@pytest.mark.parametrize("name,payload,status,code,message", [
    ("notes.mp4", b"%PDF-1.7 a document, whatever its name says " * 40, 415, "unsupported_media_type",
     "the upload is not an audio or video file (unrecognized content)"),
    ("x.mp4", b"\x00\x00\x00\x18ftypisom" + bytes(4000), 415, "unsupported_media_type", None),
    ("empty.mp4", b"", 422, "invalid_request", "the file part is empty"),
    ("tiny.mp4", b"\x00\x00", 415, "unsupported_media_type",
     "the upload is not an audio or video file (unrecognized content)"),
])
async def test_a_refused_upload_leaves_nothing(client, name, payload, status, code, message):
    response = await client.post("/v1/media", headers=AUTH, **multipart(name, payload))
    error = assert_error(response, status, code, message)
    if message is None:
        assert error["message"].startswith("not a readable media file"), error
    assert_clean(client)


# -- 8. the same bytes are the same media and the same job --------------------------------------

async def test_the_same_bytes_at_once_make_one_job(client, tmp_path, no_processing):
    payload = tone(tmp_path, 1100)
    media_id = media_id_for(hashlib.sha256(payload).hexdigest())
    responses = await asyncio.gather(*(client.post("/v1/media", headers=AUTH, **multipart(f"{i}.wav", payload))
                                       for i in range(4)))
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 202], [r.text for r in responses]
    bodies = [r.json() for r in responses]
    assert {(b["media_id"], b["job_id"]) for b in bodies} == {(media_id, media_id)}
    assert sorted(b["existing"] for b in bodies) == [False, True, True, True]
    assert [j.id for j in client.app.state.backend.tracker.all()] == [media_id]
    store = client.app.state.backend.store
    assert store.fs.ls(f"{store.root}/media/{media_id}", detail=False) == [store.path(media_id, "source.wav")]
    assert store.read_bytes(media_id, "source.wav") == payload
    assert staged_uploads(client.app) == []
    assert backend_submits_locks_are_dropped(client)
    await asyncio.to_thread(store.delete_media, media_id)


def backend_submits_locks_are_dropped(client) -> bool:
    return client.app.state.backend._submit_locks == {}


async def test_a_stored_media_without_a_job_gets_one_and_keeps_its_file(client, tmp_path, no_processing):
    # e.g. after a restart: the store has the media, the in-memory tracker has no job.
    payload = tone(tmp_path, 1300)
    first = await client.post("/v1/media", headers=AUTH, **multipart("a.wav", payload))
    assert first.status_code == 202, first.text
    media_id = first.json()["media_id"]
    store = client.app.state.backend.store
    written = store.fs.info(store.path(media_id, "source.wav"))["mtime"]
    client.app.state.backend.tracker.remove(media_id)
    again = await client.post("/v1/media", headers=AUTH, **multipart("b.wav", payload))
    assert again.status_code == 202 and again.json()["media_id"] == media_id and not again.json()["existing"]
    assert store.fs.info(store.path(media_id, "source.wav"))["mtime"] == written
    assert staged_uploads(client.app) == []
    await asyncio.to_thread(store.delete_media, media_id)


def test_job_and_media_ids_derive_from_the_bytes_for_both_backends():
    from mediaflow.status import mediajob_media_id
    from mediaflow_gateway.backends.cluster import ClusterBackend
    from mediaflow_gateway.backends.embedded import EmbeddedBackend

    digest = hashlib.sha256(b"some bytes").hexdigest()
    embedded = EmbeddedBackend.__new__(EmbeddedBackend)
    assert embedded.job_id_for_content(digest) == media_id_for(digest) == digest[:16]
    assert embedded.media_id_for_job(embedded.job_id_for_content(digest)) == media_id_for(digest)
    cluster = ClusterBackend.__new__(ClusterBackend)
    cluster.kube = type("Kube", (), {"namespace": "media"})()
    assert cluster.job_id_for_content(digest) == f"m-{digest[:16]}"
    assert cluster.media_id_for_job(cluster.job_id_for_content(digest)) == mediajob_media_id("media", f"m-{digest[:16]}")


async def test_uploads_left_staged_by_a_dead_process_are_dropped_at_start(client):
    # At start (and every minute) a staging dir goes when its owner is provably dead or its
    # lease is stale; a live upload, of this process or of another replica, is kept.
    import json
    import os
    import subprocess

    from mediaflow_gateway.api import upload

    backend = client.app.state.backend
    root = upload.staging_root(backend.store)
    me = upload.this_process()
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid names no process now
    now, stale = time.time(), time.time() - 2 * upload.LEASE_STALE_SECONDS
    two_days_ago = now - 2 * 86400
    cases = {  # name: (owner file or None, its age stamp, kept)
        "legacy-old": (None, two_days_ago, False),  # an older gateway's, untouched for a day
        "legacy-fresh": (None, now, True),  # an older gateway's, maybe still arriving
        "dead-here": ({**me, "pid": gone.pid}, now, False),  # this host, its process is gone: at once
        "restarted-here": ({**me, "started": "another-boot:1"}, now, False),  # same pid, another process
        "live-here": (me, now, True),  # this process: an upload in flight
        "live-here-stale": (me, stale, False),  # alive but no longer refreshing: a leak
        "other-replica": ({**me, "host": "another-replica", "pid": 1}, now, True),  # its lease is fresh
        "other-replica-dead": ({**me, "host": "another-replica", "pid": 1}, stale, False),
    }
    for name, (owner, stamp, _) in cases.items():
        path = f"{root}/{name}"
        os.makedirs(path)
        with open(f"{path}/source.mp4", "wb") as fh:
            fh.write(b"partial")
        if owner is not None:
            with open(f"{path}/{upload.OWNER_FILE}", "w") as fh:
                json.dump(owner, fh)
            os.utime(f"{path}/{upload.OWNER_FILE}", (stamp, stamp))
        os.utime(path, (stamp, stamp))
    removed = await asyncio.to_thread(backend._clean_staging)
    assert set(removed) <= {f"{root}/{n}" for n, (_, _, kept) in cases.items() if not kept}  # (or the janitor's)
    assert sorted(staged_uploads(client.app)) == sorted(f"{root}/{n}" for n, (_, _, kept) in cases.items() if kept)
    for name in ("legacy-fresh", "live-here", "other-replica"):
        await asyncio.to_thread(backend.store.fs.rm, f"{root}/{name}", recursive=True)
    assert_clean(client)
