"""A run loads its transcriber and embedder in the background (``Engines.warm``), only the ones
its stages will use, and a build that fails there is reported by the stage that needs it."""

from __future__ import annotations

import threading

import pytest

from mediaflow.engines import Engines
from mediaflow.errors import MediaflowError
from mediaflow.pipeline import Pipeline
from tests.conftest import make_settings

pytestmark = pytest.mark.slow


def warm_thread() -> threading.Thread | None:
    return next((t for t in threading.enumerate() if t.name == "mediaflow-engines-warm"), None)


def join_warm() -> None:
    thread = warm_thread()
    if thread is not None:
        thread.join(300)
        assert not thread.is_alive()


def test_warm_builds_the_transcriber_then_the_embedder(tmp_path):
    engines = Engines(make_settings(tmp_path))
    engines.warm(transcriber=True, embedder_language="en").join(300)
    built = engines.__dict__
    assert {"transcriber", "embedder"} <= built.keys()
    assert "multilingual_embedder" not in built  # English media: MiniLM only
    # the stages get the very engines built in the background, not second copies
    assert engines.transcriber is built["transcriber"] and engines.embedder is built["embedder"]
    assert engines.transcriber.transcribe_array is not None


def test_a_run_warms_only_the_engines_of_the_stages_it_will_run(tmp_path, sample_video):
    pipeline = Pipeline(make_settings(tmp_path, summary=False))
    pipeline.process(sample_video.media, until="extract_audio")
    join_warm()
    assert not {"transcriber", "embedder"} & pipeline.engines.__dict__.keys()

    pipeline = Pipeline(make_settings(tmp_path, summary=False))
    result = pipeline.process(sample_video.media, until="chunk", options={"language": "en"})
    join_warm()
    assert "transcriber" in pipeline.engines.__dict__  # built once, in the background
    assert "embedder" not in pipeline.engines.__dict__  # the embed stage is not part of this run
    assert [name for name in result.timings] == ["probe", "extract_audio", "transcribe", "chunk"]


def test_warming_can_be_turned_off(tmp_path, sample_video):
    pipeline = Pipeline(make_settings(tmp_path, summary=False, warm_engines=False))
    pipeline.process(sample_video.media, until="extract_audio")
    assert warm_thread() is None
    assert "transcriber" not in pipeline.engines.__dict__


def test_a_build_that_fails_in_the_background_fails_in_its_stage(tmp_path, sample_video):
    missing = tmp_path / "no-such-model"
    pipeline = Pipeline(make_settings(tmp_path, summary=False, whisper_english_model=str(missing)))
    events = []
    with pytest.raises(MediaflowError, match="no Whisper model at") as failure:
        pipeline.process(sample_video.media, options={"language": "en"}, on_event=events.append)
    join_warm()
    assert "transcriber" not in pipeline.engines.__dict__
    failed = [e for e in events if e.status == "failed"]
    assert [e.stage for e in failed] == ["transcribe"]
    assert "no-such-model" in str(failure.value)


# A command that fails while the background build is inside a native model load (CI: the
# store full at the audio decode) must end with its own exit code. With a daemon thread the
# interpreter exited under it and the C++ runtime aborted the process (SIGABRT, "terminate
# called without an active exception") after the clean error.
EXIT_DURING_WARM = """
import sys, time
from mediaflow.config import Settings
from mediaflow.engines import Engines

engines = Engines(Settings())
engines.warm(transcriber=True, embedder_language="en")
time.sleep(float(sys.argv[1]))
print("failing now", flush=True)
sys.exit(1)
"""


def test_a_command_that_fails_while_engines_load_exits_with_its_own_code(tmp_path):
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    env = dict(os.environ, MEDIAFLOW_DATA_DIR=str(tmp_path / "data"), HF_HUB_OFFLINE="1")

    def exit_after(delay_s: float) -> tuple[float, subprocess.CompletedProcess]:
        return delay_s, subprocess.run([sys.executable, "-c", EXIT_DURING_WARM, str(delay_s)], env=env,
                                       capture_output=True, text=True, timeout=300)

    # The abort needs the exit to fall inside a native load: exit at many points of it (two
    # at a time, which also varies where the load is), not at one.
    delays = [0.5 + 0.25 * i for i in range(18)]
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(exit_after, delays))
    for delay_s, proc in runs:
        assert (proc.returncode, proc.stdout.strip()) == (1, "failing now"), (delay_s, proc.stderr)
        assert "terminate called" not in proc.stderr, (delay_s, proc.stderr)
