"""The embeddings app serves both models (issue 15 item 2): all-MiniLM-L6-v2 for English media
and use-multilingual-v3 for the others, picked by the request's ``model``, through the
official ``openai`` client, over plain uvicorn and under Ray Serve; an unknown model is an
OpenAI-shaped 404; and the cluster path (``MEDIAFLOW_EMBEDDER=remote``) indexes German speech
into the multilingual collection through it."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI

from mediaflow.engines import Engines
from mediaflow.engines.remote import RemoteEmbedder
from mediaflow.engines.use_embedder import UniversalSentenceEncoder
from mediaflow.models import IndexRecord
from mediaflow.pipeline import Pipeline
from mediaflow_serving.apps import embeddings_api
from tests.conftest import make_settings
from tests.multilingual import QUERIES, speak_passages
from tests.serving.test_openai_conformance import UvicornThread, conforms, error_conforms

pytestmark = pytest.mark.slow

USE, MINILM = "use-multilingual-v3", "all-MiniLM-L6-v2"
GERMAN = ["Der Leuchtturmwärter putzt jeden Morgen die Lampe.", "Die Kinder zählen am Abend die Vögel."]


@pytest.fixture(scope="module")
def use():
    return UniversalSentenceEncoder(threads=2)


@pytest.fixture(scope="module")
def service(engines_cache, use):
    """The app over both models, as ``load_embedder`` builds it, without Ray."""
    # loaded before uvicorn starts: its start waits for the app's models, and only 60 s
    models = embeddings_api.ServedEmbedders([engines_cache.embedder, use])
    app = embeddings_api.create_app(lambda: models)
    with UvicornThread(app) as server:
        yield server.url


def as_floats(embedding) -> list[float]:
    if isinstance(embedding, str):  # asked for base64 explicitly: the client hands it back as is
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").tolist()
    return embedding


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("encoding_format", ["float", "base64", openai.NOT_GIVEN])
def test_the_openai_client_gets_use_vectors_by_model_name(service, use, engines_cache, encoding_format):
    client = OpenAI(base_url=f"{service}/v1", api_key="not-needed", max_retries=0)
    result = client.embeddings.create(model=USE, input=GERMAN, encoding_format=encoding_format)
    served = [as_floats(d.embedding) for d in sorted(result.data, key=lambda d: d.index)]
    assert result.model == USE and len(served[0]) == 512
    assert cosines(served, use.embed(GERMAN)).min() >= 0.999
    assert result.usage.prompt_tokens == use.count_tokens(GERMAN)
    english = client.embeddings.create(model=MINILM, input=GERMAN[:1], encoding_format=encoding_format)
    assert english.model == MINILM and len(as_floats(english.data[0].embedding)) == 384
    assert [m.id for m in client.models.list()] == [MINILM, USE]


def test_token_arrays_are_use_sentencepiece_ids(service, use):
    ids = use.tokenizer.encode(GERMAN, add_bos=False, add_eos=False)
    body = conforms(httpx.post(f"{service}/v1/embeddings", json={"model": USE, "input": ids}).json(),
                    "CreateEmbeddingResponse")
    assert cosines([d["embedding"] for d in body["data"]], use.embed(GERMAN)).min() >= 0.999
    assert body["usage"]["prompt_tokens"] == sum(map(len, ids))
    refused = error_conforms(httpx.post(f"{service}/v1/embeddings", json={"model": USE, "input": [[200_000]]}),
                             400, param="input")
    assert "128000" in refused["message"]


def test_an_unknown_model_is_a_404_in_openais_shape(service):
    error = error_conforms(httpx.post(f"{service}/v1/embeddings", json={"model": "text-embedding-3-small",
                                                                        "input": "x"}), 404, param="model")
    assert "text-embedding-3-small" in error["message"] and USE in error["message"]
    client = OpenAI(base_url=f"{service}/v1", api_key="not-needed", max_retries=0)
    with pytest.raises(openai.NotFoundError) as refused:
        client.embeddings.create(model="multilingual-e5", input="x")
    assert refused.value.body["param"] == "model"
    dims = error_conforms(httpx.post(f"{service}/v1/embeddings", json={"model": USE, "input": "x",
                                                                       "dimensions": 384}), 400, param="dimensions")
    assert "512" in dims["message"]


def test_the_remote_engine_sends_the_model_and_refuses_another_size(service, use):
    remote = RemoteEmbedder(service, model=USE, dim=512, strict_dim=True, retries=0, request_size=1)
    assert cosines(remote.embed(GERMAN), use.embed(GERMAN)).min() >= 0.999
    # a service that answers with another model's vectors (one that ignores ``model``) is an error
    from mediaflow.errors import EngineRequestError

    wrong = RemoteEmbedder(f"{service}", model=MINILM, dim=512, strict_dim=True, retries=0)
    with pytest.raises(EngineRequestError, match="384 dimensions"):
        wrong.embed(GERMAN)


def test_under_ray_serve_concurrent_requests_of_both_models_get_their_own_vectors(embeddings_url, use,
                                                                                 engines_cache):
    """serve-cpu.yaml's app (``load_embedder``): both models; a batch that merges requests of
    both gives each its own model's vectors."""
    client = OpenAI(base_url=f"{embeddings_url}/v1", api_key="not-needed", max_retries=0)
    assert [m.id for m in client.models.list()] == [MINILM, USE]
    expected = {USE: use.embed(GERMAN), MINILM: engines_cache.embedder.embed(GERMAN)}

    def ask(n: int):
        model = (USE, MINILM)[n % 2]
        result = client.embeddings.create(model=model, input=GERMAN)
        return model, result.model, [d.embedding for d in sorted(result.data, key=lambda d: d.index)]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(16)))
    for asked, answered, vectors in answers:
        assert answered == asked and cosines(vectors, expected[asked]).min() >= 0.999


def test_the_cluster_path_indexes_german_speech_through_the_service(service, engines_cache, tmp_path):
    """``MEDIAFLOW_EMBEDDER=remote``: German media are embedded by the service's USE (the
    request names it) into the multilingual collection, and searched through it."""
    wav = tmp_path / "hafen.wav"
    timeline = speak_passages("de", wav)
    settings = make_settings(tmp_path / "data", summary=False, embedder="remote", embedding_url=service)
    engines = Engines(settings)
    engines.__dict__["transcriber"] = engines_cache.transcriber  # local Whisper; embeddings remote
    with Pipeline(settings, engines=engines) as pipeline:
        media_id = pipeline.process(str(wav)).media_id
        assert isinstance(engines.multilingual_embedder, RemoteEmbedder) and engines.multilingual_embedder.name == USE
        record = pipeline.store.read_model(media_id, "index.json", IndexRecord)
        assert (record.collection, record.model) == (f"mediaflow-{USE}", USE)
        assert pipeline.index(record.collection).count(media_id) == record.points > 0
        english, _, passage = QUERIES["de"][2]
        top = pipeline.search(english, top_k=2)[0]
        assert top.media_id == media_id and top.model == USE
        assert timeline[passage].start - 0.5 <= top.seek <= timeline[passage].end
