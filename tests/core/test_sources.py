"""Sources: URL downloads with limits and SSRF checks; spec validation of source URIs."""

from __future__ import annotations

import http.server
import threading
from functools import partial

import pytest
from pydantic import ValidationError

from mediaflow.errors import InvalidSourceError, MediaTooLargeError
from mediaflow.pipeline import Pipeline
from mediaflow.spec import MediaJobSpec, Source
from tests.conftest import make_settings


@pytest.fixture
def http_server(sample_video):
    from pathlib import Path

    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(Path(sample_video.media).parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_url_source_is_downloaded_into_the_store(tmp_path, http_server, sample_video):
    settings = make_settings(tmp_path, allow_private_urls=True)
    with Pipeline(settings) as pipeline:
        record, probe = pipeline.ingest(f"{http_server}/island.mp4")
        assert record.stored_as == "source.mp4"
        assert pipeline.store.size(record.media_id, "source.mp4") == record.size_bytes
        assert probe.has_video and abs(probe.duration - sample_video.duration) < 1


@pytest.mark.bad_input
def test_private_addresses_are_refused_by_default(tmp_path, http_server):
    with Pipeline(make_settings(tmp_path)) as pipeline, pytest.raises(InvalidSourceError):
        pipeline.ingest(f"{http_server}/island.mp4")
    assert pipeline.store.list_media() == []


@pytest.mark.bad_input
def test_download_size_limit(tmp_path, http_server):
    settings = make_settings(tmp_path, allow_private_urls=True, max_media_bytes=10_000)
    with Pipeline(settings) as pipeline, pytest.raises(MediaTooLargeError):
        pipeline.ingest(f"{http_server}/island.mp4")
    assert pipeline.store.list_media() == []


@pytest.mark.bad_input
@pytest.mark.parametrize("uri", [
    "file:///etc/passwd", "relative/path.mp4", "/media/../etc/passwd", "gopher://x/y",
    "http://user@host/a.mp4", "s3://UPPER/key",
])
def test_spec_rejects_bad_source_uris(uri):
    with pytest.raises(ValidationError):
        Source(uri=uri)


def test_spec_accepts_supported_uris_and_camel_case():
    for uri in ("/media/talk.mp4", "https://example.org/v.mp4", "s3://bucket-1/talks/a.mp4"):
        assert Source(uri=uri).uri == uri
    spec = MediaJobSpec.model_validate(
        {"source": {"uri": "/media/a.mp4"}, "stages": {"chunking": {"overlapSeconds": 2}},
         "ttlSecondsAfterFinished": 60}
    )
    assert spec.stages.chunking.overlap_seconds == 2 and spec.ttl_seconds_after_finished == 60
    with pytest.raises(ValidationError):
        MediaJobSpec.model_validate({"source": {"uri": "/a.mp4"}, "stages": {"bogus": {}}})


@pytest.mark.bad_input
@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255",
    "::1", "fe80::1", "fc00::1", "ff02::1",
    "::ffff:127.0.0.1",        # IPv4-mapped
    "::127.0.0.1",             # IPv4-compatible (deprecated), is_global says True
    "64:ff9b::a9fe:a9fe",      # NAT64 of 169.254.169.254
    "64:ff9b:1::a00:1",        # local-use NAT64 of 10.0.0.1
    "2002:7f00:1::1",          # 6to4 of 127.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo of 127.0.0.1
])
def test_non_public_addresses_in_every_form_are_refused(address):
    import ipaddress

    from mediaflow.sources import is_public_address

    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
                                     "64:ff9b::5db8:d70e"])  # NAT64 of a public address
def test_public_addresses_pass(address):
    import ipaddress

    from mediaflow.sources import is_public_address

    assert is_public_address(ipaddress.ip_address(address))


def test_the_host_is_resolved_once_and_the_vetted_address_is_the_one_connected(tmp_path, http_server, monkeypatch):
    """DNS rebinding: a second lookup that answers another address is never made."""
    import socket

    from mediaflow import sources

    port = int(http_server.rsplit(":", 1)[1])
    lookups: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host == "media.test":
            lookups.append(host)
            # first answer: the test server; a later one would point somewhere else
            target = "127.0.0.1" if len(lookups) == 1 else "192.0.2.1"
            return real(target, *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    target = tmp_path / "got.mp4"
    sources.download(f"http://media.test:{port}/island.mp4", target, max_bytes=10**9, allow_private=True)
    assert lookups == ["media.test"] and target.stat().st_size > 0


@pytest.mark.bad_input
def test_every_redirect_hop_is_vetted_again(tmp_path, monkeypatch):
    import http.server

    from mediaflow import sources

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.2:9/latest/meta-data")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # this test server stands for a public host; the address it redirects to does not
    monkeypatch.setattr(sources, "is_public_address", lambda address: str(address) == "127.0.0.1")
    try:
        with pytest.raises(InvalidSourceError, match=r"127\.0\.0\.2.*not a public address"):
            sources.download(f"http://127.0.0.1:{server.server_address[1]}/a.mp4", tmp_path / "x",
                             max_bytes=10**6, allow_private=False)
        assert not (tmp_path / "x").exists()
    finally:
        server.shutdown()


def test_an_unreachable_url_is_a_clear_source_error(tmp_path):
    from mediaflow import sources

    with pytest.raises(InvalidSourceError, match="cannot fetch"):
        sources.download("http://127.0.0.1:9/a.mp4", tmp_path / "x", max_bytes=10**6, allow_private=True)


@pytest.mark.bad_input
def test_a_slow_drip_is_cut_at_the_deadline(tmp_path):
    import http.server
    import time as _time

    class Drip(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x" * 10)
                self.wfile.flush()
                _time.sleep(0.1)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    from mediaflow import sources

    try:
        started = _time.monotonic()
        with pytest.raises(InvalidSourceError, match="took longer than"):
            sources.download(f"http://127.0.0.1:{server.server_address[1]}/a.mp4", tmp_path / "x",
                             max_bytes=10**6, allow_private=True, deadline_seconds=1.0)
        assert _time.monotonic() - started < 5
    finally:
        server.shutdown()


@pytest.mark.bad_input
def test_local_paths_outside_the_media_roots_are_refused_without_an_oracle(tmp_path, sample_video):
    import os
    import shutil

    root = tmp_path / "media"
    root.mkdir()
    inside = root / "talk.mp4"
    shutil.copy(sample_video.media, inside)
    os.symlink("/etc/passwd", root / "escape.mp4")
    settings = make_settings(tmp_path / "data", media_roots=[root])
    with Pipeline(settings) as pipeline:
        record, _ = pipeline.ingest(str(inside))
        assert record.media_id
        messages = []
        for path in ("/etc/passwd", "/nonexistent/a.mp4", str(root / "escape.mp4"), f"{root}/../data/x.mp4"):
            with pytest.raises(InvalidSourceError) as info:
                pipeline.ingest(path)
            messages.append(str(info.value).replace(path, "PATH"))
        assert set(messages) == {"local path PATH is not under an allowed media root"}
        assert pipeline.store.list_media() == [record.media_id]
