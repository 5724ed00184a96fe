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


def test_private_addresses_are_refused_by_default(tmp_path, http_server):
    with Pipeline(make_settings(tmp_path)) as pipeline, pytest.raises(InvalidSourceError):
        pipeline.ingest(f"{http_server}/island.mp4")
    assert pipeline.store.list_media() == []


def test_download_size_limit(tmp_path, http_server):
    settings = make_settings(tmp_path, allow_private_urls=True, max_media_bytes=10_000)
    with Pipeline(settings) as pipeline, pytest.raises(MediaTooLargeError):
        pipeline.ingest(f"{http_server}/island.mp4")
    assert pipeline.store.list_media() == []


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
