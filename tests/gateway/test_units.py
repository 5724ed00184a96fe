"""Fast checks of the gateway's small parts: sniffing, ranges, rate limit, signed URLs, auth."""

from __future__ import annotations

import pytest

from mediaflow_gateway.api.auth import KeyRing, RateLimiter, StreamSigner
from mediaflow_gateway.api.errors import ApiError
from mediaflow_gateway.api.ranges import parse_range
from mediaflow_gateway.sniff import sniff
from tests.gateway.conftest import API_KEY, gateway_settings


def test_sniff_recognizes_real_media_by_content(sample_bytes, tmp_path):
    import subprocess

    assert sniff(sample_bytes[:512]).extension == ".mp4"
    for suffix in (".wav", ".mp3", ".ogg", ".flac", ".webm"):
        out = tmp_path / f"tone{suffix}"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", str(out)], check=True)
        assert sniff(out.read_bytes()[:512]).extension == suffix, suffix


@pytest.mark.parametrize("head", [b"%PDF-1.7\n", b"<!doctype html><html>", b"PK\x03\x04zipdata", b"\x89PNG\r\n\x1a\n", b""])
def test_sniff_refuses_non_media(head):
    assert sniff(head + bytes(300)) is None


@pytest.mark.parametrize("header,expected", [
    (None, None), ("bytes=0-99", (0, 99)), ("bytes=100-", (100, 999)), ("bytes=-10", (990, 999)),
    ("bytes=900-5000", (900, 999)),
])
def test_parse_range(header, expected):
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-2", "items=0-1", "bytes=-", "bytes=0-1,5-6"])
def test_parse_range_refuses_unsatisfiable(header):
    with pytest.raises(ApiError) as err:
        parse_range(header, 1000)
    assert err.value.status == 416 and err.value.headers["Content-Range"] == "bytes */1000"


def test_rate_limiter_refills_over_time():
    now = [0.0]
    limiter = RateLimiter(per_minute=3, clock=lambda: now[0])
    for _ in range(3):
        limiter.check("k")
    with pytest.raises(ApiError) as err:
        limiter.check("k")
    assert err.value.status == 429 and int(err.value.headers["Retry-After"]) >= 1
    limiter.check("other")  # buckets are per key
    now[0] += 20.0  # 3 per minute = one every 20 s
    limiter.check("k")


def test_keyring_distinguishes_missing_and_wrong_keys():
    ring = KeyRing(gateway_settings())
    assert ring.authenticate(f"Bearer {API_KEY}")
    for header, status in ((None, 401), ("Basic abc", 401), ("Bearer ", 401), ("Bearer nope", 403)):
        with pytest.raises(ApiError) as err:
            ring.authenticate(header)
        assert err.value.status == status, header


def test_signed_stream_urls_are_bound_to_media_and_expire():
    signer = StreamSigner(gateway_settings())
    url = signer.sign("abc123")
    query = dict(p.split("=") for p in url.split("?")[1].split("&"))
    assert signer.verify("abc123", int(query["expires"]), query["sig"])
    assert not signer.verify("other1", int(query["expires"]), query["sig"])
    assert not signer.verify("abc123", int(query["expires"]) + 1, query["sig"])
    assert not signer.verify("abc123", 1, signer._mac("abc123", 1))  # expired
