"""JSON extraction from model answers that wrap it in fences, chat or reasoning.

The reference parses answers with a bare ``json.loads`` and crashes on the first chatty reply; here
reasoning is removed first (``strip_reasoning``: ``<think>…</think>`` blocks, the reasoning before a
lone ``</think>`` that Qwen3 thinking templates leave when the opening tag is in the prompt, and an
unclosed ``<think>`` block cut off by the token budget), because a draft answer inside the reasoning
is not the answer. Then the first JSON object that carries the required keys wins, else the first
object found, else None.
"""

from __future__ import annotations

import json
import re
from typing import Any

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


def _objects_in(text: str) -> list[dict[str, Any]]:
    """Every top-level JSON object that decodes, scanning left to right."""
    found: list[dict[str, Any]] = []
    i = text.find("{")
    while i != -1:
        try:
            obj, end = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        i = text.find("{", end)
    return found


def strip_reasoning(text: str) -> str:
    """``text`` without its reasoning: closed ``<think>`` blocks removed, everything up to a remaining
    ``</think>`` dropped (the opening tag was in the prompt), and an unclosed ``<think>`` block (cut off
    by the budget) dropped to the end."""
    if not isinstance(text, str) or "think>" not in text.lower():
        return text
    text = _THINK_BLOCK.sub("", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end():]
    m = _THINK_OPEN.search(text)
    if m:
        text = text[:m.start()]
    return text.strip()


def extract_json(text: str, required_keys: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The answer's JSON object: fenced blocks first, then any object in the text; None if none.

    Among candidates, the first with all ``required_keys`` is preferred.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    candidates: list[dict[str, Any]] = []
    stripped = text.strip()
    try:
        obj = json.loads(stripped)
        if isinstance(obj, dict):
            candidates.append(obj)
    except json.JSONDecodeError:
        pass
    for block in _FENCE.findall(text):
        candidates += _objects_in(block)
    candidates += _objects_in(text)
    if not candidates:
        return None
    for c in candidates:
        if all(k in c for k in required_keys):
            return c
    return candidates[0]


def check_answer(text: str, required_keys: tuple[str, ...], validator: Any = None) -> tuple[dict | None, str | None]:
    """(parsed, None) when the answer is usable, else (None, what was wrong) for a re-ask. Reasoning
    in the text (``<think>`` blocks) is never parsed."""
    obj = extract_json(strip_reasoning(text), required_keys)
    if obj is None:
        return None, "the answer contained no JSON object"
    missing = [k for k in required_keys if k not in obj]
    if missing:
        return None, f"the JSON object lacks the key(s) {', '.join(repr(k) for k in missing)}"
    if validator is not None:
        try:
            problem = validator(obj)
        except (TypeError, ValueError, KeyError, AttributeError) as e:  # a validator meeting odd types
            problem = f"the JSON object has an unexpected shape ({e})"
        if problem:
            return None, problem
    return obj, None
