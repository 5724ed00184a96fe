"""Chat through any OpenAI-compatible endpoint (vLLM, Ray Serve LLM)."""

from __future__ import annotations

import openai

from mediaflow.errors import EngineRequestError, EngineUnavailableError


def _why(exc: openai.APIError) -> str:
    """What went wrong, in a few words: the client's own text says only "Connection error."."""
    if isinstance(exc, openai.APITimeoutError):
        return "request timed out"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    cause = exc.__cause__
    detail = str(cause).strip() if cause is not None else ""
    return f"connection failed ({detail})" if detail else "connection failed"


class OpenAIChatModel:
    def __init__(
        self, base_url: str, model: str, *, api_key: str = "not-needed", timeout: float = 300.0,
        max_retries: int = 4, repetition_penalty: float | None = None,
    ):
        self.name = model
        self.base_url = base_url
        self.max_retries = max_retries
        # vLLM's sampling extension: tiny models loop without it. None = plain OpenAI request.
        self.extra_body = {"repetition_penalty": repetition_penalty} if repetition_penalty else None
        # The official client retries connection errors, 408/409/429 and 5xx with backoff.
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries
        )

    def complete(
        self, messages: list[dict[str, str]], *, max_tokens: int = 256, temperature: float = 0.0
    ) -> str:
        try:
            response = self.client.chat.completions.create(
                model=self.name, messages=messages, max_tokens=max_tokens,
                temperature=temperature, extra_body=self.extra_body,
            )
        except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError) as exc:
            attempts = self.max_retries + 1
            raise EngineUnavailableError(
                f"LLM at {self.base_url} unavailable: {_why(exc)}"
                f" (after {attempts} attempt{'s' if attempts > 1 else ''})"
            ) from exc
        except openai.APIStatusError as exc:
            raise EngineRequestError(
                f"LLM at {self.base_url} rejected the request ({exc.status_code}): {exc.message}"
            ) from exc
        return (response.choices[0].message.content or "").strip()
