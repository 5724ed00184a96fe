"""The artifact store on a real S3 API (moto_server on loopback, s3fs from the locks): every
write atomic (no ``.part`` key left), reads, listings, deletes; a second process's writes seen
at once (no stale listing cache); and the worker Job's stage commands (``mediaflow stage probe``
then ``extract_audio``, as operator/mediaflow_operator/jobs.py runs them) as real processes
that read an ``s3://`` source and write their artifacts to the bucket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mediaflow.stores.artifacts import PART_PATTERN, ArtifactStore
from tests.moto_s3 import BUCKET, serve_bucket


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    yield from serve_bucket(tmp_path_factory)


@pytest.fixture
def store(s3, request) -> ArtifactStore:
    # a prefix of its own per test: keys are asserted exactly
    return ArtifactStore(f"s3://{BUCKET}/{request.node.name.replace('_', '-')[:40]}")


def prefix_of(store: ArtifactStore) -> str:
    return store.root.split("/", 1)[1]


def test_store_is_remote_on_the_s3_root(store):
    assert not store.is_local and store.fs.protocol[0] == "s3"
    assert store.uri("abc-1", "probe.json") == f"s3://{store.root}/media/abc-1/probe.json"


def test_writes_are_whole_objects_and_leave_no_part_key(s3, store, tmp_path):
    pre = prefix_of(store)
    store.write_bytes("abc-1", "a.bin", b"\x00\x01" * 1000)
    store.write_text("abc-1", "note.txt", "hello")
    local = tmp_path / "in.wav"
    local.write_bytes(b"RIFF" + b"x" * 5000)
    store.put_file("abc-1", "source.wav", local)
    with store.writing_file("abc-1", "audio.wav") as target:
        assert not str(target).startswith(store.root)  # a local file, uploaded when done
        target.write_bytes(b"y" * 3000)
    with store.writing_file("abc-1", "nothing.wav"):
        pass  # a writer that leaves no file stores nothing
    assert s3.keys(pre) == [f"{pre}/media/abc-1/{n}" for n in ("a.bin", "audio.wav", "note.txt", "source.wav")]
    assert store.read_bytes("abc-1", "a.bin") == b"\x00\x01" * 1000
    assert store.read_text("abc-1", "note.txt") == "hello"
    assert store.size("abc-1", "source.wav") == 5004 and store.size("abc-1", "audio.wav") == 3000
    with store.local_path("abc-1", "audio.wav") as path:
        assert path.read_bytes() == b"y" * 3000
    with store.open("abc-1", "source.wav") as fh:
        assert fh.read(4) == b"RIFF"
    # the bytes S3 itself holds
    body = s3.client().get_object(Bucket=BUCKET, Key=f"{pre}/media/abc-1/audio.wav")["Body"].read()
    assert body == b"y" * 3000


def test_a_failed_write_leaves_the_previous_artifact_and_no_part_key(s3, store):
    pre = prefix_of(store)
    store.write_text("abc-1", "transcript.json", '{"v": 1}')
    with pytest.raises(RuntimeError), store.writing_file("abc-1", "transcript.json") as target:
        target.write_text('{"v": 2, "torn')
        raise RuntimeError("the writer died")
    with pytest.raises(RuntimeError), store._atomic("abc-1", "transcript.json") as tmp:
        store.fs.pipe_file(tmp, b'{"v": 3, "torn')  # the .part exists in S3 when the error comes
        assert PART_PATTERN.search(tmp) and s3.keys(tmp.split("/", 1)[1]) == [tmp.split("/", 1)[1]]
        raise RuntimeError("the writer died")
    assert s3.keys(pre) == [f"{pre}/media/abc-1/transcript.json"]
    assert store.read_text("abc-1", "transcript.json") == '{"v": 1}'


def test_list_exists_and_delete_media(s3, store):
    pre = prefix_of(store)
    assert store.list_media() == [] and not store.delete_media("abc-1")
    for media_id in ("abc-1", "abc-2"):
        store.write_text(media_id, "source.json", "{}")
        store.write_text(media_id, "probe.json", "{}")
    assert store.list_media() == ["abc-1", "abc-2"]
    assert store.exists("abc-1", "probe.json") and not store.exists("abc-1", "audio.wav")
    store.delete("abc-1", "probe.json")
    store.delete("abc-1", "probe.json")  # absent: no error
    assert not store.exists("abc-1", "probe.json")
    assert store.delete_media("abc-1")
    assert s3.keys(pre) == [f"{pre}/media/abc-2/probe.json", f"{pre}/media/abc-2/source.json"]
    assert store.list_media() == ["abc-2"]


def test_another_process_writes_and_deletes_are_seen_at_once(s3, store):
    # A listing this process made must not hide what the worker Job (another process) writes
    # or deletes later: s3fs's listings cache is off for object stores.
    pre = prefix_of(store)
    store.write_text("abc-1", "source.json", "{}")
    assert store.list_media() == ["abc-1"]
    store.fs.ls(f"{store.root}/media/abc-1")
    client = s3.client()
    client.put_object(Bucket=BUCKET, Key=f"{pre}/media/abc-1/probe.json", Body=b"{}")
    client.put_object(Bucket=BUCKET, Key=f"{pre}/media/abc-2/source.json", Body=b"{}")
    assert store.exists("abc-1", "probe.json") and store.exists("abc-2", "source.json")
    assert store.list_media() == ["abc-1", "abc-2"]
    client.delete_object(Bucket=BUCKET, Key=f"{pre}/media/abc-1/source.json")
    assert not store.exists("abc-1", "source.json")


def test_read_model_of_a_missing_artifact_is_none(store):
    from mediaflow.models import ProbeResult

    assert store.read_model("abc-9", "probe.json", ProbeResult) is None
    with pytest.raises(FileNotFoundError):
        store.read_bytes("abc-9", "probe.json")


def test_worker_job_stage_commands_write_their_artifacts_to_s3(s3, tmp_path):
    """What the operator's Job runs: probe (init container) then extract_audio, each
    ``mediaflow stage <name> --media-id <id> [--source <uri>]`` with HOME=/tmp, the pipeline
    ConfigMap's MEDIAFLOW_ARTIFACT_ROOT / AWS_ENDPOINT_URL and the S3 Secret's keys."""
    from mediaflow.samples import make_sample

    sample = make_sample(tmp_path / "talk.wav", passages=["The lighthouse keeper cleans the glass."], video=False)
    s3.client().upload_file(str(sample.media), BUCKET, "sources/talk.wav")
    source = f"s3://{BUCKET}/sources/talk.wav"
    root = f"s3://{BUCKET}/worker"
    media_id = "talk-0001"
    env = {**os.environ, **s3.env, "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "MEDIAFLOW_ARTIFACT_ROOT": root, "MEDIAFLOW_DATA_DIR": str(tmp_path / "data")}
    mediaflow = str(Path(sys.executable).parent / "mediaflow")
    for stage, args in (("probe", ["--source", source]), ("extract_audio", [])):
        done = subprocess.run([mediaflow, "stage", stage, "--media-id", media_id, *args, "--json"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["status"] == "done", done.stdout
    keys = s3.keys("worker/")
    assert keys == [f"worker/media/{media_id}/{name}" for name in
                    ("audio.json", "audio.wav", "probe.json", "source.json", "source.wav")], keys
    store = ArtifactStore(root)
    assert store.read_bytes(media_id, "source.wav") == Path(sample.media).read_bytes()
    probe = json.loads(store.read_text(media_id, "probe.json"))
    assert abs(float(probe["duration"]) - sample.duration) < 0.5, probe
    audio = store.read_bytes(media_id, "audio.wav")
    assert audio[:4] == b"RIFF" and len(audio) > 16000 * 2 * (sample.duration - 1)  # 16 kHz s16 mono
    # a second run finds its artifact and does not redo it
    again = subprocess.run([mediaflow, "stage", "extract_audio", "--media-id", media_id, "--json"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "cached"
    assert s3.keys("worker/") == keys
