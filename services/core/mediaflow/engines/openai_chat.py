"""Chat through any OpenAI-compatible endpoint (vLLM, Ray Serve LLM)."""

from __future__ import annotations

import openai

from mediaflow.errors import EngineRequestError, EngineUnavailableError


class OpenAIChatModel:
    def __init__(
        self, base_url: str, model: str, *, api_key: str = "not-needed", timeout: float = 300.0,
        max_retries: int = 4, repetition_penalty: float | None = None,
    ):
        self.name = model
        self.base_url = base_url
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
            raise EngineUnavailableError(f"LLM at {self.base_url} unavailable: {exc}") from exc
        except openai.APIStatusError as exc:
            raise EngineRequestError(
                f"LLM at {self.base_url} rejected the request ({exc.status_code}): {exc.message}"
            ) from exc
        return (response.choices[0].message.content or "").strip()
