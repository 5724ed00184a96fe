"""Timeouts consistent end to end: the remote engines' client (``mediaflow.config.Settings``
as the chart's pipeline ConfigMap sets it), Ray Serve's HTTP proxy and its replicas (the
serve config, as the chart renders it into the RayService), for both profiles.

    client ──(remote_timeout, retries × backoff)──▶ Serve proxy ──(request_timeout_s)──▶ replica
                                                                   (graceful_shutdown_timeout_s)

1. The client waits at least as long as the proxy lets a request run: an attempt ends with
   the proxy's 408, never with the client giving up on a request still being served.
2. A replica that is scaled down or replaced (unhealthy, upgraded) finishes the requests it
   has: every model deployment's ``graceful_shutdown_timeout_s`` ≥ ``request_timeout_s``.
3. The client's retries, at their shortest (jitter halves each delay), outlast a restart of
   the serving process and its model load (``RESTART_BUDGET_S``). Under Ray Serve a request
   to a deployment whose replica is restarting waits in the proxy (up to its timeout); the
   retries matter when the endpoint itself refuses connections: a serving process or pod
   restarted (the plain app, a Ray node), and for the bare 500 of a replica that died.
4. A transcription longer than the proxy's timeout still completes: the 408 ends the
   request, not the work (a task of the app); the retry carries the same Idempotency-Key and
   joins it. So ``(retries + 1) × request_timeout_s`` must cover the longest transcription:
   the largest upload (``max_upload_bytes`` of 16 kHz mono 16-bit WAV, what the pipeline
   sends) at the profile's real-time factor (``REAL_TIME_FACTOR``, seconds of work per
   second of audio). The join holds on the replica that runs the work: with several
   replicas (gpu profile) a retry routed to another one transcribes again.
"""

from __future__ import annotations

import pytest
import yaml

from mediaflow.config import Settings
from tests.chart.conftest import find, render

PROFILES = {"cpu": "kind-cpu", "gpu": "gpu"}  # serve profile → chart CI variant that renders it
MODEL_DEPLOYMENTS = {"transcription": "TranscriptionServer", "embeddings": "EmbeddingsServer"}
# Start of the serving process or replica + model load: 20-25 s measured for tiny.en on a busy
# 2-core box (tests/serving/test_transcription_faults.py prints it); large-v3 from the model
# cache on a GPU about as long (CUDA init + 3 GB of weights). Twice that, rounded.
RESTART_BUDGET_S = 60.0
# Seconds of transcription work per second of audio, pessimistic: tiny.en int8 on 2 threads
# (0.17 measured for 32 s of the bundled espeak sample on a shared, busy 2-core box);
# large-v3 float16 batched on half a GPU (faster-whisper's benchmarks: ~0.02 on a whole one).
REAL_TIME_FACTOR = {"cpu": 0.2, "gpu": 0.05}
WAV_BYTES_PER_S = 16_000 * 2


def serve_config(profile: str) -> dict:
    (service,) = find(render(PROFILES[profile]), "RayService")
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert config["applications"], profile
    return config


def client_settings(profile: str) -> Settings:
    """What the operator, its worker Jobs and the gateway run with: the chart's pipeline env."""
    (configmap,) = [d for d in find(render(PROFILES[profile]), "ConfigMap") if d["metadata"]["name"].endswith("-pipeline")]
    remote = {k.removeprefix("MEDIAFLOW_").lower(): v for k, v in configmap["data"].items()
              if k.startswith("MEDIAFLOW_REMOTE_")}
    return Settings(**remote)


def shortest_retry_window(settings: Settings) -> float:
    """Seconds the client's retries span at least (each delay jittered down to half)."""
    return sum(0.5 * min(settings.remote_max_backoff, settings.remote_backoff * 2**n)
               for n in range(settings.remote_retries))


def deployments(config: dict) -> dict[str, dict]:
    out = {}
    for app in config["applications"]:
        if app["name"] in MODEL_DEPLOYMENTS:
            (deployment,) = [d for d in app["deployments"] if d["name"] == MODEL_DEPLOYMENTS[app["name"]]]
            out[app["name"]] = {**deployment, "args": app["args"]}
    assert set(out) == set(MODEL_DEPLOYMENTS)
    return out


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_timeouts_are_consistent_end_to_end(profile):
    config, client = serve_config(profile), client_settings(profile)
    proxy = config["http_options"]["request_timeout_s"]

    # 1. the client outwaits the proxy
    assert client.remote_timeout >= proxy, (
        f"MEDIAFLOW_REMOTE_TIMEOUT {client.remote_timeout} s < the proxy's request_timeout_s {proxy} s: "
        "the client gives up on requests still being served")

    # 2. a draining replica finishes whatever the proxy lets through
    for name, deployment in deployments(config).items():
        grace = deployment.get("graceful_shutdown_timeout_s", 20)  # Ray Serve's default: 20 s
        assert grace >= proxy, f"{profile}/{name}: graceful_shutdown_timeout_s {grace} < {proxy}"
        # the health probe's own bound fires before Ray's, so the failure has its reason
        assert deployment["health_check_timeout_s"] > 20.0  # health_probe_timeout_s' default

    # 3. the retries outlast a restart + model load
    window = shortest_retry_window(client)
    assert window >= RESTART_BUDGET_S, (
        f"retries {client.remote_retries} x backoff {client.remote_backoff}..{client.remote_max_backoff} s "
        f"span only {window:.1f} s (worst-case jitter) < {RESTART_BUDGET_S} s of restart + model load; "
        "e.g. remote_retries=8, remote_backoff=1.0, remote_max_backoff=30.0 span 60.5 s")

    # 4. the longest transcription is covered by the attempts that join it
    serving = deployments(config)["transcription"]["args"]["serving"]
    longest_audio = serving["max_upload_bytes"] / WAV_BYTES_PER_S
    longest_work = longest_audio * REAL_TIME_FACTOR[profile]
    covered = (client.remote_retries + 1) * min(proxy, client.remote_timeout)
    assert covered >= longest_work, (
        f"{profile}: the largest upload ({longest_audio / 3600:.1f} h of audio) takes ~{longest_work:.0f} s, "
        f"the client's {client.remote_retries + 1} attempts cover {covered:.0f} s")
    print(f"{profile}: proxy {proxy} s, client {client.remote_timeout} s, grace "
          f"{[d.get('graceful_shutdown_timeout_s') for d in deployments(config).values()]} s, "
          f"retries span >= {window:.1f} s, longest transcription ~{longest_work:.0f} s of {covered:.0f} s")


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_chart_renders_the_serving_packages_timeouts(profile):
    """The rendered serveConfigV2 keeps the profile file's timeouts (the chart rewrites paths only)."""
    from tests.conftest import REPO

    source = yaml.safe_load((REPO / "services/serving/config" / f"serve-{profile}.yaml").read_text())
    rendered = serve_config(profile)
    assert rendered["http_options"] == source["http_options"]
    assert deployments(rendered).keys() == deployments(source).keys()
    for name, deployment in deployments(source).items():
        for key in ("graceful_shutdown_timeout_s", "health_check_period_s", "health_check_timeout_s"):
            assert deployments(rendered)[name].get(key) == deployment.get(key), (name, key)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_stopped_pods_and_the_llm_drain_what_the_proxy_lets_through(profile):
    """A worker pod outlives its replicas' drain, and the LLM replicas drain like the others."""
    from mediaflow_serving.llm import LLMArgs

    (service,) = find(render(PROFILES[profile]), "RayService")
    config = serve_config(profile)
    proxy = config["http_options"]["request_timeout_s"]
    longest_grace = max(d.get("graceful_shutdown_timeout_s", 20) for d in deployments(config).values())
    for group in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        assert group["template"]["spec"]["terminationGracePeriodSeconds"] > longest_grace, group["groupName"]
    (llm,) = [a for a in config["applications"] if a["name"] == "llm"]
    assert LLMArgs.model_validate(llm["args"]).graceful_shutdown_timeout_s >= proxy
