"""The serve configs are valid serveConfigV2 documents whose apps build as configured."""

from __future__ import annotations

import importlib
import json
import subprocess

import pytest
import yaml

from tests.conftest import REPO

CONFIG_DIR = REPO / "services" / "serving" / "config"
PROFILES = ["serve-cpu.yaml", "serve-gpu.yaml"]
LLM_PYTHON = REPO / ".venv-llm" / "bin" / "python"


def load(profile: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / profile).read_text())


@pytest.mark.parametrize("profile", PROFILES)
def test_config_is_a_valid_serve_deploy_document(profile):
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(load(profile))
    assert {a.name for a in schema.applications} == {"transcription", "embeddings", "llm"}
    assert len({a.route_prefix for a in schema.applications}) == 3


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", ["transcription", "embeddings"])
def test_model_apps_build_from_their_config(profile, name):
    app_config = next(a for a in load(profile)["applications"] if a["name"] == name)
    module, attr = app_config["import_path"].split(":")
    application = getattr(importlib.import_module(module), attr)(app_config["args"])
    deployment = application._bound_deployment
    assert [d["name"] for d in app_config["deployments"]] == [deployment.name]
    actor = app_config["deployments"][0]["ray_actor_options"]
    assert ("num_gpus" in actor) and (actor["num_gpus"] > 0) == (profile == "serve-gpu.yaml")
    # engine overrides are real Settings fields, serving ones real ServingSettings fields
    from mediaflow.config import Settings

    from mediaflow_serving.settings import ServingSettings

    Settings(**app_config["args"]["engine"])
    ServingSettings(**app_config["args"]["serving"])
    assert set(app_config["args"]["engine"]) <= set(Settings.model_fields)
    assert set(app_config["args"]["serving"]) <= set(ServingSettings.model_fields)


@pytest.mark.skipif(not LLM_PYTHON.exists(), reason="LLM environment not built (make setup)")
def test_llm_app_args_build_an_llm_config_per_profile():
    script = (
        "import json, sys, yaml\n"
        "from mediaflow_serving.llm import LLMArgs, llm_config\n"
        "out = {}\n"
        "for path in sys.argv[1:]:\n"
        "    app = next(a for a in yaml.safe_load(open(path))['applications'] if a['name'] == 'llm')\n"
        "    cfg = llm_config(LLMArgs.model_validate(app['args']))\n"
        "    out[path.rsplit('/', 1)[-1]] = [cfg.accelerator_config.kind, cfg.accelerator_type]\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([str(LLM_PYTHON), "-c", script, *(str(CONFIG_DIR / p) for p in PROFILES)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    kinds = json.loads(done.stdout.strip().splitlines()[-1])
    # any GPU by default (ray.llm.acceleratorType pins a type)
    assert kinds == {"serve-cpu.yaml": ["cpu", None], "serve-gpu.yaml": ["gpu", None]}
