"""Render the Helm chart with the project's own helm (make tools) and hand back the documents."""

from __future__ import annotations

import subprocess
from functools import lru_cache

import pytest
import yaml

from tests.conftest import REPO

CHART = REPO / "charts" / "mediaflow"
HELM = REPO / ".tools" / "bin" / "helm"
VARIANTS = sorted(p.stem.removesuffix("-values") for p in (CHART / "ci").glob("*-values.yaml"))
POD_KINDS = {"Deployment", "StatefulSet", "Job"}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make tools`")
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=check)


@lru_cache
def render(variant: str | None = None, *sets: str, crds: bool = False) -> tuple[dict, ...]:
    args = ["template", "mediaflow", str(CHART), "--namespace", "mediaflow"]
    if variant:
        args += ["-f", str(CHART / "ci" / f"{variant}-values.yaml")]
    for value in sets:
        args += ["--set", value]
    if crds:
        args.append("--include-crds")
    out = helm(*args).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def find(docs, kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def pod_templates(docs) -> list[tuple[str, dict]]:
    """(where, pod spec) for every pod the chart makes, the Ray head and worker groups included."""
    pods = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in POD_KINDS:
            pods.append((name, doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "RayService":
            cluster = doc["spec"]["rayClusterConfig"]
            pods.append((f"{name}/head", cluster["headGroupSpec"]["template"]["spec"]))
            for group in cluster.get("workerGroupSpecs", []):
                pods.append((f"{name}/{group['groupName']}", group["template"]["spec"]))
    return pods


@pytest.fixture(params=VARIANTS)
def variant(request) -> str:
    return request.param
