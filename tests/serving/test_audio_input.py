"""Artifact-URI bounds of the transcription app (no model needed)."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from mediaflow_serving.apps.audio_input import check_under_root


@pytest.mark.parametrize("uri", [
    "/data/artifacts/media/m1/audio.wav",
    "file:///data/artifacts/media/m1/audio.wav",
])
def test_local_paths_under_the_root_pass(uri):
    check_under_root(uri, "/data/artifacts")


@pytest.mark.parametrize("uri", [
    "/data/artifacts/../secrets/key",
    "/data/artifacts-other/media/m1/audio.wav",
    "/etc/passwd",
    "s3://mediaflow/artifacts/media/m1/audio.wav",
])
def test_local_root_refuses_everything_else(uri):
    with pytest.raises(HTTPException) as refused:
        check_under_root(uri, "/data/artifacts")
    assert refused.value.status_code == 403


def test_symlinks_out_of_the_root_are_refused(tmp_path):
    root = tmp_path / "artifacts"
    root.mkdir()
    (root / "escape").symlink_to("/etc")
    with pytest.raises(HTTPException):
        check_under_root(str(root / "escape" / "passwd"), str(root))


def test_object_store_prefixes():
    check_under_root("s3://mediaflow/artifacts/media/m1/audio.wav", "s3://mediaflow/artifacts")
    for uri in ("s3://mediaflow/artifacts/../private/x.wav", "s3://mediaflow/artifactsx/a.wav",
                "s3://other/artifacts/a.wav", "gs://mediaflow/artifacts/a.wav", "/data/a.wav"):
        with pytest.raises(HTTPException):
            check_under_root(uri, "s3://mediaflow/artifacts")
