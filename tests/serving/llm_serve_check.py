"""Runs in the LLM environment (.venv-llm), started by test_llm_app.py: serve the llm app
with Ray Serve on CPU, ask one chat completion with the official openai client, print
the outcome as one JSON line, shut everything down.

    .venv-llm/bin/python tests/serving/llm_serve_check.py PORT RAY_TMP_DIR MODEL_DIR
"""

from __future__ import annotations

import json
import sys
import time

if __name__ == "__main__":  # vLLM spawns processes: nothing may run on import
    import ray
    from openai import OpenAI
    from ray import serve

    from mediaflow_serving.llm import app

    port, ray_tmp, model_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=ray_tmp, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        started = time.perf_counter()
        serve.run(app({"model_source": model_dir}), name="llm", route_prefix="/llm")
        ready = time.perf_counter() - started
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/llm/v1", api_key="not-needed", max_retries=0)
        models = [m.id for m in client.models.list().data]
        started = time.perf_counter()
        reply = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Name one animal that lives in the sea."}],
            max_tokens=24,
            temperature=0,
        )
        print(json.dumps({
            "models": models,
            "text": reply.choices[0].message.content,
            "completion_tokens": reply.usage.completion_tokens,
            "ready_seconds": round(ready, 1),
            "completion_seconds": round(time.perf_counter() - started, 2),
        }), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
