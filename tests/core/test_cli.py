"""The ``mediaflow`` command: bad input fails in one line with nothing left behind;
the JSON outputs have their documented shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mediaflow.samples import PASSAGES, make_sample
from tests.conftest import LLM_MODEL_DIR


def run_cli(data_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, MEDIAFLOW_DATA_DIR=str(data_dir), MEDIAFLOW_SUMMARY="false",
               MEDIAFLOW_LLM_MODEL_DIR=str(LLM_MODEL_DIR))
    return subprocess.run([sys.executable, "-m", "mediaflow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, sample_video) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("this is a text file, not a video\n" * 50)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=2", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(d / "silent-video.mp4"))
    data = Path(sample_video.media).read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom at the end: lost
    ffmpeg("-i", sample_video.media, "-c", "copy", "-movflags", "+faststart", str(d / "fast.mp4"))
    fast = (d / "fast.mp4").read_bytes()
    (d / "truncated-faststart.mp4").write_bytes(fast[: len(fast) // 2])  # index intact, data cut
    # Files that make an unrestricted ffmpeg read *another* file (a playlist behind an ID3
    # tag, a concat script) or accept any bytes (a raw-PCM extension): each would "work".
    id3 = b"ID3\x04\x00\x00\x00\x00\x00\x00"
    (d / "playlist.mp3").write_bytes(id3 + (f"#EXTM3U\n#EXT-X-TARGETDURATION:90\n#EXTINF:90,\n"
                                            f"{sample_video.media}\n#EXT-X-ENDLIST\n").encode())
    (d / "concat.mp4").write_text(f"ffconcat version 1.0\nfile '{sample_video.media}'\n")
    (d / "noise.sln").write_bytes(os.urandom(64_000))
    return {
        "missing": d / "does-not-exist.mp4",
        "empty": d / "empty.mp4",
        "text": d / "notes.mp4",
        "no-audio": d / "silent-video.mp4",
        "truncated": d / "truncated.mp4",
        "truncated-faststart": d / "truncated-faststart.mp4",
        "hls-playlist-behind-id3": d / "playlist.mp3",
        "concat-script": d / "concat.mp4",
        "raw-pcm-extension": d / "noise.sln",
    }


EXPECTED = {
    "missing": "no such file",
    "empty": "empty file",
    "text": "not a readable media file",
    "no-audio": "no audio stream",
    "truncated": "not a readable media file",
    "truncated-faststart": "truncated or damaged",
    "hls-playlist-behind-id3": "not a readable media file",
    "concat-script": "not a readable media file",
    "raw-pcm-extension": "not a readable media file",
}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_bad_input_fails_in_one_line_and_leaves_nothing(tmp_path, bad_inputs, case):
    data_dir = tmp_path / "data"
    proc = run_cli(data_dir, "process", str(bad_inputs[case]))
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and EXPECTED[case] in lines[0], lines[0]
    listing = run_cli(data_dir, "list", "--json")
    assert listing.returncode == 0 and json.loads(listing.stdout) == []
    media_root = data_dir / "artifacts" / "media"
    assert not media_root.exists() or not any(media_root.iterdir())


@pytest.mark.parametrize("source,message", [
    ("file:///etc/passwd", "unsupported source scheme"),
    ("ftp://example.org/a.mp4", "unsupported source scheme"),
    ("http://127.0.0.1:9/a.mp4", "not a public address"),
    ("http://169.254.169.254/latest/meta-data", "not a public address"),
])
def test_malicious_urls_are_refused(tmp_path, source, message):
    proc = run_cli(tmp_path / "data", "process", source)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_process_search_list_delete_json(tmp_path):
    media = make_sample(tmp_path / "short.wav", passages=PASSAGES[2:4], video=False)
    data_dir = tmp_path / "data"
    proc = run_cli(data_dir, "process", str(media.media), "--json")
    assert proc.returncode == 0, proc.stderr
    processed = json.loads(proc.stdout)
    media_id = processed["media_id"]
    assert processed["points"] >= 1
    assert processed["language"] == "en" and processed["language_probability"] > 0.5  # detected
    assert processed["stages"]["summarize"]["status"] == "skipped"
    assert set(processed["files"]) == {f"transcript.{x}" for x in ("json", "srt", "vtt", "txt")}

    hits = json.loads(run_cli(data_dir, "search", "lighthouse keeper climbs the stairs", "--json").stdout)
    assert hits and {"media_id", "start", "end", "text", "score"} <= hits[0].keys()
    lighthouse = media.passages[1]
    assert hits[0]["media_id"] == media_id
    assert hits[0]["start"] <= lighthouse.start + 1 and lighthouse.start <= hits[0]["end"]

    listing = json.loads(run_cli(data_dir, "list", "--json").stdout)
    assert [m["media_id"] for m in listing] == [media_id]
    assert listing[0]["points"] == processed["points"]

    deleted = run_cli(data_dir, "delete", media_id, "--json")
    assert deleted.returncode == 0 and json.loads(deleted.stdout)["deleted"] is True
    assert json.loads(run_cli(data_dir, "list", "--json").stdout) == []
    assert json.loads(run_cli(data_dir, "search", "lighthouse", "--json").stdout) == []
    again = run_cli(data_dir, "delete", media_id)
    assert again.returncode != 0 and "no such media" in again.stderr


@pytest.mark.bad_input
@pytest.mark.parametrize("language", ["xx", "english"])
def test_an_unknown_language_fails_before_any_work(tmp_path, language):
    media = make_sample(tmp_path / "short.wav", passages=PASSAGES[2:3], video=False)
    data_dir = tmp_path / "data"
    proc = run_cli(data_dir, "process", str(media.media), "--language", language)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: unknown language {language!r}: use a Whisper language code (en, fr, de, zh, ...) "
        "or leave it unset to detect it"]
    assert not (data_dir / "artifacts").exists()
