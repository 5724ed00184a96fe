"""Fast checks of the gateway's small parts: sniffing, ranges, rate limit, signed URLs, auth."""

from __future__ import annotations

import pytest

from mediaflow_gateway.api.auth import KeyRing, RateLimiter, StreamSigner, failure_limiter
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


@pytest.mark.parametrize("header", [
    "bytes=1000-", "bytes=5-2", "items=0-1", "bytes=-", "bytes=0-1,5-6",
    "bytes=" + "9" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000, "bytes=" + "1" * 20 + "-",
    "bytes=\u0663-\u0664", "bytes=\u00b2-", "bytes=0x10-", "bytes= 1-2", "bytes=1-2\x00", "bytes=--1", "",
])
def test_parse_range_refuses_unsatisfiable(header):
    if not header:
        assert parse_range(header, 1000) is None  # no Range header: the whole file
        return
    with pytest.raises(ApiError) as err:
        parse_range(header, 1000)
    assert err.value.status == 416 and err.value.headers["Content-Range"] == "bytes */1000"
    assert err.value.message.startswith(("unsupported range", "range ")) and len(err.value.message) < 200


def test_parse_range_takes_19_digit_positions():
    assert parse_range("bytes=" + "9" * 19 + "-", 10**20) == (10**19 - 1, 10**20 - 1)
    assert parse_range("bytes=0-" + "9" * 19, 1000) == (0, 999)


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
    assert ring.authenticate(f"Bearer {API_KEY}") == ring.authenticate(f"Bearer {API_KEY}".encode())
    for header, status in ((None, 401), ("Basic abc", 401), ("Bearer ", 401), ("Bearer nope", 403),
                           ("Bearer ключ", 403), ("Bearer \udcff", 403), ("Bearer \ud800x", 403), ("Bearer ÿþ", 403),
                           (b"Bearer \xff\xfe\x00", 403), (b"Bearer " + b"k" * 100_000, 403),
                           ("B\u00e9arer x", 401), (b"\xff", 401)):
        with pytest.raises(ApiError) as err:
            ring.authenticate(header)
        assert err.value.status == status, header


def test_keyring_accepts_a_non_ascii_key_sent_as_utf8():
    ring = KeyRing(gateway_settings(api_keys=["schlüssel-🔑"]))
    assert ring.authenticate("Bearer schlüssel-🔑".encode())
    # as Starlette hands it on: the header's bytes decoded as latin-1
    assert ring.authenticate("Bearer schlüssel-🔑".encode().decode("latin-1"))


def test_failure_limiter_is_charged_by_failures_only():
    now = [0.0]
    failures = failure_limiter(per_minute=2, clock=lambda: now[0])
    for _ in range(5):
        failures.refuse_if_empty("10.0.0.1")  # looking takes nothing
    failures.charge("10.0.0.1")
    failures.charge("10.0.0.1")
    with pytest.raises(ApiError) as err:
        failures.refuse_if_empty("10.0.0.1")
    assert err.value.status == 429 and err.value.headers["Retry-After"] == "30"
    assert err.value.message == "too many failed authentication attempts from this address"
    failures.refuse_if_empty("10.0.0.2")
    now[0] += 30.0  # 2 per minute: one back every 30 s
    failures.refuse_if_empty("10.0.0.1")


def test_rate_limiter_keeps_a_bounded_number_of_buckets():
    limiter = RateLimiter(per_minute=1, max_keys=100)
    for n in range(1000):
        limiter.check(f"client-{n}")
    assert len(limiter._buckets) == 100


def test_signed_stream_urls_are_bound_to_media_and_expire():
    signer = StreamSigner(gateway_settings())
    url = signer.sign("abc123")
    query = dict(p.split("=") for p in url.split("?")[1].split("&"))
    assert signer.verify("abc123", int(query["expires"]), query["sig"])
    assert not signer.verify("other1", int(query["expires"]), query["sig"])
    assert not signer.verify("abc123", int(query["expires"]) + 1, query["sig"])
    assert not signer.verify("abc123", 1, signer._mac("abc123", 1))  # expired
    assert signer.verify("abc123", query["expires"], query["sig"])  # as query strings


@pytest.mark.parametrize("expires,sig", [
    ("9" * 5000, "a" * 64), ("٣٣٣٣٣٣٣٣٣٣", "a" * 64), ("-5", "a" * 64), ("1e10", "a" * 64), ("", "a" * 64),
    ("99999999999", "é" * 64), ("99999999999", "\udcff" * 64), ("99999999999", "a" * 65), ("99999999999", "\x00"),
    ("99999999999", "z" * 64), (None, "a" * 64), ("99999999999", None), (10**5000, "a" * 64),
], ids=lambda value: repr(value)[:20] if not isinstance(value, int) else f"int-{value.bit_length()}-bits")
def test_signed_url_garbage_is_just_invalid(expires, sig):
    assert StreamSigner(gateway_settings()).verify("abc123", expires, sig) is False
