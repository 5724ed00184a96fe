"""The FastAPI apps without Ray (what uvicorn runs, e.g. in the operator's tests)."""

from __future__ import annotations

import subprocess
import sys

from fastapi.testclient import TestClient

from mediaflow_serving.apps.embeddings_api import create_app as embeddings_app
from mediaflow_serving.engines import load_embedder


def test_apps_import_without_ray():
    code = ("import sys, mediaflow_serving.apps.transcription_api, mediaflow_serving.apps.embeddings_api, "
            "mediaflow_serving.engines; assert 'ray' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_embeddings_app_under_plain_asgi():
    with TestClient(embeddings_app(load_embedder)) as client:
        assert client.get("/health").json() == {"status": "ok", "model": "all-MiniLM-L6-v2"}
        # the English model first (the default), then the multilingual one of non-English media
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["all-MiniLM-L6-v2", "use-multilingual-v3"]
        body = client.post("/v1/embeddings", json={"input": ["one", "two"]}).json()
        assert [d["index"] for d in body["data"]] == [0, 1] and len(body["data"][0]["embedding"]) == 384
        # one request alone: one model call
        metrics = client.get("/metrics").text
        assert 'mediaflow_serving_batch_requests_bucket{app="embeddings",le="1.0"} 1.0' in metrics
