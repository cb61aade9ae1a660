"""The seam every VLM backend implements.

A request is OpenAI chat ``messages`` (images as ``data:`` URLs inside ``image_url`` parts) plus
what the caller expects back: the required JSON keys and an optional validator that returns an
error string (used for re-asks, e.g. "rank must be a permutation of 1..2"). Backends return the raw
text; the client layer (``arr_core.vlm.client``) extracts and validates JSON, re-asks, caches and
keeps statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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


@dataclass
class VLMResponse:
    parsed: dict[str, Any] | None
    text: str
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens
    latency_s: float = 0.0
    cached: bool = False
    error: str | None = None  # set when no valid answer could be obtained (the caller abstains)
    attempts: int = 1


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
