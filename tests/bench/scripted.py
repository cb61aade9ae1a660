"""Scripted VLM backends for hand-checked benchmark tests.

They implement the project's own ``VLMBackend`` seam (not a library mock) with rules simple enough
to derive every expected number by hand:

- ``FirstBackend``: always ranks the first image shown best (pure position bias).
- ``RedBackend``: ranks the image with more red pixels best; with ``needs_rubrics=k`` it does so only
  when the judge prompt carries at least ``k`` numbered rubric lines, and otherwise behaves like
  ``FirstBackend``.
- ``CheckBackend``: answers yes/no questions "Is there a red ...?" by the image's red pixels, and
  "yes" to everything else.
"""

from __future__ import annotations

import base64
import io
import json
import re
from typing import Any

import numpy as np
from PIL import Image


def _images(messages: list[dict[str, Any]]) -> list[np.ndarray]:
    out = []
    for m in messages:
        for part in m.get("content", []) if isinstance(m.get("content"), list) else []:
            if part.get("type") == "image_url":
                url = part["image_url"]["url"]
                data = base64.b64decode(url.split(",", 1)[1])
                out.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=int))
    return out


def _text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(p.get("text", "") for m in messages for p in (m["content"] if isinstance(m["content"], list)
                                                                    else [{"text": m["content"]}]))


def red_pixels(a: np.ndarray) -> int:
    return int(((a[..., 0] > 180) & (a[..., 1] < 80) & (a[..., 2] < 80)).sum())


class _Base:
    name = "scripted"
    model = "scripted-1"

    def __init__(self) -> None:
        self.calls = 0

    async def chat(self, messages, *, temperature, max_tokens, seed=None, json_mode=False):
        self.calls += 1
        return self.answer(messages), {"prompt_tokens": 1, "completion_tokens": 1}


class FirstBackend(_Base):
    model = "first-1"

    def answer(self, messages) -> str:
        n = len(_images(messages)) - (1 if "BASE" in _text(messages) else 0)
        return json.dumps({"rank": list(range(1, n + 1)), "reason": "the first image looks best"})


class RedBackend(_Base):
    def __init__(self, needs_rubrics: int = 1) -> None:
        super().__init__()
        self.needs_rubrics = needs_rubrics
        self.model = f"red-{needs_rubrics}"

    def answer(self, messages) -> str:
        text = _text(messages)
        imgs = _images(messages)
        if "BASE" in text:  # editing: the source image comes first and is not ranked
            imgs = imgs[1:]
        n_rubrics = 0
        if "Evaluation rubrics:" in text:
            block = text.split("Evaluation rubrics:", 1)[1].split("\n\n", 1)[0]
            n_rubrics = len(re.findall(r"^\d+\. ", block, flags=re.M))
        if n_rubrics < self.needs_rubrics:
            return json.dumps({"rank": list(range(1, len(imgs) + 1)), "reason": "first looks best"})
        reds = [red_pixels(a) for a in imgs]
        order = sorted(range(len(imgs)), key=lambda i: (-reds[i], i))
        rank = [0] * len(imgs)
        for r, i in enumerate(order, 1):
            rank[i] = r
        return json.dumps({"rank": rank, "reason": f"red pixels {reds}"})


class CheckBackend(_Base):
    model = "check-1"

    def answer(self, messages) -> str:
        text = _text(messages)
        img = _images(messages)[0]
        qs = re.findall(r"^\d+\. (.*)$", text.split("Questions:", 1)[1], flags=re.M)
        ans = []
        for q in qs:
            a = "yes"
            if "red" in q.lower():
                a = "yes" if red_pixels(img) > 20 else "no"
            ans.append({"question": q, "answer": a})
        return json.dumps({"answers": ans})
