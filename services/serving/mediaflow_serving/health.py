"""Replica health for Ray Serve's ``check_health``: proof that the model can still run.

Ray Serve calls a deployment's ``check_health()`` every ``health_check_period_s``; when it
raises (or takes longer than ``health_check_timeout_s``) the replica is marked UNHEALTHY,
stopped and replaced. The ``/health`` route only says the engine object exists; a replica
whose CUDA context is wedged, or whose model runtime is broken, would pass it forever.

``HealthCheck`` runs a *probe* in a thread of its own, bounded by ``timeout_s`` (below the
deployment's ``health_check_timeout_s``, so the failure carries a reason):

- idle replica: the engine's tiny real inference (``whisper_probe``: 0.5 s of tone through
  the Whisper encoder and three decoder steps, ~40 ms for tiny.en on a CPU core;
  ``embedder_probe``: one short text) plus, on CUDA, a device check;
- replica with model work in flight (``busy()``): the device check only (``cuda_probe``:
  ``torch.cuda.synchronize`` and one tiny kernel; nothing at all on CPU). A transcription
  can run for many minutes: an inference probe would compete with it for the replica's
  cores (or wait for it, were it serialised behind the app's one-at-a-time lock), and the
  running work already exercises the model. The embeddings app likewise, while requests are
  queued or encoding; its idle probe runs on its encode thread (``model_thread``, below).
  The device check does not wait behind it: a
  synchronize waits for the kernels already queued (milliseconds each), and hangs only when
  the device is wedged — which is then reported;
- a probe still running from an earlier check (a hung device never returns) makes every
  later check fail at once, without stacking another thread on it.

The engine is reached through the app built in the replica: ``app.state.engine`` is its
``EngineSlot`` (``apps/common.py``), ``app.state.work`` the transcription app's
``IdempotentWork`` (its ``running()`` counts transcriptions, also those whose client left) or
the embeddings app's ``ContinuousBatcher`` (its ``running()`` counts queued and encoding
requests).

The LLM app (``mediaflow_serving.llm``, Ray Serve LLM's ``LLMServer``) has its own:
``LLMServer.check_health`` awaits ``VLLMEngine.check_health`` → vLLM's
``AsyncLLM.check_health``, which raises ``EngineDeadError`` once the engine-core process died
or errored (a monitor thread watches it) — a flag, no inference: a dead engine is caught, a
wedged one whose process lives is not (its requests hang until the proxy's 408). Ray Serve
LLM deploys it with ``health_check_period_s`` / ``health_check_timeout_s`` 10 s
(``RAY_SERVE_LLM_DEFAULT_HEALTH_CHECK_*``); the OpenAI ingress's ``check_health`` is a no-op.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

Probe = Callable[[], None]

PROBE_SECONDS = 0.5
SAMPLE_RATE = 16_000
PROBE_TEXT = "mediaflow health probe"


class Unhealthy(RuntimeError):
    """The replica cannot serve: Ray Serve replaces it."""


class HealthCheck:
    """One replica's bounded, non-stacking health check (see the module docstring)."""

    def __init__(self, engine: Callable[[], Any], *, inference: Callable[[Any], Probe | None],
                 device: Callable[[Any], Probe | None] = lambda engine: None,
                 busy: Callable[[], bool] = lambda: False, timeout_s: float = 20.0,
                 model_thread: concurrent.futures.Executor | None = None):
        self.engine, self.inference, self.device, self.busy = engine, inference, device, busy
        self.timeout_s = timeout_s
        # Its own thread: never queued behind the app's thread pool, which runs the requests.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="health-probe")
        # An app whose model calls all run on one thread of its own passes it: the probe of an
        # idle model runs there (the device check of a busy one stays on the thread above,
        # not behind the work). torch's OpenMP team belongs to the calling thread, and a
        # probe from a thread of its own cost the embeddings replica a tenth of its throughput
        # on 2 cores, for as long as it lived, not only while the probe ran (our reading:
        # libgomp spins for a much shorter time once its teams' threads outnumber the cores).
        self._model_thread = model_thread
        self._pending: concurrent.futures.Future | None = None
        self._pending_since = 0.0
        self._probes: tuple[Any, Probe | None, Probe | None] | None = None
        self.last: str = "not checked"  # what the last check ran: inference, device or nothing

    def _probes_for(self, engine: Any) -> tuple[Probe | None, Probe | None]:
        if self._probes is None or self._probes[0] is not engine:
            self._probes = (engine, self.inference(engine), self.device(engine))
        return self._probes[1], self._probes[2]

    async def __call__(self) -> None:
        if self._pending is not None and not self._pending.done():
            raise Unhealthy(f"the health probe started {time.monotonic() - self._pending_since:.0f} s ago "
                            "has not returned: the model or its device is stuck")
        engine = self.engine()
        if engine is None:
            raise Unhealthy("the model is not loaded")
        inference, device = self._probes_for(engine)
        busy = self.busy()
        steps = [p for p in ((device,) if busy else (device, inference)) if p is not None]
        self.last = "nothing" if not steps else "device" if busy or inference is None else "inference"
        if not steps:
            return

        def run() -> None:
            for step in steps:
                step()

        self._pending_since = time.monotonic()
        pool = self._model_thread if self._model_thread is not None and not busy else self._executor
        self._pending = pool.submit(run)
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self._pending)), self.timeout_s)
        except TimeoutError:
            raise Unhealthy(f"the {self.last} probe did not finish within {self.timeout_s:g} s") from None
        except Unhealthy:
            raise
        except Exception as exc:
            raise Unhealthy(f"the {self.last} probe failed: {type(exc).__name__}: {exc}") from exc


def slot_engine(app) -> Callable[[], Any]:
    """The engine of a ``create_model_app`` app, or None while it is not loaded."""
    return lambda: getattr(app.state.engine, "engine", None)


def work_running(app) -> Callable[[], bool]:
    """True while the app's ``app.state.work`` (``IdempotentWork``, ``ContinuousBatcher``) has
    model work in flight."""
    def busy() -> bool:
        work = getattr(app.state, "work", None)
        return work is not None and work.running() > 0

    return busy


def tone(seconds: float = PROBE_SECONDS) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.1 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)


def whisper_probe(engine) -> Probe | None:
    """0.5 s of tone through the Whisper model itself: features, the encoder, three decoder
    steps. Below the engine's per-call state (``transcribe_array`` keeps some), so it is safe
    next to a transcription that starts meanwhile (CTranslate2 serialises calls itself).
    Engines other than WhisperX's may define ``health_probe()``; others get no inference probe."""
    if callable(getattr(engine, "health_probe", None)):
        return engine.health_probe
    parts = getattr(engine, "parts", None)  # a LanguageRoutedTranscriber: every model it routes to
    if parts:
        probes = [p for p in (whisper_probe(part) for part in parts) if p is not None]

        def every_model() -> None:
            for probe in probes:
                probe()

        return every_model if probes else None
    whisper = getattr(engine, "model", None)  # WhisperXTranscriber.model: its faster-whisper WhisperModel
    if whisper is None or not hasattr(whisper, "feature_extractor"):
        return None
    from faster_whisper.tokenizer import Tokenizer

    prompt = Tokenizer(whisper.hf_tokenizer, whisper.model.is_multilingual, task="transcribe",
                       language="en").sot_sequence
    audio = tone()

    def probe() -> None:
        encoded = whisper.encode(whisper.feature_extractor(audio))
        result = whisper.model.generate(encoded, [list(prompt)], max_length=len(prompt) + 3, beam_size=1)
        if not result or not result[0].sequences_ids:
            raise Unhealthy("the Whisper model decoded nothing")

    return probe


def embedder_probe(engine) -> Probe:
    """One short text through the embedding model: a vector of the model's size, finite."""
    def probe() -> None:
        (vector,) = engine.embed([PROBE_TEXT])
        if len(vector) != engine.dim or not all(math.isfinite(x) for x in vector):
            raise Unhealthy(f"the embedding model returned a bad vector ({len(vector)} values)")

    return probe


def _device_of(engine) -> str:
    device = getattr(engine, "device", None)
    if device is None:
        device = getattr(getattr(engine, "model", None), "device", "cpu")
    return str(device)


def cuda_probe(engine) -> Probe | None:
    """On a CUDA engine: the device answers (synchronize + one tiny kernel). None on CPU."""
    device = _device_of(engine)
    if not device.startswith("cuda"):
        return None

    def probe() -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize(device)
            if float((torch.ones(1, device=device) + 1).item()) != 2.0:
                raise Unhealthy(f"{device} computed 1 + 1 wrong")
            return
        import ctranslate2  # a CPU-only torch next to CUDA CTranslate2: count the devices at least

        if ctranslate2.get_cuda_device_count() < 1:
            raise Unhealthy(f"the engine runs on {device} but no CUDA device is visible")

    return probe
