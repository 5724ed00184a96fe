"""One Ray instance per test session (own temp dir, free port, no dashboard) serving the
transcription and embeddings apps with the real bundled models, configured from
services/serving/config/serve-cpu.yaml."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from tests.conftest import REPO, free_port

SERVE_CPU_CONFIG = REPO / "services" / "serving" / "config" / "serve-cpu.yaml"
MAX_UPLOAD_BYTES = 3 * 1024**2  # small, so the oversized-upload test stays cheap


def app_args(name: str) -> dict:
    config = yaml.safe_load(SERVE_CPU_CONFIG.read_text())
    return next(a for a in config["applications"] if a["name"] == name)["args"]


class RaySession(NamedTuple):
    serve_url: str
    metrics_url: str  # Ray's metrics agent: ray.util.metrics of every replica


@pytest.fixture(scope="session")
def ray_session():
    import ray
    from ray import serve

    # short path: Ray puts unix sockets under its temp dir (107-byte limit)
    ray_tmp = tempfile.mkdtemp(prefix="mf-ray-", dir="/tmp")
    metrics_port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=ray_tmp, log_to_driver=False,
             _metrics_export_port=metrics_port,
             _system_config={"metrics_report_interval_ms": 1000})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield RaySession(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics")
    serve.shutdown()
    ray.shutdown()
    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def serve_url(ray_session) -> str:
    return ray_session.serve_url


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def transcription_url(serve_url, artifact_root) -> str:
    from ray import serve

    from mediaflow_serving.transcription import app

    args = app_args("transcription")
    args["serving"] = {**args["serving"], "max_upload_bytes": MAX_UPLOAD_BYTES,
                       "allowed_root": str(artifact_root)}
    serve.run(app(args), name="transcription", route_prefix="/transcription")
    return f"{serve_url}/transcription"


@pytest.fixture(scope="session")
def embeddings_url(serve_url) -> str:
    from ray import serve

    from mediaflow_serving.embeddings import app

    serve.run(app(app_args("embeddings")), name="embeddings", route_prefix="/embeddings")
    return f"{serve_url}/embeddings"


@pytest.fixture(scope="session")
def speech(media_dir):
    """~25 s of espeak speech (three passages) as WAV, with its script."""
    from mediaflow.samples import PASSAGES, make_sample

    return make_sample(media_dir / "speech.wav", passages=PASSAGES[:3], video=False)
