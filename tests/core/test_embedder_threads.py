"""The sentence-transformers embedder under the concurrency a server gives it.

A server calls one embedder from several threads at once: a batch's ``encode`` in the
thread pool, the health probe in its own thread, token counting and token-array decoding on
the event loop. A Hugging Face fast tokenizer raises ``RuntimeError: Already borrowed`` when
two threads are inside it, which under Ray Serve failed a whole batch of requests with 500.
"""

from __future__ import annotations

import threading

import pytest

from mediaflow.engines.st_embedder import SentenceTransformerEmbedder

TEXTS = [f"sentence number {i} about mangroves along the lagoon " * (i % 7 + 1) for i in range(48)]


@pytest.fixture(scope="module")
def embedder():
    return SentenceTransformerEmbedder()


def test_encode_count_and_decode_from_many_threads_at_once(embedder):
    expected = embedder.embed(TEXTS[:4])
    ids = embedder.model.tokenizer(TEXTS[:4], add_special_tokens=False)["input_ids"]
    errors: list[str] = []
    results: list[list[list[float]]] = []

    def run(work, times):
        for _ in range(times):
            try:
                work()
            except Exception as exc:  # collected: an error in any thread fails the test
                errors.append(repr(exc))

    work = [
        (lambda: results.append(embedder.embed(TEXTS[:4])), 15),  # a batch
        (lambda: embedder.embed(["health probe"]), 30),  # the health probe
        (lambda: embedder.count_tokens(TEXTS), 200),  # usage on the event loop
        (lambda: embedder.detokenize(ids), 200),  # token arrays on the event loop
    ]
    threads = [threading.Thread(target=run, args=w) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 15
    assert all(abs(a - b) < 1e-5 for r in results for va, vb in zip(r, expected, strict=True) for a, b in zip(va, vb, strict=True))
    assert embedder.detokenize(ids)[0] == TEXTS[0].strip().lower()
    assert embedder.count_tokens(["mangroves"]) == len(embedder.model.tokenizer("mangroves")["input_ids"])
