"""Issue 13 fault: the transcription server killed mid-request and started again.

The transcription app runs as a real process (``python -m mediaflow_serving.plain
transcription``, the real bundled model). A ``RemoteTranscriber`` configured from
``Settings`` (retries and backoff enough to cover a restart and the model's load) is
transcribing when the server gets SIGKILL; it is started again on the same port. The
client's retries get the transcript, which is right; a duplicate request (same
Idempotency-Key) is then answered from the server's cache, not transcribed again.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mediaflow.config import Settings
from mediaflow.engines.remote import RemoteTranscriber, transcription_key
from tests.conftest import REPO, free_port, wer

pytestmark = pytest.mark.fault
MAX_WER = 0.15


class TranscriptionProcess:
    """``python -m mediaflow_serving.plain transcription`` on a fixed port, its log in a file."""

    def __init__(self, port: int, log: Path):
        self.port, self.log_path = port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> float:
        """Start and wait until it answers /health; the seconds that took."""
        started = time.monotonic()
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mediaflow_serving.plain", "transcription", "--port", str(self.port),
                 "--log-level", "info"],
                env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        while time.monotonic() - started < timeout:
            assert self.proc.poll() is None, f"the server exited:\n{self.log()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the server did not start:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        wanted = ",".join(f'{k}="{v}"' for k, v in {"app": "transcription", **labels}.items())
        for line in httpx.get(f"{self.url}/metrics", timeout=5).text.splitlines():
            if line.startswith(f"{name}{{{wanted}}} "):
                return float(line.split()[-1])
        raise LookupError(f"{name}{{{wanted}}} not exported")


@pytest.fixture
def server(tmp_path):
    process = TranscriptionProcess(free_port(), tmp_path / "server.log")
    yield process
    process.stop()


def test_server_killed_mid_request_and_restarted(server, speech):
    started = time.monotonic()
    load_seconds = server.start()
    # Retries x backoff must outlast a restart, i.e. the model's load (slower on a busy machine):
    # at least 1 s per retry once at max_backoff (0.5 jitter), so 2 retries per second of load.
    settings = Settings(transcription_url=server.url, remote_retries=30 + int(4 * load_seconds),
                        remote_backoff=0.25, remote_max_backoff=2.0, remote_timeout=300)
    client = RemoteTranscriber.from_settings(settings)

    with ThreadPoolExecutor(1) as pool:
        request = pool.submit(client.transcribe, Path(speech.media), language="en")
        deadline = time.monotonic() + 60
        while server.metric("mediaflow_serving_work_running") < 1:
            assert time.monotonic() < deadline, server.log()[-3000:]
            assert not request.done(), request.result()
            time.sleep(0.05)
        time.sleep(0.3)  # into the decode / the model's run
        assert not request.done(), "the transcription finished before the kill"
        server.kill()
        killed_at = time.monotonic()
        time.sleep(1)  # the client sees the dead server: its retries meet refused connections
        assert not request.done()
        server.start()
        transcript = request.result(timeout=180)
    recovered = time.monotonic() - killed_at

    assert wer(speech.text, transcript.text) <= MAX_WER, transcript.text
    assert abs(transcript.duration - speech.duration) < 0.5
    # The killed process's work died with it: the restarted server transcribed it, once.
    assert server.metric("mediaflow_serving_idempotent_requests_total", outcome="fresh") == 1
    assert server.metric("mediaflow_serving_work_running") == 0

    # A duplicate (same audio, same options → same key) is replayed, not transcribed again.
    before = server.metric("mediaflow_serving_audio_seconds_total")
    again = client.transcribe(Path(speech.media), language="en")
    assert again == transcript
    assert server.metric("mediaflow_serving_idempotent_requests_total", outcome="replayed") == 1
    assert server.metric("mediaflow_serving_idempotent_requests_total", outcome="fresh") == 1
    assert server.metric("mediaflow_serving_audio_seconds_total") == before  # the model did not run

    payload = Path(speech.media).read_bytes()
    key = transcription_key(hashlib.sha256(payload).hexdigest(), model=client.name, language="en",
                            align=False, diarize=False)

    def post(language: str) -> httpx.Response:
        return httpx.post(f"{server.url}/v1/audio/transcriptions", timeout=60,
                          headers={"Idempotency-Key": f'"{key}"'},
                          data={"model": client.name, "language": language, "response_format": "json"},
                          files={"file": ("speech.wav", payload, "audio/wav")})

    replay = post("en")
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == {"text": transcript.text}
    reused = post("de")  # the same key for another request
    assert reused.status_code == 422, reused.text
    assert server.metric("mediaflow_serving_idempotent_requests_total", outcome="fresh") == 1
    print(f"model load {load_seconds:.1f}s, recovered {recovered:.1f}s after the kill, "
          f"total {time.monotonic() - started:.1f}s")
