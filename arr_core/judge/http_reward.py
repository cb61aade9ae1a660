"""A scalar reward model over a small JSON-over-HTTP protocol (the ``http`` reward component), and a
helper that serves any ASGI app on 127.0.0.1 in a background thread.

Protocol (one request per batch of images; docs/rewards.md):

    POST <url>       Content-Type: application/json
    {"prompts": ["<prompt of image 0>", ...],          # one per image
     "images":  ["<base64 PNG>", ...],                 # one per image (no data: prefix)
     "sources": ["<base64 PNG>", ...]}                 # editing only: each image's source; else absent

    200 {"scores": [<float>, ...],                     # one per image, finite, higher is better
         "confidences": [<float in [0, 1]>, ...]}      # optional

Anything else — a connection error, a timeout, a non-200 status, a body without ``scores`` of the
right length, a non-finite score — is a failure of the endpoint (``EndpointError`` naming the URL
and what it said), never a score. A reference server (the scene checker as a "reward model") is
``benchmarks/reward_http_reference.py``; user servers wrap HPSv3, PickScore, UnifiedReward, etc.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math
import time
from typing import Any

from PIL import Image

from arr_core.errors import EndpointError
from arr_core.judge.hybrid import Component, ComponentResult
from arr_core.secrets import redact_url


def png_b64(image: Image.Image) -> str:
    """An image as base64 PNG (the protocol's image encoding)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def check_scores_body(body: Any, n: int) -> tuple[list[float], list[float] | None]:
    """(scores, confidences) from a response body; ValueError saying what is wrong."""
    if not isinstance(body, dict) or not isinstance(body.get("scores"), list):
        raise ValueError('the body has no "scores" list')
    scores, confs = body["scores"], body.get("confidences")
    if len(scores) != n:
        raise ValueError(f'"scores" has {len(scores)} entries for {n} images')
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in scores):
        raise ValueError('"scores" must hold finite numbers')
    if confs is not None:
        if not isinstance(confs, list) or len(confs) != n or not all(
                isinstance(c, (int, float)) and not isinstance(c, bool) and 0.0 <= c <= 1.0 for c in confs):
            raise ValueError(f'"confidences" must be {n} numbers in [0, 1]')
        confs = [float(c) for c in confs]
    return [float(s) for s in scores], confs


class HttpComponent(Component):
    """POSTs every image of the batch to ``url`` in one request (``timeout_s``; ``retries`` more tries
    after a connection error, a timeout or a 5xx) and splits the scores back into groups."""

    def __init__(self, name: str, url: str, *, timeout_s: float = 60.0, retries: int = 2) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be http(s)://…, got {url!r}")
        self.name, self.url, self.timeout_s, self.retries = name, url, timeout_s, retries

    @property
    def endpoint(self) -> str:
        return f"endpoint {redact_url(self.url)}"

    async def evaluate(self, prompts: list[str], groups: list[list[Image.Image]],
                       sources: list[Image.Image] | None) -> list[ComponentResult]:
        body: dict[str, Any] = {"prompts": [p for p, g in zip(prompts, groups, strict=True) for _ in g],
                                "images": [png_b64(im) for g in groups for im in g]}
        if sources is not None:
            body["sources"] = [png_b64(s) for s, g in zip(sources, groups, strict=True) for _ in g]
        t0 = time.perf_counter()
        scores, confs = await self._post(body, len(body["images"]))
        latency = time.perf_counter() - t0
        out, i = [], 0
        for g in groups:
            out.append(ComponentResult(scores[i:i + len(g)], confs[i:i + len(g)] if confs is not None else None,
                                       None, {}, latency))
            i += len(g)
        return out

    async def _post(self, body: dict[str, Any], n: int) -> tuple[list[float], list[float] | None]:
        import httpx

        where = f"reward component {self.name}: {self.endpoint}"
        last = "?"
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            for attempt in range(self.retries + 1):
                try:
                    r = await client.post(self.url, json=body)
                except httpx.HTTPError as e:
                    last = f"{type(e).__name__}: {e}"
                else:
                    if r.status_code == 200:
                        try:
                            return check_scores_body(r.json(), n)
                        except ValueError as e:  # includes a body that is not JSON
                            raise EndpointError(f"{where} answered 200 with an unusable body: {e}") from None
                    last = f"HTTP {r.status_code}: {r.text[:300]}"
                    if r.status_code < 500:
                        break  # the request itself is wrong: asking again gives the same answer
                if attempt < self.retries:
                    await asyncio.sleep(0.2 * 2 ** attempt)
        raise EndpointError(f"{where} failed: {last}")

