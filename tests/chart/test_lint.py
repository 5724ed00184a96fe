"""helm lint --strict for every ci/ variant; values.schema.json refuses what it must."""

from __future__ import annotations

import pytest

from tests.chart.conftest import CHART, VARIANTS, helm


def test_every_ci_variant_exists():
    assert set(VARIANTS) >= {"kind-cpu", "gpu", "external-qdrant", "minimal"}


def test_lint_strict(variant):
    result = helm("lint", "--strict", str(CHART), "-f", str(CHART / "ci" / f"{variant}-values.yaml"), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("value", "complaint"), [
    ("images.gateway.tag=latest", "/images/gateway/tag"),
    ("storage.media.backend=nfs", "/storage/media/backend"),
    ("ray.upgradeStrategy=Sometimes", "/ray/upgradeStrategy"),
    ("gateway.replicas=0", "/gateway/replicas"),
    ("gateway.typo=1", "typo"),
    ("operator.resources.limits.cpu=lots", "/operator/resources/limits/cpu"),
])
def test_schema_rejects_bad_values(value, complaint):
    result = helm("template", "t", str(CHART), "--set", value, check=False)
    assert result.returncode != 0 and complaint in result.stderr, result.stderr


def test_every_value_is_documented():
    """Each key has a ``# --`` comment above it, or sits inside a documented key."""
    documented_at: list[int] = []  # indents of the documented keys enclosing the current line
    undocumented, previous = [], ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            previous = stripped or previous
            continue
        indent = len(line) - len(line.lstrip())
        documented_at = [i for i in documented_at if i < indent]
        if not stripped.startswith("- ") and ":" in stripped:
            if previous.startswith("# --"):
                documented_at.append(indent)
            elif not documented_at and not stripped.endswith(":"):
                undocumented.append(stripped)
        previous = stripped
    assert not undocumented, undocumented
