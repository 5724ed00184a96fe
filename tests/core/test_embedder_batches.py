"""The sentence-transformers embedder cuts its forward passes by token length.

``plan_batches`` is checked against every possible cut of small inputs; ``embed`` against
``SentenceTransformer.encode`` itself (the vectors a user of the library gets), and by the
shapes its forward passes really see (each as wide as its longest text, not the window's).
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from mediaflow.engines import st_embedder
from mediaflow.engines.st_embedder import SentenceTransformerEmbedder, plan_batches


def cost(lengths, batches, overhead):
    return sum(overhead + (hi - lo) * lengths[hi - 1] for lo, hi in batches)


def every_cut(n, max_batch):
    """Every split of range(n) into consecutive batches of at most ``max_batch``."""
    for marks in itertools.product((False, True), repeat=n - 1):
        bounds = [0, *(i + 1 for i, mark in enumerate(marks) if mark), n]
        batches = list(itertools.pairwise(bounds))
        if all(hi - lo <= max_batch for lo, hi in batches):
            yield batches


@pytest.mark.parametrize("seed", range(12))
def test_plan_is_the_cheapest_cut(seed):
    rng = random.Random(seed)
    n, max_batch, overhead = rng.randint(1, 11), rng.randint(1, 6), rng.choice([0, 3, 40])
    lengths = sorted(rng.randint(5, 60) for _ in range(n))
    plan = plan_batches(lengths, max_batch, overhead)
    assert [lo for lo, _ in plan] == [0, *(hi for _, hi in plan[:-1])] and plan[-1][1] == n  # all, in order
    assert all(0 < hi - lo <= max_batch for lo, hi in plan)
    best = min(cost(lengths, cut, overhead) for cut in every_cut(n, max_batch))
    assert cost(lengths, plan, overhead) == best


def test_plan_extremes():
    lengths = [10] * 3 + [20] * 3 + [40] * 2
    # padding free: one length per batch
    assert plan_batches(lengths, 8, 0) == [(0, 3), (3, 6), (6, 8)]
    # a batch dearer than any padding: as few batches as max_batch allows
    assert plan_batches(lengths, 8, 10_000) == [(0, 8)]
    assert len(plan_batches(lengths, 3, 10_000)) == 3
    # None: encode()'s fixed batches in length order (the GPU's choice)
    assert plan_batches(lengths, 3, None) == [(0, 3), (3, 6), (6, 8)]
    assert plan_batches([], 4, 40) == [] == plan_batches([], 4, None)


@pytest.fixture(scope="module")
def embedder():
    return SentenceTransformerEmbedder(batch_size=16)


def mixed_texts():
    rng = random.Random(7)
    words = "mangroves along the lagoon shelter young fish from storms while roots hold silt".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(70)]
    texts.append("tide " * 400)  # past max_seq_length: truncated, as encode() truncates it
    texts.append("a")
    return texts


def test_vectors_equal_sentence_transformers_encode(embedder, monkeypatch):
    texts = mixed_texts()
    monkeypatch.setattr(st_embedder, "TOKENIZE_WINDOW", 32)  # three windows, each planned alone
    seen: list[float] = []
    vectors = np.asarray(embedder.embed(texts, on_progress=seen.append))
    expected = embedder.model.encode(texts, batch_size=16, normalize_embeddings=True)
    assert vectors.shape == (len(texts), embedder.dim)
    assert np.abs(vectors - expected).max() < 1e-5  # same texts, same order
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 3


def test_forward_passes_are_as_wide_as_their_longest_text(embedder, monkeypatch):
    texts = mixed_texts()[:-2]  # lengths 3..42 tokens
    lengths = [len(ids) for ids in embedder.model.tokenizer(texts)["input_ids"]]
    shapes: list[tuple[int, int]] = []
    forward = embedder.model.forward

    def recording(features, **kwargs):
        shapes.append(tuple(features["input_ids"].shape))
        assert features["attention_mask"][:, -1].any()  # the last column is some text's, not padding
        return forward(features, **kwargs)

    monkeypatch.setattr(embedder.model, "forward", recording)
    embedder.embed(texts)
    assert sum(rows for rows, _ in shapes) == len(texts)
    assert all(rows <= embedder.batch_size for rows, _ in shapes)
    padded = sum(rows * width for rows, width in shapes)
    # encode()'s way, batches of 16 in order of characters, pads every batch to its longest
    in_order = sorted(lengths)
    fixed = sum(len(in_order[lo:lo + 16]) * in_order[min(lo + 16, len(in_order)) - 1]
                for lo in range(0, len(in_order), 16))
    assert padded <= fixed and padded <= 1.2 * sum(lengths), (padded, fixed, sum(lengths))


def test_gpu_keeps_fixed_batches():
    assert st_embedder.batch_overhead_for("cuda") is None
    assert st_embedder.batch_overhead_for("cuda:1") is None
    assert st_embedder.batch_overhead_for("cpu") == st_embedder.CPU_BATCH_OVERHEAD_TOKENS


def test_device_picks_the_cost_model(embedder):
    assert embedder.batch_overhead_tokens == st_embedder.CPU_BATCH_OVERHEAD_TOKENS
    fixed = SentenceTransformerEmbedder(batch_size=8, batch_overhead_tokens=None)
    texts = mixed_texts()[:20]
    assert np.abs(np.asarray(fixed.embed(texts)) - np.asarray(embedder.embed(texts))).max() < 1e-5


def test_tokens_counted_are_those_the_model_saw(embedder):
    texts = mixed_texts()
    vectors, tokens = embedder.embed_counted(texts)
    limit = embedder.model.max_seq_length
    assert tokens == [min(len(ids), limit) for ids in embedder.model.tokenizer(texts)["input_ids"]]
    assert tokens[-2] == limit and tokens[-1] == 3  # the long text truncated; "a" with [CLS] and [SEP]
    assert np.abs(np.asarray(vectors) - np.asarray(embedder.embed(texts))).max() < 1e-6
