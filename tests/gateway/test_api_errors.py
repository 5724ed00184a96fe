"""Every refusal is a clear JSON error: auth, size, type, unknown ids, malformed bodies, rate limit."""

from __future__ import annotations

import pytest
import pytest_asyncio

from tests.gateway.conftest import AUTH, assert_error, assert_nothing_stored, multipart, running_app

pytestmark = pytest.mark.asyncio(loop_scope="module")
LIMIT = 64 * 1024


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tmp_path_factory, engines_cache):
    async with running_app(tmp_path_factory.mktemp("gw-errors"), engines_cache,
                           max_upload_bytes=LIMIT, rate_limit_per_minute=1000) as client:
        yield client


async def test_no_key_is_401_with_challenge(client):
    response = await client.get("/v1/jobs")
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_wrong_key_is_403(client):
    assert_error(await client.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}), 403, "forbidden")
    assert_error(await client.post("/v1/search", json={"query": "x"}, headers={"Authorization": "Bearer wrong"}),
                 403, "forbidden")


async def test_probes_need_no_key(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["qdrant"] == "ok"
    metrics = await client.get("/metrics")
    assert 'mediaflow_gateway_requests_total{method="GET",route="/v1/jobs",status="401"}' in metrics.text


@pytest.mark.bad_input
async def test_upload_over_the_limit_is_413_and_leaves_nothing(client, sample_bytes):
    assert len(sample_bytes) > LIMIT
    response = await client.post("/v1/media", headers=AUTH, **multipart("big.mp4", sample_bytes))
    assert_error(response, 413, "payload_too_large")
    assert (await client.get("/v1/media", headers=AUTH)).json()["items"] == []
    assert_nothing_stored(client.app)


@pytest.mark.bad_input
async def test_upload_over_the_limit_without_content_length_is_413(client, sample_bytes):
    # A chunked body has no Content-Length: the limit is enforced while streaming.
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode()

    async def body():
        yield head
        for i in range(0, len(sample_bytes), 16384):
            yield sample_bytes[i:i + 16384]
        yield f"\r\n--{boundary}--\r\n".encode()

    response = await client.post("/v1/media", content=body(),
                                 headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert_error(response, 413, "payload_too_large", f"upload exceeds the limit of {LIMIT} bytes")
    assert_nothing_stored(client.app)


@pytest.mark.bad_input
@pytest.mark.parametrize("name,payload", [
    ("notes.mp4", b"%PDF-1.7 this is a document, whatever its name says " * 40),
    ("page.mp3", b"<!doctype html><html><body>hello</body></html>" * 40),
])
async def test_non_media_upload_is_415(client, name, payload):
    response = await client.post("/v1/media", headers=AUTH, **multipart(name, payload))
    assert_error(response, 415, "unsupported_media_type")
    assert_nothing_stored(client.app)


@pytest.mark.bad_input
async def test_media_magic_with_garbage_inside_is_415(client):
    # Looks like MP4 to the magic bytes, but ffprobe cannot read it.
    payload = b"\x00\x00\x00\x18ftypisom" + bytes(4000)
    assert_error(await client.post("/v1/media", headers=AUTH, **multipart("x.mp4", payload)),
                 415, "unsupported_media_type")
    assert_nothing_stored(client.app)


async def test_unknown_ids_are_404(client):
    for path in ("/v1/jobs/0123456789abcdef", "/v1/jobs/0123456789abcdef/events",
                 "/v1/media/0123456789abcdef", "/v1/media/0123456789abcdef/transcript",
                 "/v1/media/0123456789abcdef/summary", "/v1/media/0123456789abcdef/stream"):
        assert_error(await client.get(path, headers=AUTH), 404, "not_found")
    assert_error(await client.delete("/v1/media/0123456789abcdef", headers=AUTH), 404, "not_found")
    assert_error(await client.post("/v1/search", headers=AUTH, json={"query": "x", "media_id": "0123456789abcdef"}),
                 404, "not_found")


@pytest.mark.parametrize("method,path,kwargs", [
    ("POST", "/v1/search", {"json": {}}),
    ("POST", "/v1/search", {"json": {"query": ""}}),
    ("POST", "/v1/search", {"json": {"query": "x", "top_k": 0}}),
    ("POST", "/v1/search", {"json": {"query": "x", "surprise": 1}}),
    ("POST", "/v1/search", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
    ("POST", "/v1/ask", {"json": {"question": "x", "media_id": "../etc"}}),
    ("POST", "/v1/media", {"json": {"url": "file:///etc/passwd"}}),
    ("POST", "/v1/media", {"json": {"title": "no url"}}),
    ("POST", "/v1/media", {"content": b"{", "headers": {"Content-Type": "application/json"}}),
    ("GET", "/v1/media/0123456789abcdef/transcript?format=pdf", {}),
    ("GET", "/v1/media/BAD..ID/transcript", {}),
])
@pytest.mark.bad_input
async def test_malformed_requests_are_422(client, method, path, kwargs):
    headers = {**AUTH, **kwargs.pop("headers", {})}
    error = assert_error(await client.request(method, path, headers=headers, **kwargs), 422, "invalid_request")
    assert error.get("details"), error


async def test_multipart_without_file_part_is_422(client):
    response = await client.post("/v1/media", headers=AUTH, data={"title": "x"}, files={"other": ("a", b"b")})
    assert_error(response, 422, "invalid_request")


async def test_rate_limit_is_429_per_key(tmp_path, engines_cache):
    async with running_app(tmp_path / "data", engines_cache, rate_limit_per_minute=3) as limited:
        for _ in range(3):
            assert (await limited.get("/v1/jobs", headers=AUTH)).status_code == 200
        response = await limited.get("/v1/jobs", headers=AUTH)
        assert_error(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) >= 1


@pytest.mark.bad_input
@pytest.mark.parametrize("path", ["/etc/passwd", "/etc/hostname.sln", "/nonexistent/file.mp4", "/proc/self/environ"])
async def test_local_paths_are_refused_over_the_api_the_same_way_whether_they_exist_or_not(client, path):
    response = await client.post("/v1/media", headers=AUTH, json={"url": path})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"] == (
        f"local path {path} is not under an allowed media root: the API takes uploads and http(s)/s3 URLs")
    assert client.app.state.backend.store.list_media() == []
