"""Issue 13 (3): the bad-input catalogue, through the HTTP API of a real embedded gateway.

Media files a user (or an attacker) uploads, URL sources in every SSRF form, and API
payloads. Each case asserts the status, the error code and the message, and that nothing
was stored: no media dir, nothing staged, no index point. The other catalogues: headers,
paths, bodies and limits in test_hardening.py; MediaJob specs (every CRD rule through
Google's CEL runtime) in tests/operator/test_crd.py; SSRF address forms in
tests/core/test_sources.py. ``pytest -m bad_input --collect-only -q`` counts them all.
"""

from __future__ import annotations

import asyncio
import random
import re
import struct
import subprocess

import pytest
import pytest_asyncio

from tests.gateway.conftest import AUTH, assert_error, assert_nothing_stored, indexed_points, multipart, running_app

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.bad_input]

UNRECOGNIZED = "the upload is not an audio or video file (unrecognized content)"
INVALID = "the request body or parameters are invalid"
REFUSED_CONTAINER = ("not a readable media file: source.mp3 is a '{}' file, not an audio or video container "
                     "(playlists, concat lists, images and raw samples are refused)")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def wav(fmt_tag: int, data: bytes, *, declared: int | None = None) -> bytes:
    fmt = struct.pack("<HHIIHH", fmt_tag, 1, 16000, 32000, 2, 16)
    size = len(data) if declared is None else declared
    return (b"RIFF" + struct.pack("<I", (36 + size) & 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", size) + data)


def scrambled(data: bytes, start: int, length: int, seed: int = 13) -> bytes:
    noise = random.Random(seed)
    out = bytearray(data)
    for i in range(start, min(start + length, len(out))):
        out[i] = noise.randrange(256)
    return bytes(out)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, tuple[str, bytes]]:
    """name -> (upload file name, bytes): real files made by ffmpeg, then damaged on purpose."""
    d = tmp_path_factory.mktemp("bad-media")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=2", "-f", "lavfi", "-i", "sine=duration=2",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(d / "ok.mp4"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:duration=2", "-c:v", "libx264", "-preset", "ultrafast",
           str(d / "silent-video.mp4"))
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0", str(d / "zero.wav"))
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "60", str(d / "silence.wav"))
    ffmpeg("-f", "lavfi", "-i", "color=black:s=8192x8192:d=0.04", "-f", "lavfi", "-i", "sine=duration=1",
           "-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(d / "huge.mp4"))
    (d / "s.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    ffmpeg("-i", str(d / "s.srt"), str(d / "subs.mkv"))
    ffmpeg("-f", "lavfi", "-i", "color=red:s=64x64:d=1", "-frames:v", "1", str(d / "img.png"))
    ffmpeg("-f", "lavfi", "-i", "sine=duration=2", "-f", "s16le", str(d / "raw.sln"))
    ok = (d / "ok.mp4").read_bytes()
    moov, mdat = ok.find(b"moov"), ok.find(b"mdat")
    assert moov > mdat > 0  # ffmpeg's default layout: the index (moov) after the data
    id3 = b"ID3\x03\x00\x00\x00\x00\x00\x00"
    return {
        "truncated mp4": ("talk.mp4", ok[: moov - 100]),
        "text named .mp4": ("talk.mp4", b"Just some notes about the meeting, nothing to hear.\n" * 80),
        "video without audio": ("talk.mp4", (d / "silent-video.mp4").read_bytes()),
        "zero-length audio": ("talk.wav", (d / "zero.wav").read_bytes()),
        "huge dimensions": ("talk.mp4", (d / "huge.mp4").read_bytes()),
        "unsupported codec": ("talk.wav", wav(0x1234, bytes(32000))),
        "corrupt container index": ("talk.mp4", scrambled(ok, moov + 8, 400)),
        "subtitles only": ("talk.mkv", (d / "subs.mkv").read_bytes()),
        "polyglot: HLS playlist behind an ID3 tag": (
            "talk.mp3", id3 + f"#EXTM3U\n#EXT-X-TARGETDURATION:9\n#EXTINF:9,\n{d / 'ok.mp4'}\n#EXT-X-ENDLIST\n".encode()),
        "polyglot: concat list behind an ID3 tag": (
            "talk.mp3", id3 + f"ffconcat version 1.0\nfile {d / 'ok.mp4'}\n".encode()),
        "polyglot: DASH manifest behind an ID3 tag": (
            "talk.mp3", id3 + b'<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011">'
            b"<Period><AdaptationSet><Representation><BaseURL>file:///etc/passwd</BaseURL>"
            b"</Representation></AdaptationSet></Period></MPD>"),
        "an ID3 tag and nothing else": ("talk.mp3", id3 + bytes(2000)),
        "image named .wav": ("talk.wav", (d / "img.png").read_bytes()),
        "raw samples named .sln": ("talk.sln", (d / "raw.sln").read_bytes()),
        "zip named .m4a": ("talk.m4a", b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(3000)),
        "wav header only, 2 GB declared": ("talk.wav", wav(1, b"", declared=0x7FFFFFF0)),
        # accepted at the door (probe reads it), refused when decoded: see the test below
        "corrupt audio data": ("talk.mp4", scrambled(ok, mdat + 8, 40_000)),
        "long silence": ("talk.wav", (d / "silence.wav").read_bytes()),
        "HTML inside a WAV": ("page.wav", wav(1, b"<html><script>alert(document.cookie)</script></html>" * 50
                                             + bytes(32000))),
    }


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tmp_path_factory, engines_cache):
    async with running_app(tmp_path_factory.mktemp("gw-bad-input"), engines_cache) as client:
        yield client


# -- media files refused at the door -------------------------------------------------------

REFUSED_UPLOADS = [
    # (case, message: exact, or a regex when it starts with "^")
    ("truncated mp4", r"^not a readable media file \(corrupt, truncated or unsupported\): source\.mp4: "),
    ("text named .mp4", UNRECOGNIZED),
    ("video without audio", "no audio stream in source.mp4: nothing to transcribe"),
    ("zero-length audio", "source.wav has no playable duration"),
    ("huge dimensions", "video of 8192x8192 pixels in source.mp4 is over the limit of 33177600 pixels (7680x4320)"),
    ("unsupported codec", "unsupported audio codec in source.wav (codec tag 0x1234): no decoder for it"),
    ("corrupt container index", r"^(no audio stream in source\.mp4|not a readable media file)"),
    ("subtitles only", "no audio stream in source.mkv: nothing to transcribe"),
    ("polyglot: HLS playlist behind an ID3 tag", REFUSED_CONTAINER.format("hls")),
    ("polyglot: concat list behind an ID3 tag", r"^not a readable media file"),
    ("polyglot: DASH manifest behind an ID3 tag", r"^not a readable media file"),
    ("an ID3 tag and nothing else", r"^not a readable media file"),
    ("image named .wav", UNRECOGNIZED),
    ("raw samples named .sln", UNRECOGNIZED),
    ("zip named .m4a", UNRECOGNIZED),
    ("wav header only, 2 GB declared", r"^(source\.wav has no playable duration|not a readable media file)"),
]


@pytest.mark.parametrize("case,message", REFUSED_UPLOADS, ids=[c for c, _ in REFUSED_UPLOADS])
async def test_a_bad_media_file_is_refused_at_upload(client, media, case, message):
    name, payload = media[case]
    error = assert_error(await client.post("/v1/media", headers=AUTH, **multipart(name, payload)),
                         415, "unsupported_media_type")
    if message.startswith("^"):
        assert re.match(message, error["message"]), error
    else:
        assert error["message"] == message
    assert client.app.state.backend.tracker.all() == []
    assert_nothing_stored(client.app)


async def wait_job(client, job_url: str, timeout: float = 240) -> dict:
    for _ in range(int(timeout * 5)):
        job = (await client.get(job_url, headers=AUTH)).json()
        if job["phase"] in ("Succeeded", "Failed"):
            return job
        await asyncio.sleep(0.2)
    raise TimeoutError(job_url)


async def test_audio_that_fails_to_decode_fails_its_job_and_leaves_nothing(client, media):
    name, payload = media["corrupt audio data"]
    created = await client.post("/v1/media", headers=AUTH, **multipart(name, payload))
    assert created.status_code == 202, created.text
    job = await wait_job(client, created.json()["job_url"])
    assert job["phase"] == "Failed", job
    assert re.search(r"is truncated or damaged: decoded [\d.]+ s of [\d.]+ s", job["message"]), job
    failed = [c for c in job["conditions"] if c["status"] == "False"]
    assert [c["type"] for c in failed] == ["extract_audio"], job["conditions"]
    assert_nothing_stored(client.app)
    client.app.state.backend.tracker.remove(job["id"])


async def test_long_silence_is_processed_to_an_empty_transcript_and_no_points(client, media):
    name, payload = media["long silence"]
    created = (await client.post("/v1/media", headers=AUTH, **multipart(name, payload))).json()
    job = await wait_job(client, created["job_url"])
    assert job["phase"] == "Succeeded", job
    transcript = (await client.get(f"/v1/media/{created['media_id']}/transcript", headers=AUTH)).json()
    assert transcript["segments"] == [], transcript  # nothing invented for 60 s of silence
    assert indexed_points(client.app) == 0
    hits = (await client.post("/v1/search", headers=AUTH, json={"query": "anything at all"})).json()
    assert hits["hits"] == []
    assert (await client.delete(f"/v1/media/{created['media_id']}", headers=AUTH)).status_code == 204
    assert_nothing_stored(client.app)


async def test_html_inside_a_wav_is_only_ever_served_as_audio(client, media):
    name, payload = media["HTML inside a WAV"]
    created = (await client.post("/v1/media", headers=AUTH, **multipart(name, payload))).json()
    await wait_job(client, created["job_url"])
    stream = await client.get(f"/v1/media/{created['media_id']}/stream", headers=AUTH)
    assert stream.status_code == 200 and stream.content == payload
    assert stream.headers["content-type"] == "audio/wav"
    assert stream.headers["x-content-type-options"] == "nosniff"
    assert stream.headers["content-disposition"] == f'inline; filename="{created["media_id"]}.wav"'
    assert (await client.delete(f"/v1/media/{created['media_id']}", headers=AUTH)).status_code == 204
    assert_nothing_stored(client.app)


# -- URL sources: every SSRF form is refused before a job exists ------------------------------

LITERAL_URLS = [
    ("http://127.0.0.1/a.mp4", "127.0.0.1", "127.0.0.1"),
    ("http://127.1/a.mp4", "127.1", "127.0.0.1"),
    ("http://2130706433/a.mp4", "2130706433", "127.0.0.1"),
    ("http://0x7f000001/a.mp4", "0x7f000001", "127.0.0.1"),
    ("http://0177.0.0.1/a.mp4", "0177.0.0.1", "127.0.0.1"),
    ("https://169.254.169.254/latest/meta-data/", "169.254.169.254", "169.254.169.254"),
    ("http://10.0.0.7:8080/a.mp4", "10.0.0.7", "10.0.0.7"),
    ("http://192.168.1.1/a.mp4", "192.168.1.1", "192.168.1.1"),
    ("http://100.64.0.1/a.mp4", "100.64.0.1", "100.64.0.1"),
    ("http://0.0.0.0/a.mp4", "0.0.0.0", "0.0.0.0"),
    ("http://224.0.0.1/a.mp4", "224.0.0.1", "224.0.0.1"),
    ("http://[::1]/a.mp4", "::1", "::1"),
    ("http://[::ffff:127.0.0.1]/a.mp4", "::ffff:127.0.0.1", "::ffff:7f00:1"),
    ("http://[::127.0.0.1]/a.mp4", "::127.0.0.1", "::7f00:1"),
    ("http://[64:ff9b::a9fe:a9fe]/a.mp4", "64:ff9b::a9fe:a9fe", "64:ff9b::a9fe:a9fe"),
    ("http://[2002:7f00:1::1]/a.mp4", "2002:7f00:1::1", "2002:7f00:1::1"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/a.mp4", "2001:0:4136:e378:8000:63bf:80ff:fffe",
     "2001:0:4136:e378:8000:63bf:80ff:fffe"),
    ("http://[fe80::1%25eth0]/a.mp4", "fe80::1%25eth0", "fe80::1"),
    ("http://[fc00::1]/a.mp4", "fc00::1", "fc00::1"),
    ("http://[ff02::1]/a.mp4", "ff02::1", "ff02::1"),
]


@pytest.mark.parametrize("url,host,address", LITERAL_URLS, ids=[u for u, _, _ in LITERAL_URLS])
async def test_a_url_at_a_non_public_address_is_refused_at_once(client, url, host, address):
    response = await client.post("/v1/media", headers=AUTH, json={"url": url})
    assert_error(response, 422, "invalid_request", f"refusing to fetch from {host} ({address}): not a public address")
    assert client.app.state.backend.tracker.all() == []
    assert_nothing_stored(client.app)


MALFORMED_URLS = [
    ("file:///etc/passwd", INVALID),
    ("gopher://example.org/1", INVALID),
    ("ftp://example.org/a.mp4", INVALID),
    ("dict://127.0.0.1:11211/stat", INVALID),
    ("http://user:secret@example.org/a.mp4", INVALID),
    ("http://example.org:99999/a.mp4", "invalid port in URL: http://example.org:99999/a.mp4"),
    ("http://example.org/" + "a" * 2100, INVALID),
    ("/etc/passwd", "local path /etc/passwd is not under an allowed media root: the API takes uploads and "
                    "http(s)/s3 URLs"),
    ("/media/../etc/passwd", "local path /media/../etc/passwd is not under an allowed media root: the API takes "
                             "uploads and http(s)/s3 URLs"),
]


@pytest.mark.parametrize("url,message", MALFORMED_URLS, ids=[u[:60] for u, _ in MALFORMED_URLS])
async def test_a_url_of_another_scheme_or_form_is_refused(client, url, message):
    assert_error(await client.post("/v1/media", headers=AUTH, json={"url": url}), 422, "invalid_request", message)
    assert_nothing_stored(client.app)


async def test_a_name_resolving_to_loopback_fails_its_job_when_fetched(client):
    # A name is vetted against the DNS answer the download then uses (no rebinding).
    created = await client.post("/v1/media", headers=AUTH, json={"url": "http://localhost:9/a.mp4"})
    assert created.status_code == 202, created.text
    job = await wait_job(client, created.json()["job_url"])
    assert job["phase"] == "Failed"
    assert re.search(r"refusing to fetch from localhost \((127\.0\.0\.1|::1)\): not a public address",
                     job["message"]), job
    client.app.state.backend.tracker.remove(job["id"])
    assert_nothing_stored(client.app)


# -- API payloads ---------------------------------------------------------------------------

PAYLOADS = [
    # (case, path, raw JSON body, error type, location)
    ("invalid JSON", "/v1/search", b'{"query": ', "json_invalid", ["body", 10]),
    ("a JSON array", "/v1/search", b'["query"]', "model_attributes_type", ["body"]),
    ("query of the wrong type", "/v1/search", b'{"query": 5}', "string_type", ["body", "query"]),
    ("query missing", "/v1/search", b'{"top_k": 3}', "missing", ["body", "query"]),
    ("empty query", "/v1/search", b'{"query": ""}', "string_too_short", ["body", "query"]),
    ("query over 1000 characters", "/v1/search", b'{"query": "' + b"q" * 1001 + b'"}', "string_too_long",
     ["body", "query"]),
    ("unknown field", "/v1/search", b'{"query": "x", "filter": {"$where": "1"}}', "extra_forbidden",
     ["body", "filter"]),
    ("top_k zero", "/v1/search", b'{"query": "x", "top_k": 0}', "greater_than_equal", ["body", "top_k"]),
    ("top_k negative", "/v1/search", b'{"query": "x", "top_k": -3}', "greater_than_equal", ["body", "top_k"]),
    ("top_k over the limit", "/v1/search", b'{"query": "x", "top_k": 100000000}', "less_than_equal",
     ["body", "top_k"]),
    ("top_k a fraction", "/v1/search", b'{"query": "x", "top_k": 2.5}', "int_from_float", ["body", "top_k"]),
    ("top_k a word", "/v1/search", b'{"query": "x", "top_k": "many"}', "int_parsing", ["body", "top_k"]),
    ("media id path traversal", "/v1/search", b'{"query": "x", "media_id": "../../etc"}', "string_pattern_mismatch",
     ["body", "media_id"]),
    ("a lone surrogate", "/v1/search", b'{"query": "\\ud800 and text"}', "string_unicode", ["body", "query"]),
    ("question of the wrong type", "/v1/ask", b'{"question": ["a", "b"]}', "string_type", ["body", "question"]),
    ("ask top_k over the limit", "/v1/ask", b'{"question": "x", "top_k": 11}', "less_than_equal", ["body", "top_k"]),
    ("title over 256 characters", "/v1/media", b'{"url": "https://example.org/a.mp4", "title": "' + b"t" * 257
     + b'"}', "string_too_long", ["body", "title"]),
    ("language not a code", "/v1/media", b'{"url": "https://example.org/a.mp4", "language": "english"}',
     "value_error", ["body", "language"]),
    ("language no Whisper code", "/v1/media", b'{"url": "https://example.org/a.mp4", "language": "xx"}',
     "value_error", ["body", "language"]),
    ("language of the wrong type", "/v1/media", b'{"url": "https://example.org/a.mp4", "language": 7}',
     "string_type", ["body", "language"]),
    ("unknown stage", "/v1/media", b'{"url": "https://example.org/a.mp4", "stages": {"shell": {}}}',
     "extra_forbidden", ["body", "stages", "shell"]),
]


@pytest.mark.parametrize("case,path,body,error_type,loc", PAYLOADS, ids=[p[0] for p in PAYLOADS])
async def test_a_bad_payload_is_422_with_its_reason(client, case, path, body, error_type, loc):
    response = await client.post(path, headers={**AUTH, "Content-Type": "application/json"}, content=body)
    error = assert_error(response, 422, "invalid_request", INVALID)
    assert {"type": error_type, "loc": loc} in [{"type": d["type"], "loc": d["loc"]} for d in error["details"]], error
    assert_nothing_stored(client.app)


UNICODE_QUERIES = [
    ("emoji", "🎙️ what is said about the 🌊?"),
    ("right-to-left", "מה נאמר על הלגונה"),
    ("CJK", "潟湖について何が言われましたか"),
    ("combining marks", "Z̷̡a̶l̴g̸o̵ ̷q̶u̵e̷r̸y"),
    ("NUL and controls", "lagoon\u0000\u001b[31m\u202e"),
    ("a thousand characters", "mangrove " * 111),
]


@pytest.mark.parametrize("case,query", UNICODE_QUERIES, ids=[c for c, _ in UNICODE_QUERIES])
async def test_odd_but_valid_text_is_searched_not_500(client, case, query):
    response = await client.post("/v1/search", headers=AUTH, json={"query": query, "top_k": 3})
    assert response.status_code == 200, response.text
    assert response.json()["hits"] == []  # the library is empty here
    assert_nothing_stored(client.app)


async def test_a_blank_query_is_a_clear_4xx(client):
    response = await client.post("/v1/search", headers=AUTH, json={"query": " \t\n "})
    assert_error(response, 400, "bad_request", "empty query")
    assert_nothing_stored(client.app)

