"""Fault injection on the artifact store: a real, small tmpfs that fills up.

A full store is a clear, retryable error, never a torn artifact or a stray .part file,
and the same command completes once space is freed, without redoing finished stages
(the transcription runs once) or duplicating Qdrant points.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mediaflow.errors import ArtifactStoreFullError
from mediaflow.models import AudioRecord, ChunkSet, EmbeddingSet, IndexRecord, ProbeResult, SourceRecord, Transcript
from mediaflow.samples import PASSAGES, make_sample
from mediaflow.stores import ArtifactStore
from mediaflow.stores.artifacts import PART_PATTERN

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"), pytest.mark.fault]

PAGE = 4096
MEDIA = "media-one"
# What each JSON artifact parses as (a torn one would not).
RECORDS = {
    "source.json": SourceRecord, "probe.json": ProbeResult, "audio.json": AudioRecord,
    "transcript.json": Transcript, "chunks.json": ChunkSet, "embeddings.json": EmbeddingSet,
    "index.json": IndexRecord,
}


class Tmpfs:
    """A tmpfs of ``size_kib`` mounted at ``path`` (unmounted by the fixture)."""

    def __init__(self, path: Path, size_kib: int):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs", str(path)],
                       check=True)

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def umount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def tmpfs(tmp_path):
    mounted: list[Tmpfs] = []

    def mount(size_kib: int, name: str = "store") -> Tmpfs:
        fs = Tmpfs(tmp_path / name, size_kib)
        mounted.append(fs)
        return fs

    yield mount
    for fs in mounted:
        fs.umount()


def files_in(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in directory.iterdir()} if directory.exists() else {}


def assert_no_part(directory: Path) -> None:
    leftovers = [p.name for p in directory.rglob("*") if ".part" in p.name]
    assert not leftovers, f"temporary files left behind: {leftovers}"


# -- the store itself ----------------------------------------------------------------------


def test_write_bytes_on_a_full_store_keeps_the_old_artifact(tmpfs):
    fs = tmpfs(64)
    store = ArtifactStore(str(fs.path))
    store.write_text(MEDIA, "notes.json", '{"v": 1}')
    with pytest.raises(ArtifactStoreFullError) as err:
        store.write_bytes(MEDIA, "notes.json", b"x" * 200_000)
    assert str(err.value) == (f"the artifact store is full: could not write media/{MEDIA}/notes.json "
                              "(No space left on device)")
    assert err.value.permanent is False and err.value.reason == "StorageFull"
    assert store.read_text(MEDIA, "notes.json") == '{"v": 1}'
    assert set(files_in(fs.path / "media" / MEDIA)) == {"notes.json"}
    fs.resize("1m")  # space freed: the same write goes through
    store.write_bytes(MEDIA, "notes.json", b"x" * 200_000)
    assert store.size(MEDIA, "notes.json") == 200_000
    assert_no_part(fs.path)


def test_put_file_on_a_full_store_keeps_the_old_artifact(tmpfs, tmp_path):
    fs = tmpfs(64)
    store = ArtifactStore(str(fs.path))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(300_000))
    store.write_bytes(MEDIA, "source.mp4", b"old")
    with pytest.raises(ArtifactStoreFullError, match=f"media/{MEDIA}/source.mp4"):
        store.put_file(MEDIA, "source.mp4", big)
    assert store.read_bytes(MEDIA, "source.mp4") == b"old"
    assert set(files_in(fs.path / "media" / MEDIA)) == {"source.mp4"}
    fs.resize("1m")
    store.put_file(MEDIA, "source.mp4", big)
    assert store.read_bytes(MEDIA, "source.mp4") == big.read_bytes()
    assert_no_part(fs.path)


def test_writing_file_writes_next_to_the_artifact_and_renames(tmpfs):
    fs = tmpfs(256)
    store = ArtifactStore(str(fs.path))
    with store.writing_file(MEDIA, "audio.wav") as target:
        # Same directory (the rename is atomic), the artifact's extension (ffmpeg goes by it).
        assert target.parent == fs.path / "media" / MEDIA and target.suffix == ".wav"
        assert PART_PATTERN.search(target.name)
        target.write_bytes(b"RIFF" + b"\0" * 1000)
        assert not store.exists(MEDIA, "audio.wav")  # nothing under the final name yet
    assert store.size(MEDIA, "audio.wav") == 1004
    with store.writing_file(MEDIA, "thumbnail.jpg"):
        pass  # a writer that writes nothing (a failed best-effort thumbnail) stores nothing
    assert set(files_in(fs.path / "media" / MEDIA)) == {"audio.wav"}


def test_writing_file_on_a_full_store_keeps_the_old_artifact(tmpfs):
    fs = tmpfs(64)
    store = ArtifactStore(str(fs.path))
    store.write_bytes(MEDIA, "audio.wav", b"old")
    with pytest.raises(ArtifactStoreFullError, match=f"could not write media/{MEDIA}/audio.wav"):
        with store.writing_file(MEDIA, "audio.wav") as target:
            target.write_bytes(b"x" * 200_000)
    assert store.read_bytes(MEDIA, "audio.wav") == b"old"
    assert set(files_in(fs.path / "media" / MEDIA)) == {"audio.wav"}


def test_ffmpeg_filling_the_store_is_a_full_store_not_bad_media(tmpfs, tmp_path):
    from mediaflow.stages.extract_audio import extract_audio, make_thumbnail
    from mediaflow.stages.probe import probe_file

    sample = make_sample(tmp_path / "short.mp4", passages=PASSAGES[:1])
    probe = probe_file(Path(sample.media))
    fs = tmpfs(64)
    store = ArtifactStore(str(fs.path))
    with pytest.raises(ArtifactStoreFullError, match=f"could not write media/{MEDIA}/audio.wav"):
        with store.writing_file(MEDIA, "audio.wav") as target:
            extract_audio(Path(sample.media), target, duration=probe.duration, format_name=probe.format_name)
    store.write_bytes(MEDIA, "filler.bin", b"x" * (60 * 1024))  # leave ~1 page
    with pytest.raises(ArtifactStoreFullError, match=f"could not write media/{MEDIA}/thumbnail.jpg"):
        with store.writing_file(MEDIA, "thumbnail.jpg") as thumb:
            make_thumbnail(Path(sample.media), thumb, at_seconds=1.0, format_name=probe.format_name)
    assert set(files_in(fs.path / "media" / MEDIA)) == {"filler.bin"}


def test_remote_store_writes_through_a_part_key(tmp_path, monkeypatch):
    store = ArtifactStore(f"memory://faults-{uuid.uuid4().hex[:8]}")
    assert not store.is_local
    store.write_text(MEDIA, "a.json", "{}")
    src = tmp_path / "f.bin"
    src.write_bytes(b"payload")
    store.put_file(MEDIA, "source.bin", src)
    with store.writing_file(MEDIA, "audio.wav") as target:
        target.write_bytes(b"wav")
    names = sorted(p.rsplit("/", 1)[-1] for p in store.fs.ls(store._media_dir(MEDIA), detail=False))
    assert names == ["a.json", "audio.wav", "source.bin"]
    assert store.read_bytes(MEDIA, "audio.wav") == b"wav" and store.read_bytes(MEDIA, "source.bin") == b"payload"

    # A backend that wraps the OSError (as fsspec implementations may) is still "full".
    def full_upload(lpath, rpath, **kwargs):
        store.fs.pipe_file(rpath, b"half")  # a partial object under the temporary key
        raise RuntimeError("upload failed") from OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(store.fs, "put_file", full_upload)
    with pytest.raises(ArtifactStoreFullError, match=r"media/media-one/source.bin \(Disk quota exceeded\)"):
        store.put_file(MEDIA, "source.bin", src)
    names = sorted(p.rsplit("/", 1)[-1] for p in store.fs.ls(store._media_dir(MEDIA), detail=False))
    assert names == ["a.json", "audio.wav", "source.bin"]
    assert store.read_bytes(MEDIA, "source.bin") == b"payload"
    store.fs.rm(store.root, recursive=True)


def test_part_names_are_never_artifacts():
    store = ArtifactStore("/nonexistent")
    for name in (f"audio.wav.{uuid.uuid4().hex}.part.wav", f"probe.json.{uuid.uuid4().hex}.part"):
        with pytest.raises(ValueError):
            store.path(MEDIA, name)


# -- the real CLI on a store that fills up --------------------------------------------------


def run_process(media: Path, artifacts: Path, data_dir: Path) -> subprocess.CompletedProcess:
    # The artifacts live on the tmpfs; the data dir (embedded Qdrant) does not.
    env = dict(os.environ, MEDIAFLOW_ARTIFACT_ROOT=str(artifacts), MEDIAFLOW_DATA_DIR=str(data_dir),
               MEDIAFLOW_SUMMARY="false", HF_HUB_OFFLINE="1",
               # short chunks: a 20 s talk still makes several points
               MEDIAFLOW_CHUNK_SECONDS="6", MEDIAFLOW_CHUNK_OVERLAP_SECONDS="1")
    cli = Path(sys.executable).with_name("mediaflow")
    return subprocess.run([str(cli), "process", str(media), "--json"], env=env,
                          capture_output=True, text=True, timeout=300)


def assert_clean_failure(proc: subprocess.CompletedProcess, artifact: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "the artifact store is full: could not write media/" in lines[0], lines[0]
    assert f"/{artifact} (No space left on device)" in lines[0], lines[0]


def assert_whole(media_dir: Path, reference: dict[str, int] | None = None) -> None:
    """No .part file; every JSON artifact parses; with a reference, every file is complete."""
    assert_no_part(media_dir)
    store = ArtifactStore(str(media_dir.parent.parent))
    for name, size in files_in(media_dir).items():
        if name in RECORDS:
            assert store.read_model(media_dir.name, name, RECORDS[name]) is not None, name
        if reference is not None:
            assert size == reference[name], f"{name}: {size} bytes, a complete run wrote {reference[name]}"


def qdrant_points(data_dir: Path) -> int:
    from mediaflow.stores import VectorIndex

    index = VectorIndex(path=data_dir / "qdrant")
    try:
        return index.count()  # every point in the collection, whatever its media
    finally:
        index.close()


def pages(size: int) -> int:
    return -(-size // PAGE)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    return Path(make_sample(tmp_path_factory.mktemp("faults") / "talk.mp4", passages=PASSAGES[:2]).media)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, speech) -> dict:
    """Filled in by the first CLI test: the complete run's artifact sizes."""
    return {}


@pytest.mark.slow
def test_store_full_at_audio_then_completes(tmpfs, tmp_path, speech, reference):
    fs = tmpfs(64)  # room for source/probe/job.json, not for a 20 s wav
    proc = run_process(speech, fs.path / "artifacts", tmp_path / "data")
    assert_clean_failure(proc, "audio.wav")
    [media_dir] = (fs.path / "artifacts" / "media").iterdir()
    assert set(files_in(media_dir)) == {"source.json", "probe.json", "job.json"}
    assert_whole(media_dir)

    fs.resize("64m")
    proc = run_process(speech, fs.path / "artifacts", tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {k: v["status"] for k, v in result["stages"].items()} == {
        "probe": "done", "extract_audio": "done", "transcribe": "done", "chunk": "done",
        "embed": "done", "index": "done", "summarize": "skipped"}
    chunks = ChunkSet.model_validate_json((media_dir / "chunks.json").read_text())
    assert result["points"] == len(chunks.chunks) >= 2
    assert qdrant_points(tmp_path / "data") == len(chunks.chunks)
    assert_whole(media_dir)
    reference.update(files_in(media_dir))
    assert {"audio.wav", "thumbnail.jpg", "transcript.json", "embeddings.json"} <= set(reference)


@pytest.mark.slow
def test_store_full_after_transcription_then_completes_without_transcribing_again(
    tmpfs, tmp_path, speech, reference
):
    if not reference:
        pytest.skip("needs the complete run of test_store_full_at_audio_then_completes")
    # Room for everything up to chunks.json, and half of embeddings.json.
    later = {"embeddings.json", "index.json"}
    size = sum(pages(s) for n, s in reference.items() if n not in later) + pages(reference["embeddings.json"]) // 2
    fs = tmpfs(size * PAGE // 1024)
    data_dir = tmp_path / "data"
    proc = run_process(speech, fs.path / "artifacts", data_dir)
    assert_clean_failure(proc, "embeddings.json")
    [media_dir] = (fs.path / "artifacts" / "media").iterdir()
    assert set(files_in(media_dir)) == set(reference) - later
    assert_whole(media_dir, reference)
    assert qdrant_points(data_dir) == 0

    fs.resize("64m")
    proc = run_process(speech, fs.path / "artifacts", data_dir)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    statuses = {k: v["status"] for k, v in result["stages"].items()}
    # Finished stages are not run again: above all, no second transcription.
    assert statuses == {"probe": "done", "extract_audio": "cached", "transcribe": "cached",
                        "chunk": "cached", "embed": "done", "index": "done", "summarize": "skipped"}
    assert files_in(media_dir) == reference
    assert_whole(media_dir, reference)
    chunks = ChunkSet.model_validate_json((media_dir / "chunks.json").read_text())
    assert result["points"] == len(chunks.chunks) == qdrant_points(data_dir)

    # One more run: everything cached, still exactly one point per chunk.
    proc = run_process(speech, fs.path / "artifacts", data_dir)
    assert proc.returncode == 0, proc.stderr
    statuses = {k: v["status"] for k, v in json.loads(proc.stdout)["stages"].items()}
    assert all(s in ("cached", "skipped") for k, s in statuses.items() if k != "probe"), statuses
    assert qdrant_points(data_dir) == len(chunks.chunks)
