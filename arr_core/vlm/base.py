"""The seam every VLM backend implements.

A request is OpenAI chat ``messages`` (images as ``data:`` URLs inside ``image_url`` parts) plus
what the caller expects back: the required JSON keys, an optional validator that returns an
error string (used for re-asks, e.g. "rank must be a permutation of 1..2") and an optional JSON
schema for endpoints with structured output. Backends return the raw text; the client layer
(``arr_core.vlm.client``) extracts and validates JSON, re-asks, caches and keeps statistics.

A backend implements ``chat`` (text and usage). One that can say more — why generation stopped,
reasoning kept apart from the answer, reasoning-token counts, structured output — also implements
``complete(messages, ChatParams) -> Completion``; the client uses it when present.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from arr_core.errors import ArrError

Validator = Callable[[dict[str, Any]], "str | None"]


@dataclass
class VLMRequest:
    messages: list[dict[str, Any]]
    # Keys the JSON answer must contain, e.g. ("rank", "reason"). Part of the cache key.
    required_keys: tuple[str, ...] = ()
    # Extra semantic check on the parsed answer; returns an error message or None.
    validator: Validator | None = None
    temperature: float = 0.0
    max_tokens: int = 1024
    # Version of the prompt template that built the messages: part of cache keys and lineage.
    prompt_version: str = "unversioned"
    # Free-form label for statistics and logs ("generate", "judge", "revise", "categorize", "check").
    kind: str = "generic"
    seed: int | None = None
    # JSON schema of the answer, sent as response_format json_schema where the endpoint accepts it.
    schema: dict[str, Any] | None = None


@dataclass
class VLMResponse:
    parsed: dict[str, Any] | None
    text: str
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens
    latency_s: float = 0.0
    cached: bool = False
    error: str | None = None  # set when no valid answer could be obtained (the caller abstains)
    attempts: int = 1


@dataclass
class ChatParams:
    """Decoding parameters of one backend call (what the client decided, before any endpoint adaptation).

    temperature None: not sent (the endpoint's default). max_tokens: the output budget (sent as
    ``max_tokens`` or ``max_completion_tokens``). schema: structured output (``response_format``
    json_schema) if the endpoint accepts it; json_mode: ``response_format`` json_object otherwise.
    """

    max_tokens: int
    temperature: float | None = 0.0
    seed: int | None = None
    json_mode: bool = False
    schema: dict[str, Any] | None = None
    schema_name: str = "answer"
    reasoning_effort: str | None = None


@dataclass
class Completion:
    """What a backend call returned: the answer content (never the reasoning), why generation stopped
    (``stop``, ``length`` …; None when unknown), the reasoning the server kept apart
    (``reasoning_content`` / ``reasoning``) and usage (prompt_tokens, completion_tokens,
    reasoning_tokens)."""

    text: str
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str | None = None
    reasoning: str | None = None


@runtime_checkable
class VLMBackend(Protocol):
    """A transport that turns chat messages into raw model text."""

    name: str
    model: str

    async def chat(self, messages: list[dict[str, Any]], *, temperature: float, max_tokens: int,
                   seed: int | None = None, json_mode: bool = False) -> tuple[str, dict[str, int]]:
        """Return (raw text, usage). Raise ``VLMTransportError`` for failures after retries."""
        ...


class VLMTransportError(RuntimeError):
    """The backend could not get any answer (after its retries)."""


class ImageLimitError(ArrError, ValueError):
    """A request carries more images than the endpoint accepts (a hard limit: every such request would
    fail). The message names the limit, the request's image count and how to raise the limit."""

    exit_code = 4

    def __init__(self, n_images: int, limit: int, where: str, server_message: str | None = None) -> None:
        self.n_images, self.limit = n_images, limit
        said = f" The server said: {server_message}" if server_message else ""
        super().__init__(
            f"{where} accepts at most {limit} image(s) per request, but this request has {n_images} "
            f"(editing sends the original plus each edited image). Raise the server's limit — vLLM: "
            f"--limit-mm-per-prompt '{{\"image\": {n_images}}}'; SGLang and hosted APIs: see their "
            f"multimodal limits — and set vlm.max_images_per_request to match.{said}")


class RequestTooLargeError(ArrError, ValueError):
    """A request is larger than ``max_request_bytes`` even with its images shrunk as far as allowed."""

    exit_code = 4
