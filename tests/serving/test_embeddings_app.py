"""The embeddings app under Ray Serve: same vectors as SentenceTransformer.encode, both
encodings, and concurrent requests merged into batches."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from mediaflow.engines.remote import RemoteEmbedder
from mediaflow.samples import PASSAGES

TEXTS = [s.strip() + "." for p in PASSAGES for s in p.split(".") if s.strip()]


@pytest.fixture(scope="module")
def client(embeddings_url) -> OpenAI:
    return OpenAI(base_url=f"{embeddings_url}/v1", api_key="not-needed", max_retries=0)


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    from mediaflow.engines.st_embedder import bundled_embedding_model

    return SentenceTransformer(bundled_embedding_model(), device="cpu")


def as_floats(embedding) -> list[float]:
    # the openai client hands an explicitly requested base64 string back undecoded
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").tolist()
    return embedding


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_vectors_equal_sentence_transformer_encode(client, reference, encoding_format):
    result = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS, encoding_format=encoding_format)
    served = [as_floats(d.embedding) for d in sorted(result.data, key=lambda d: d.index)]
    expected = reference.encode(TEXTS)
    assert len(served) == len(TEXTS) and len(served[0]) == 384
    assert cosines(served, expected).min() >= 0.999
    # usage is the model's own tokenizer's count (special tokens in), as OpenAI's is its models'
    assert result.usage.prompt_tokens == sum(map(len, reference.tokenizer(TEXTS)["input_ids"]))


def test_base64_is_what_the_openai_client_decodes_by_default(client, reference, embeddings_url):
    # the openai client asks for base64 unless told otherwise and decodes float32 itself
    result = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[0])
    assert cosines([result.data[0].embedding], reference.encode([TEXTS[0]]))[0] >= 0.999
    raw = httpx.post(f"{embeddings_url}/v1/embeddings",
                     json={"input": TEXTS[0], "encoding_format": "base64"}).json()
    assert isinstance(raw["data"][0]["embedding"], str)


def test_remote_engine_round_trip(embeddings_url, reference):
    vectors = RemoteEmbedder(embeddings_url, retries=0, request_size=5).embed(TEXTS)
    assert cosines(vectors, reference.encode(TEXTS)).min() >= 0.999


def test_bad_requests_are_400s(client, embeddings_url):
    with pytest.raises(openai.BadRequestError, match="must not be empty"):
        client.embeddings.create(model="all-MiniLM-L6-v2", input=[])
    with pytest.raises(openai.BadRequestError, match="384 dimensions"):
        client.embeddings.create(model="all-MiniLM-L6-v2", input="x", dimensions=128)
    # token arrays are the model's tokenizer ids (test_openai_conformance.py): others are refused
    tokens = httpx.post(f"{embeddings_url}/v1/embeddings", json={"input": [[1_000_000]]})
    assert tokens.status_code == 400 and "vocabulary" in tokens.json()["error"]["message"]


def batches(embeddings_url: str) -> tuple[float, float]:
    """(batches seen, batches of exactly one request) from the replica's metrics."""
    text = httpx.get(f"{embeddings_url}/metrics").text
    family = next(f for f in text_string_to_metric_families(text) if f.name == "mediaflow_serving_batch_requests")
    count = next(s.value for s in family.samples if s.name.endswith("_count"))
    singles = next(s.value for s in family.samples if s.name.endswith("_bucket") and s.labels["le"] == "1.0")
    return count, singles


def test_concurrent_requests_are_batched(embeddings_url):
    count0, singles0 = batches(embeddings_url)
    requests = 32
    with httpx.Client(timeout=120) as http, ThreadPoolExecutor(requests) as pool:
        answers = list(pool.map(
            lambda i: http.post(f"{embeddings_url}/v1/embeddings", json={"input": TEXTS[i % len(TEXTS)] * 3}),
            range(requests),
        ))
    failed = [(a.status_code, a.text[:300]) for a in answers if a.status_code != 200]
    assert not failed, failed
    count, singles = batches(embeddings_url)
    merged = count - count0
    assert merged < requests, f"{requests} requests ran as {merged} batches"
    assert (merged - (singles - singles0)) >= 1, "no batch held more than one request"


def test_ray_exports_the_app_metrics_of_every_replica(embeddings_url, ray_session):
    httpx.post(f"{embeddings_url}/v1/embeddings", json={"input": TEXTS[:3]}).raise_for_status()
    deadline = time.monotonic() + 30
    while True:  # the metrics agent scrapes workers every second (metrics_report_interval_ms)
        text = httpx.get(ray_session.metrics_url).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        batches = families.get("ray_mediaflow_serving_batch_requests")
        requests = families.get("ray_mediaflow_serving_requests")
        if batches and requests or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert batches and requests, "Ray's metrics agent does not export the app's metrics"
    assert any(s.labels.get("app") == "embeddings" and s.labels.get("route") == "/v1/embeddings"
               and s.labels.get("status") == "200" and s.value >= 1 for s in requests.samples)
    assert any(s.name.endswith("_count") and s.value >= 1 for s in batches.samples)
