"""OpenAI-compatible chat-completions backend (vLLM, SGLang, OpenAI, Gemini's OpenAI endpoint, ``arr vlm serve``).

Built on ``openai.AsyncOpenAI`` with the library's own retries switched off (``max_retries=0``) so
that retries are done — and counted — here: 429, 5xx, timeouts and connection errors are retried
with exponential backoff and jitter, honouring ``Retry-After`` / ``retry-after-ms``, within
``max_retries`` attempts and a total time budget. Other errors (400, 401, 404 …) fail at once.

The API key is handed to the openai client and kept nowhere else: it is not part of ``name``,
``model``, ``repr`` or any log line.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import time
from typing import Any

import httpx
import openai

from arr_core.vlm.base import VLMTransportError

log = logging.getLogger(__name__)


def _retry_after_s(exc: Exception) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (seconds or HTTP date), if the error has them."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(ra) if ra else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def _parse_completion(raw: httpx.Response) -> tuple[str, dict[str, int]]:
    """(text, usage) from a chat-completions response body; VLMTransportError if it is not one."""
    try:
        body = raw.json()
        text = body["choices"][0]["message"].get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise VLMTransportError(f"the endpoint's answer is not a chat completion: {raw.text[:200]!r}") from None
    u = body.get("usage") or {}
    usage = {"prompt_tokens": int(u.get("prompt_tokens") or 0),
             "completion_tokens": int(u.get("completion_tokens") or 0)}
    return str(text), usage


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500 or exc.status_code == 408
    return False


def _describe(exc: Exception) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection error"
    return type(exc).__name__


class OpenAIBackend:
    """``VLMBackend`` over any OpenAI-compatible ``/v1/chat/completions`` endpoint.

    ``backoff_s``: first retry delay; it doubles per retry up to ``max_backoff_s``, times a jitter
    factor in [0.5, 1]. A ``Retry-After`` header replaces the computed delay (the server knows best);
    ``total_retry_budget_s`` bounds the time spent on one call, so a long ``Retry-After`` ends the
    retries instead of stalling the run.
    """

    name = "openai"

    def __init__(self, base_url: str | None, api_key: str | None, model: str, *, timeout_s: float = 60.0,
                 max_retries: int = 5, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 total_retry_budget_s: float = 300.0, seed: int = 0) -> None:
        if not model:
            raise ValueError("model must name the served model (e.g. 'Qwen/Qwen3-VL-8B-Instruct')")
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0 or total_retry_budget_s < 0:
            raise ValueError("need timeout_s > 0, max_retries >= 0, backoff_s >= 0, total_retry_budget_s >= 0")
        self.model = model
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.total_retry_budget_s = total_retry_budget_s
        self._rng = random.Random(seed)
        # A local server (``arr vlm serve``, vLLM) needs no key, but the openai client insists on one.
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key,
                                          timeout=timeout_s, max_retries=0)
        self.retries = 0
        self.http_requests = 0
        self.errors_by_kind: dict[str, int] = {}

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, timeout_s={self.timeout_s})"

    def _delay(self, retry_no: int, exc: Exception) -> float:
        ra = _retry_after_s(exc)
        if ra is not None:
            return ra
        base = min(self.max_backoff_s, self.backoff_s * (2 ** retry_no))
        return base * (0.5 + 0.5 * self._rng.random())

    async def chat(self, messages: list[dict[str, Any]], *, temperature: float, max_tokens: int,
                   seed: int | None = None, json_mode: bool = False) -> tuple[str, dict[str, int]]:
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": temperature,
                                  "max_tokens": max_tokens}
        if seed is not None:
            kwargs["seed"] = seed
        if json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        t0 = time.monotonic()
        retry_no = 0
        while True:
            self.http_requests += 1
            try:
                # ``post`` (the client's documented route for raw endpoints) sends the body as is and,
                # with ``cast_to=httpx.Response``, returns the raw response: the typed
                # ``chat.completions.create`` walks every message part through its TypedDict
                # transformer and builds pydantic models, ~3 ms of CPU per request with two images,
                # which caps throughput at high concurrency. HTTP errors still raise APIStatusError.
                raw = await self._client.post("/chat/completions", body=kwargs, cast_to=httpx.Response)
            except openai.OpenAIError as exc:
                kind = _describe(exc)
                self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1
                if not _retryable(exc):
                    raise VLMTransportError(f"{kind} from {self.base_url or 'the OpenAI API'}: not retryable") from None
                delay = self._delay(retry_no, exc)
                spent = time.monotonic() - t0
                if retry_no >= self.max_retries or spent + delay > self.total_retry_budget_s:
                    raise VLMTransportError(
                        f"{kind} after {retry_no} retries ({spent:.1f}s) from {self.base_url or 'the OpenAI API'}"
                    ) from None
                retry_no += 1
                self.retries += 1
                log.info("VLM %s; retry %d/%d in %.2fs", kind, retry_no, self.max_retries, delay)
                await asyncio.sleep(delay)
                continue
            return _parse_completion(raw)

    async def aclose(self) -> None:
        await self._client.close()
