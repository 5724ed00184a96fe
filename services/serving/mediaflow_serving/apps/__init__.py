"""Plain FastAPI apps (no Ray needed): run them under uvicorn, or behind ``@serve.ingress``."""
