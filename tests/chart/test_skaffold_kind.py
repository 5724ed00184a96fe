"""skaffold.yaml, images/Dockerfile, the chart's values and kind-config.yaml agree with each other.

No skaffold binary here: `skaffold_config` applies profiles as skaffold does (overlay, then JSON
patches), `built_images` names the images as its build step would (default-repo rewriting, tags,
digests when pushed), and `skaffold_helm_args` turns the release into the `helm` flags skaffold's
helm deployer passes (pkg/skaffold/helm/args.go: --set setValues, --set expanded
setValueTemplates, -f valuesFiles; helm applies every --set over the files).
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from pathlib import PurePosixPath

import jsonpatch
import pytest
import yaml

from tests.chart.conftest import CHART, find, helm, pod_templates, render
from tests.conftest import REPO
from tests.images.dockerfile import image_paths, stage_chain, stages

SKAFFOLD = yaml.safe_load((REPO / "skaffold.yaml").read_text())
TARGETS = set(stages())
PROFILE_SETS = [(), ("gpu",), ("dev",), ("gpu", "dev"), ("dev", "gpu")]
# (default-repo, skaffold's multi-level-repo setting)
REPOS = [(None, False), ("registry.example.com", False), ("registry.example.com", True),
         ("localhost:5000/team", False)]
TAG = "v0.1.0-3-gabc1234"
DIGEST = "sha256:" + "ab" * 32
RUNTIME_UID = "10001"


# ------------------------------------------------------------------ a small skaffold
def _overlay(base: dict, override: dict) -> dict:
    """A profile's build/deploy/... over the config's: structs merge field by field, lists
    replace, and a oneOf field (build.local) replaces the whole value."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "local":
            out[key] = _overlay(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@lru_cache
def skaffold_config(profiles: tuple[str, ...] = ()) -> dict:
    config = {k: v for k, v in SKAFFOLD.items() if k != "profiles"}
    by_name = {p["name"]: p for p in SKAFFOLD["profiles"]}
    for name in profiles:
        profile = by_name[name]
        config = _overlay(config, {k: v for k, v in profile.items()
                                   if k not in {"name", "activation", "patches", "requiresAllActivations"}})
        config = jsonpatch.apply_patch(config, profile.get("patches", []))
    return config


def default_repo_image(default_repo: str | None, image: str, multi_level: bool) -> str:
    """pkg/skaffold/docker/default_repo.go: escape & concat, unless the registry (GCR, AR) or the
    multi-level-repo setting allows nested repositories."""
    if not default_repo or image.startswith(default_repo):
        return image
    if multi_level or "gcr.io" in default_repo or "-docker.pkg.dev" in default_repo:
        return f"{default_repo}/{image}"
    return f"{default_repo}/{re.sub(r'[/._:@]', '_', image)}"


def built_images(config: dict, default_repo: str | None, multi_level: bool) -> dict[str, dict]:
    """What the build step hands the deployer for each artifact."""
    push = config["build"].get("local", {}).get("push", False)
    builds = {}
    for artifact in config["build"]["artifacts"]:
        repo = default_repo_image(default_repo, artifact["image"], multi_level)
        # pushed: tag@digest; loaded into kind: a tag (TagWithImageID), no digest
        builds[artifact["image"]] = {"repo": repo, "tag": TAG, "digest": DIGEST if push else "",
                                     "ref": f"{repo}:{TAG}" + (f"@{DIGEST}" if push else "")}
    return builds


def template_env(builds: dict[str, dict]) -> dict[str, str]:
    env = {}
    for name, b in builds.items():
        suffix = re.sub(r"[/\-.:]", "_", name)
        env |= {f"IMAGE_REPO_{suffix}": b["repo"], f"IMAGE_TAG_{suffix}": b["tag"],
                f"IMAGE_DIGEST_{suffix}": b["digest"], f"IMAGE_FULLY_QUALIFIED_{suffix}": b["ref"]}
    return env


def expand(template: str, env: dict[str, str]) -> str:
    def field(match: re.Match) -> str:
        assert match.group(1) in env, f"skaffold has no {match.group(1)} to give: {template}"
        return env[match.group(1)]
    return re.sub(r"\{\{\s*\.(\w+)\s*\}\}", field, template).removesuffix("@")


def skaffold_helm_args(config: dict, builds: dict[str, dict]) -> list[str]:
    (release,) = config["deploy"]["helm"]["releases"]
    env = template_env(builds)
    args = ["template", release["name"], str(REPO / release["chartPath"]), "--namespace", release["namespace"]]
    for key in sorted(release.get("setValues", {})):
        args += ["--set", f"{key}={release['setValues'][key]}"]
    for key in sorted(release.get("setValueTemplates", {})):
        args += ["--set", f"{expand(key, env)}={expand(release['setValueTemplates'][key], env)}"]
    for values_file in release.get("valuesFiles", []):
        args += ["-f", str(REPO / values_file)]
    return args


@lru_cache
def skaffold_render(profiles: tuple[str, ...], default_repo: str | None = None,
                    multi_level: bool = False) -> tuple[tuple[dict, ...], dict]:
    config = skaffold_config(profiles)
    builds = built_images(config, default_repo, multi_level)
    out = helm(*skaffold_helm_args(config, builds)).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d), builds


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def rendered_images(docs) -> list[tuple[str, str]]:
    images = [(f"{where}/{c['name']}", c["image"]) for where, pod in pod_templates(docs) for c in containers(pod)]
    (operator_config,) = find(docs, "ConfigMap", "mediaflow-operator")
    images.append(("operator ConfigMap worker image", operator_config["data"]["MEDIAFLOW_OPERATOR_WORKER_IMAGE"]))
    return images


# ------------------------------------------------------------------ images: one registry, the built ref
IMAGE_REF = re.compile(r"^(?P<name>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::\d+)?(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*)"
                       r":(?P<tag>[\w][\w.-]{0,127})(?:@sha256:[0-9a-f]{64})?$")


@pytest.mark.parametrize("profiles", PROFILE_SETS, ids=lambda p: "+".join(p) or "default")
@pytest.mark.parametrize(("default_repo", "multi_level"), REPOS,
                         ids=lambda v: str(v) if not isinstance(v, bool) else ("multi-level" if v else "escaped"))
def test_every_image_is_the_image_skaffold_built(profiles, default_repo, multi_level):
    docs, builds = skaffold_render(profiles, default_repo, multi_level)
    images = rendered_images(docs)
    built = {b["repo"]: b["ref"] for b in builds.values()}
    mediaflow = [(where, image) for where, image in images if "mediaflow" in image]
    assert mediaflow
    for where, image in images:
        match = IMAGE_REF.match(image)
        assert match, f"{where}: {image} is not one image reference"
        # a registry host (has a dot or a port, or is localhost) only as the first component
        hosts = [i for i, part in enumerate(match["name"].split("/")[:-1])
                 if "." in part or ":" in part or part == "localhost"]
        assert hosts in ([], [0]), f"{where}: {image} names more than one registry"
    for where, image in mediaflow:
        repo = IMAGE_REF.match(image)["name"]
        assert repo in built, f"{where}: {image} is none of the built images {sorted(built)}"
        assert image == built[repo], f"{where}: {image}, built {built[repo]}"
        if default_repo:
            assert image.startswith(default_repo + "/") and image.count(default_repo) == 1, image
    # every built image is deployed (the worker through the operator's ConfigMap)
    assert set(built.values()) <= {image for _, image in mediaflow}


def test_gpu_values_keep_their_registry_outside_skaffold():
    # a plain `helm install -f ci/gpu-values.yaml` still prefixes images.registry
    images = [image for _, image in rendered_images(render("gpu")) if "mediaflow" in image]
    assert images and all(i.startswith("registry.example.com/mediaflow/") for i in images), images


# ------------------------------------------------------------------ targets and values agree
def test_every_skaffold_image_is_a_dockerfile_target_the_chart_uses():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    roles = {spec["repository"]: role for role, spec in values["images"].items() if isinstance(spec, dict)}
    for profiles in PROFILE_SETS:
        config = skaffold_config(profiles)
        templates = config["deploy"]["helm"]["releases"][0]["setValueTemplates"]
        for artifact in config["build"]["artifacts"]:
            assert artifact["docker"]["target"] in TARGETS, artifact
            assert artifact["docker"]["dockerfile"] == "images/Dockerfile"
            role = roles[artifact["image"]]
            key = re.sub(r"[/\-.:]", "_", artifact["image"])  # as template_env: skaffold's env names
            assert templates[f"images.{role}.repository"] == f"{{{{.IMAGE_REPO_{key}}}}}"
            assert templates[f"images.{role}.tag"] == f"{{{{.IMAGE_TAG_{key}}}}}@{{{{.IMAGE_DIGEST_{key}}}}}"
            # release targets outside the dev profile; the dev profile swaps in <role>-dev
            target = re.sub(r"(?<=[a-z])(?=[A-Z])", "-", role).lower()  # images.llmGpu: target llm-gpu
            expected = f"{target}-dev" if "dev" in profiles and artifact.get("sync") else target
            assert artifact["docker"]["target"] == expected, (profiles, artifact)


def test_the_chart_runs_every_built_image():
    built = {a["image"] for a in SKAFFOLD["build"]["artifacts"]}
    used = {image.rpartition(":")[0] for variant in ("kind-cpu", "gpu") for _, image in rendered_images(render(variant))}
    used = {image.removeprefix("registry.example.com/") for image in used}
    assert built <= used, built - used


def test_skaffold_deploys_the_kind_values_and_forwards_the_ui_and_dashboard():
    release = SKAFFOLD["deploy"]["helm"]["releases"][0]
    assert release["chartPath"] == "charts/mediaflow"
    assert release["valuesFiles"] == ["charts/mediaflow/ci/kind-cpu-values.yaml"]
    assert release["setValues"]["images.registry"] == ""
    forwarded = {(f["resourceName"], f["port"]) for f in SKAFFOLD["portForward"]}
    assert forwarded == {("mediaflow-gateway", 80), ("mediaflow-ray-head-svc", 8265)}
    services = {s["metadata"]["name"] for s in find(render("kind-cpu"), "Service")}
    assert "mediaflow-gateway" in services
    for profiles in (("gpu",), ("gpu", "dev")):
        config = skaffold_config(profiles)
        assert config["deploy"]["helm"]["releases"][0]["valuesFiles"] == ["charts/mediaflow/ci/gpu-values.yaml"]
        assert config["build"]["local"] == {"push": True, "useBuildkit": True}


# ------------------------------------------------------------------ the dev loop
def test_the_dev_profile_is_what_skaffold_dev_runs_and_nothing_else_syncs():
    (dev,) = [p for p in SKAFFOLD["profiles"] if p["name"] == "dev"]
    assert dev["activation"] == [{"command": "dev"}]
    assert not any(a.get("sync") for a in skaffold_config(())["build"]["artifacts"])
    assert not any(a.get("sync") for a in skaffold_config(("gpu",))["build"]["artifacts"])
    synced = {a["image"] for a in skaffold_config(("dev",))["build"]["artifacts"] if a.get("sync")}
    assert synced == {"mediaflow/operator", "mediaflow/gateway"}
    assert skaffold_config(("gpu", "dev")) == skaffold_config(("dev", "gpu"))


def _synced_files(artifact: dict) -> list[tuple[str, str]]:
    """(repo file, container path) for every file a sync rule of the artifact copies today."""
    pairs = []
    for rule in artifact["sync"]["manual"]:
        files = [p for p in REPO.glob(rule["src"]) if p.is_file() and "__pycache__" not in p.parts]
        assert files, f"{rule['src']} matches no file"
        for path in files:
            rel = path.relative_to(REPO).as_posix()
            strip = rule.get("strip", "")
            assert rel.startswith(strip), (rule, rel)
            pairs.append((rel, str(PurePosixPath(rule["dest"]) / rel.removeprefix(strip))))
    return pairs


@pytest.mark.parametrize("image", ["mediaflow/operator", "mediaflow/gateway"])
def test_sync_destinations_are_the_dev_images_sources_owned_by_the_runtime_user(image):
    (artifact,) = [a for a in skaffold_config(("dev",))["build"]["artifacts"] if a["image"] == image]
    target = artifact["docker"]["target"]
    chain = stage_chain(target)
    paths = image_paths(target)
    pythonpath = [e for env in paths.env.get("PYTHONPATH", "").split(":") for e in [env] if e]
    assert paths.user.split(":")[0] == RUNTIME_UID, f"{target} runs as {paths.user}"
    for repo_file, dest in _synced_files(artifact):
        # the image holds that very file at that path, copied with the runtime user as owner
        copied = paths.copied.get(dest)
        assert copied, f"{repo_file} syncs to {dest}, which {target} ({' <- '.join(chain)}) does not have"
        assert copied.source == repo_file, f"{dest} holds {copied.source} in the image, sync puts {repo_file} there"
        assert copied.owner == f"{RUNTIME_UID}:{RUNTIME_UID}", f"{dest} is owned by {copied.owner}"
        # every directory up from it is the runtime user's, so new files can be created too
        for parent in PurePosixPath(dest).parents:
            if str(parent) in ("/", "/opt", "/opt/mediaflow"):
                continue
            owner = paths.directory_owner(str(parent))
            assert owner == f"{RUNTIME_UID}:{RUNTIME_UID}", f"{parent} (above {dest}) is owned by {owner}"
        # and the process imports it: its PYTHONPATH root comes before site-packages
        roots = [r for r in pythonpath if dest.startswith(r + "/")]
        assert roots, f"{dest} is not under PYTHONPATH {pythonpath}"
        if dest.endswith(".py"):
            module = PurePosixPath(dest).relative_to(roots[0]).with_suffix("").as_posix().replace("/", ".")
            assert module.split(".")[0] in {"mediaflow", "mediaflow_gateway", "mediaflow_operator"}, module
        # the reload loop watches it
        script = paths.entrypoint_script()
        assert script and any(dest.startswith(d + "/") for d in script.watched), (target, dest)


def _read_only_by_container(docs) -> dict[str, bool]:
    return {f"{where}/{c['name']}": c["securityContext"]["readOnlyRootFilesystem"]
            for where, pod in pod_templates(docs) for c in containers(pod)}


def test_the_dev_profile_makes_only_the_synced_containers_writable():
    for profiles in (("dev",), ("gpu", "dev")):
        docs, builds = skaffold_render(profiles)
        config = skaffold_config(profiles)
        synced = {builds[a["image"]]["ref"] for a in config["build"]["artifacts"] if a.get("sync")}
        for where, pod in pod_templates(docs):
            for c in containers(pod):
                writable = c["securityContext"]["readOnlyRootFilesystem"] is False
                assert writable == (c["image"] in synced), f"{profiles} {where}/{c['name']} ({c['image']})"
                assert c["securityContext"]["allowPrivilegeEscalation"] is False
                assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        writable = [k for k, ro in _read_only_by_container(docs).items() if ro is False]
        assert sorted(writable) == ["Deployment/mediaflow-gateway/gateway", "Deployment/mediaflow-operator/operator"]


@pytest.mark.parametrize("profiles", [(), ("gpu",)], ids=["default", "gpu"])
def test_renders_outside_the_dev_profile_keep_every_root_filesystem_read_only(profiles, variant):
    docs, _ = skaffold_render(profiles)
    assert set(_read_only_by_container(docs).values()) == {True}
    assert set(_read_only_by_container(render(variant)).values()) == {True}, variant


# ------------------------------------------------------------------ kind
def test_kind_cluster_is_ingress_ready_on_ports_80_and_443():
    kind = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    (node,) = kind["nodes"]
    assert "ingress-ready=true" in node["kubeadmConfigPatches"][0]
    assert {m["hostPort"] for m in node["extraPortMappings"]} == {80, 443}
    assert "nvkind" in (REPO / "kind-config.yaml").read_text()  # GPU guidance
