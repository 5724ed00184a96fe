"""Mediaflow model services (Ray Serve apps) and the LLM environment's helpers."""
