"""The serving apps without Ray, as one uvicorn process each (a dev box, a test's server):

    python -m mediaflow_serving.plain transcription --port 8000
    uvicorn --factory mediaflow_serving.plain:transcription_app --port 8000

Engines are configured by ``MEDIAFLOW_*`` (``mediaflow.config.Settings``), the serving
side by ``MEDIAFLOW_SERVE_*`` (``ServingSettings``), as under Ray Serve. The port opens
once the model is loaded (uvicorn binds after the app's startup).
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI

from mediaflow_serving.engines import load_embedder, load_transcriber
from mediaflow_serving.settings import ServingSettings


def transcription_app() -> FastAPI:
    from mediaflow_serving.apps.transcription_api import create_app

    return create_app(load_transcriber, settings=ServingSettings())


def embeddings_app() -> FastAPI:
    from mediaflow_serving.apps.embeddings_api import create_app

    return create_app(load_embedder, settings=ServingSettings())


APPS = {"transcription": transcription_app, "embeddings": embeddings_app}


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m mediaflow_serving.plain", description=__doc__.split("\n")[0])
    parser.add_argument("app", choices=sorted(APPS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    uvicorn.run(f"mediaflow_serving.plain:{APPS[args.app].__name__}", factory=True, host=args.host,
                port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
