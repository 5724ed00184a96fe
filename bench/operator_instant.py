"""The real operator, with every remote stage answering at once: bench/operator.py only.

Worker Jobs, status patches, conditions, events, slots and the finalizer all run as in
production; only the model calls (transcription, embeddings, Qdrant, summary) are
replaced by an immediate return, so the benchmark measures the operator's own overhead.
"""

from __future__ import annotations

import sys

from mediaflow_operator import main, runtime


def _instant_stage(media_id: str, stage: str, spec) -> None:
    return None


runtime.Runtime.stage_runner = lambda self: _instant_stage

if __name__ == "__main__":
    main.run(sys.argv[1:])
