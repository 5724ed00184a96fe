"""ffmpeg is held to real media containers read from one local file (mediaflow.media_policy)."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import pytest

from mediaflow.errors import InvalidMediaError
from mediaflow.media_policy import ALLOWED_DEMUXERS, demuxer_of, input_args
from mediaflow.stages.extract_audio import extract_audio
from mediaflow.stages.probe import probe_file


def test_the_sample_video_probes_and_decodes_with_its_demuxer_fixed(sample_video, tmp_path):
    probe = probe_file(Path(sample_video.media))
    assert demuxer_of(probe.format_name) == "mov"
    record = extract_audio(Path(sample_video.media), tmp_path / "a.wav", duration=probe.duration,
                           format_name=probe.format_name)
    with wave.open(str(tmp_path / "a.wav")) as wav:
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1
    assert record.duration == pytest.approx(probe.duration, abs=0.2)


@pytest.mark.bad_input
@pytest.mark.parametrize("format_name", ["hls", "concat", "image2", "s16le", "sln", "dash", "lavfi", "tty", ""])
def test_demuxers_that_read_other_files_or_any_bytes_are_refused(format_name):
    with pytest.raises(InvalidMediaError, match="unsupported container format"):
        demuxer_of(format_name)


@pytest.mark.bad_input
def test_a_playlist_named_mp3_never_reads_the_file_it_names(sample_video, tmp_path):
    playlist = tmp_path / "talk.mp3"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:90\n#EXTINF:90,\n{sample_video.media}\n#EXT-X-ENDLIST\n")
    # Without the policy ffprobe follows the playlist to the other file and "succeeds" …
    loose = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=format_name", "-of", "csv=p=0",
                            str(playlist)], capture_output=True, text=True)
    assert loose.stdout.strip() == "hls", loose
    # … with it, the file is refused before anything is opened.
    with pytest.raises(InvalidMediaError, match="not a readable media file"):
        probe_file(playlist)
    strict = subprocess.run(["ffprobe", "-v", "error", *input_args(), str(playlist)], capture_output=True, text=True)
    assert strict.returncode != 0 and "not on whitelist" in strict.stderr


@pytest.mark.bad_input
def test_decoding_never_guesses_another_demuxer(sample_video, tmp_path):
    """A file whose probed format was mp4 is decoded as mp4, even renamed to .wav."""
    renamed = tmp_path / "talk.wav"
    renamed.write_bytes(Path(sample_video.media).read_bytes())
    with pytest.raises(InvalidMediaError, match="audio extraction failed"):
        extract_audio(renamed, tmp_path / "out.wav", duration=10.0, format_name="wav")


def test_every_allowed_demuxer_exists_in_this_ffmpeg():
    listing = subprocess.run(["ffmpeg", "-hide_banner", "-demuxers"], capture_output=True, text=True).stdout
    names = {n for line in listing.splitlines()[4:] if line.strip() for n in line.split()[1].split(",")}
    assert set(ALLOWED_DEMUXERS) <= names, set(ALLOWED_DEMUXERS) - names
