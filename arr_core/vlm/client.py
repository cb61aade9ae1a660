"""The VLM client: concurrency cap, response cache, JSON extraction, validation, bounded re-asks, stats.

Every stage talks to the VLM through ``VLMClient.ask`` / ``ask_many``. The reference calls its judge
once per pair, blocking, with no retry, cache or timeout, and parses with a bare ``json.loads`` (one
chatty answer kills a training job). Here:

- at most ``concurrency`` requests are in flight (an asyncio semaphore);
- a cache hit (store table ``vlm_cache``) makes no request; ``cache_mode`` is ``readwrite``,
  ``readonly`` (use hits, write nothing) or ``off``;
- an answer that has no JSON, lacks a required key or fails the request's validator is re-asked up
  to ``max_reasks`` times with a message saying what was wrong; after that the response carries
  ``error`` and the caller abstains (the client never raises on garbage or on transport failure);
- transport retries (429/5xx/timeouts) live in the backend; ``stats()`` reports them with the rest;
- request parameters: the output budget per request kind (``budgets``, else the template's), the
  temperature (None: not sent), ``reasoning_effort`` and structured output (the request's JSON schema)
  are passed to the backend, which adapts them to the endpoint (``arr_core.vlm.openai_backend``);
- reasoning: ``<think>`` blocks and a server's ``reasoning_content`` are never parsed as the answer;
  an answer cut off by the budget (``finish_reason: length``) is asked again with twice the budget,
  up to ``max_tokens_cap``, before it counts as invalid; the raised budget is kept for later requests
  of the same kind; reasoning tokens are counted;
- images are encoded under ``image_policy`` (size cap, format, quality; once per image content), the
  image count is checked against ``max_images_per_request`` and the request size against
  ``max_request_bytes`` (images shrunk to fit, else ``RequestTooLargeError``) before sending. These
  two errors (and a server's 400 about the image count) are the only ones ``ask`` raises: every
  request like it would fail, so the stage stops with the message instead of abstaining on each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from arr_core.data.images import ImagePolicy
from arr_core.failures import TRANSPORT_PREFIX
from arr_core.vlm.base import (
    ChatParams,
    Completion,
    ImageLimitError,
    RequestTooLargeError,
    VLMBackend,
    VLMRequest,
    VLMResponse,
    VLMTransportError,
)
from arr_core.vlm.cache import ResponseCache, cache_key
from arr_core.vlm.jsonx import check_answer, strip_reasoning
from arr_core.vlm.messages import count_images, encode_images, request_chars

log = logging.getLogger(__name__)

CacheMode = Literal["readwrite", "readonly", "off"]
CACHE_MODES = ("readwrite", "readonly", "off")

REASK_TEMPLATE = ("Your previous answer could not be used: {problem}. Reply again with only the JSON "
                  "object in the form requested above, and nothing else.")
DEFAULT_MAX_TOKENS_CAP = 16384
_FROM_REQUEST = object()  # temperature: use the request's own
_SHRINK_SIDES = (768, 512, 384, 256)  # max_side steps when a request is over max_request_bytes


class VLMClient:
    """Concurrent, cached, validating access to one backend.

    Buffered cache writes are flushed (one store transaction each time) when no request of this
    client is active any more, when ``flush_every`` rows are pending, when ``flush_interval_s`` has
    passed since the last flush (so an interrupted run loses little), and on ``flush()``/``close()``.
    """

    def __init__(self, backend: VLMBackend, *, store: Any | None = None, cache_mode: CacheMode = "readwrite",
                 concurrency: int = 8, max_reasks: int = 2, json_mode: bool = False,
                 flush_every: int = 256, flush_interval_s: float = 5.0, max_side: int | None = None,
                 image_policy: ImagePolicy | None = None, budgets: dict[str, int] | None = None,
                 max_tokens_cap: int = DEFAULT_MAX_TOKENS_CAP, temperature: Any = _FROM_REQUEST,
                 reasoning_effort: str | None = None, structured_output: bool = True,
                 max_request_bytes: int | None = None, max_images_per_request: int | None = None) -> None:
        if cache_mode not in CACHE_MODES:
            raise ValueError(f"cache_mode must be one of {CACHE_MODES}, got {cache_mode!r}")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
        if not isinstance(max_reasks, int) or max_reasks < 0:
            raise ValueError(f"max_reasks must be an integer >= 0, got {max_reasks!r}")
        self.backend = backend
        self.cache_mode: CacheMode = cache_mode
        self.concurrency = concurrency
        self.max_reasks = max_reasks
        self.json_mode = json_mode
        if max_side is not None and max_side < 16:
            raise ValueError(f"max_side must be >= 16 (or None), got {max_side!r}")
        if image_policy is None and max_side is not None:
            image_policy = ImagePolicy(max_side=max_side)
        # images are encoded under this before they are sent (None: as the request carries them)
        self.image_policy = image_policy
        self.max_side = image_policy.max_side if image_policy is not None else None
        bad = {k: v for k, v in (budgets or {}).items() if not isinstance(v, int) or v < 1}
        if bad:
            raise ValueError(f"budgets must map request kinds to positive integers, got {bad}")
        if not isinstance(max_tokens_cap, int) or max_tokens_cap < 1:
            raise ValueError(f"max_tokens_cap must be a positive integer, got {max_tokens_cap!r}")
        self.budgets = dict(budgets or {})
        self.max_tokens_cap = max_tokens_cap
        self.temperature = temperature
        self.reasoning_effort = reasoning_effort
        self.structured_output = structured_output
        self.max_request_bytes = max_request_bytes
        self.max_images_per_request = max_images_per_request
        self._learnt_budget: dict[str, int] = {}  # kind → budget raised after truncated answers
        self.flush_every = flush_every
        self.cache = ResponseCache(store, writable=cache_mode == "readwrite") if cache_mode != "off" else None
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None
        self.flush_interval_s = flush_interval_s
        self._in_flight = 0
        self.max_in_flight = 0
        self._active = 0
        self._last_flush = time.monotonic()
        self._read_waiters: dict[str, list[asyncio.Future]] = {}
        self._read_scheduled = False
        self._counts = {"requests": 0, "calls": 0, "cache_hits": 0, "reasks": 0, "failures": 0,
                        "invalid_answers": 0, "prompt_tokens": 0, "completion_tokens": 0, "cache_errors": 0,
                        "reasoning_tokens": 0, "length_retries": 0, "request_bytes": 0, "request_bytes_max": 0,
                        "images_sent": 0}
        self._latencies: list[float] = []

    # ------------------------------------------------------------------ public API

    async def ask(self, req: VLMRequest) -> VLMResponse:
        """One request: cache, then the backend with re-asks; never raises for model/transport failure.

        Cache reads of asks started in the same event-loop tick are one query; buffered writes are
        flushed when no other request of this client is active (or by size/time), so concurrent
        single asks cost one store transaction per burst, not one per request.
        """
        key = self._key(req)
        hit = await self._lookup_coalesced(key) if key else None
        return await self._ask_keyed(req, key, hit)

    async def ask_many(self, reqs: list[VLMRequest],
                       progress: Callable[[int, int], None] | None = None) -> list[VLMResponse]:
        """Many requests concurrently (bounded by ``concurrency``), results in input order.

        The cache is read with one query for the whole batch and written in one transaction at the end.
        """
        keys = [self._key(r) for r in reqs]
        hits = self._lookup([k for k in keys if k])
        done = 0
        total = len(reqs)

        async def one(req: VLMRequest, key: str | None) -> VLMResponse:
            nonlocal done
            resp = await self._ask_keyed(req, key, hits.get(key) if key else None)
            done += 1
            if progress is not None:
                progress(done, total)
            return resp

        try:
            return list(await asyncio.gather(*(one(r, k) for r, k in zip(reqs, keys, strict=True))))
        finally:
            if self.cache is not None and self.cache.n_pending:
                self._auto_flush()

    def ask_many_sync(self, reqs: list[VLMRequest],
                      progress: Callable[[int, int], None] | None = None) -> list[VLMResponse]:
        """``ask_many`` from synchronous code (runs its own event loop)."""
        return asyncio.run(self.ask_many(reqs, progress))

    def flush(self) -> int:
        """Write buffered cache rows (one transaction). Returns the number written."""
        self._last_flush = time.monotonic()
        return self.cache.flush() if self.cache is not None else 0

    def close(self) -> None:
        """Flush buffered cache rows."""
        self.flush()

    async def aclose(self) -> None:
        """Flush buffered cache rows and close the backend's HTTP connections (if it has any)."""
        self.flush()
        closer = getattr(self.backend, "aclose", None)
        if closer is not None:
            await closer()

    def stats(self) -> dict[str, Any]:
        """Counters (requests, calls, cache hits, retries, re-asks, failures, tokens), latency
        percentiles over backend calls in seconds, and the highest number of requests in flight."""
        out: dict[str, Any] = dict(self._counts)
        out["retries"] = int(getattr(self.backend, "retries", 0))
        out["max_in_flight"] = self.max_in_flight
        lat = np.asarray(self._latencies, dtype=float)
        for p in (50, 90, 99):
            out[f"latency_p{p}_s"] = float(np.percentile(lat, p)) if lat.size else 0.0
        out["backend"] = getattr(self.backend, "name", type(self.backend).__name__)
        out["model"] = getattr(self.backend, "model", "")
        out["bytes_per_call"] = round(self._counts["request_bytes"] / self._counts["calls"]) if self._counts["calls"] else 0
        out["output_budgets"] = dict(self._learnt_budget)
        out["adaptations"] = list(getattr(self.backend, "adaptations", []) or [])
        return out

    # ------------------------------------------------------------------ internals

    def _key(self, req: VLMRequest) -> str | None:
        if self.cache is None:
            return None
        salt = str(getattr(self.backend, "cache_salt", ""))
        if self.image_policy is not None:  # the backend sees other pixels: another answer
            salt += f"|images={self.image_policy.label()}"
        # decoding choices that change answers (the defaults leave the key as the request makes it)
        if self.temperature is not _FROM_REQUEST and self.temperature != req.temperature:
            salt += f"|temperature={self.temperature}"
        if self.reasoning_effort:
            salt += f"|reasoning_effort={self.reasoning_effort}"
        if self.structured_output and req.schema is not None:
            salt += "|structured"
        return cache_key(self.backend.name, self.backend.model, req, json_mode=self.json_mode, salt=salt)

    def _lookup(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Cached rows for ``keys``; a store that cannot be read (locked, missing) counts as all misses."""
        if self.cache is None or not keys:
            return {}
        try:
            return self.cache.get_many(keys)
        except Exception as e:  # noqa: BLE001 — the cache is an optimisation; the request still runs
            self._counts["cache_errors"] += 1
            log.warning("VLM cache read failed, asking the backend instead: %s", e)
            return {}

    def _auto_flush(self) -> None:
        try:
            self.flush()
        except Exception as e:  # noqa: BLE001 — rows stay buffered; the next flush retries them
            self._counts["cache_errors"] += 1
            log.warning("VLM cache write failed (%d rows kept for the next flush): %s",
                        self.cache.n_pending if self.cache else 0, e)

    async def _lookup_coalesced(self, key: str) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._read_waiters.setdefault(key, []).append(fut)
        if not self._read_scheduled:
            self._read_scheduled = True
            loop.call_soon(self._run_reads)
        return await fut

    def _run_reads(self) -> None:
        self._read_scheduled = False
        waiters, self._read_waiters = self._read_waiters, {}
        try:
            found = self._lookup(list(waiters))
        except Exception as e:  # noqa: BLE001 — handed to every waiting ask (a locked store, …)
            for futs in waiters.values():
                for f in futs:
                    if not f.done():
                        f.set_exception(e)
            return
        for k, futs in waiters.items():
            for f in futs:
                if not f.done():
                    f.set_result(found.get(k))

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:  # asyncio primitives are bound to one loop
            self._sem, self._sem_loop = asyncio.Semaphore(self.concurrency), loop
        return self._sem

    async def _ask_keyed(self, req: VLMRequest, key: str | None, hit: dict[str, Any] | None) -> VLMResponse:
        self._active += 1
        try:
            return await self._ask_keyed_inner(req, key, hit)
        finally:
            self._active -= 1
            if self.cache is not None and self.cache.n_pending and (
                    self._active == 0 or self.cache.n_pending >= self.flush_every
                    or time.monotonic() - self._last_flush >= self.flush_interval_s):
                self._auto_flush()

    async def _ask_keyed_inner(self, req: VLMRequest, key: str | None, hit: dict[str, Any] | None) -> VLMResponse:
        self._counts["requests"] += 1
        if hit is not None:
            parsed, problem = check_answer(hit["text"], req.required_keys, req.validator)
            if problem is None:  # a cached answer that no longer validates is asked again
                self._counts["cache_hits"] += 1
                return VLMResponse(parsed=parsed, text=hit["text"], usage=dict(hit.get("usage") or {}),
                                   latency_s=0.0, cached=True, attempts=0)
        async with self._semaphore():
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                resp = await self._call_with_reasks(req)
            finally:
                self._in_flight -= 1
        if resp.error is None and key is not None and self.cache is not None:
            self.cache.put(key, backend=self.backend.name, model=self.backend.model, kind=req.kind,
                           prompt_version=req.prompt_version, text=resp.text, usage=resp.usage)
        return resp

    def _prepare(self, req: VLMRequest) -> list[dict[str, Any]]:
        """The messages as sent: images encoded under the policy, the image count and the request size
        checked (raises ``ImageLimitError`` / ``RequestTooLargeError``: every such request would fail)."""
        n_images = count_images(req.messages)
        if self.max_images_per_request is not None and n_images > self.max_images_per_request:
            where = f"the VLM endpoint (vlm.max_images_per_request = {self.max_images_per_request})"
            raise ImageLimitError(n_images, self.max_images_per_request, where)
        policy = self.image_policy
        messages = list(req.messages) if policy is None else encode_images(req.messages, policy)
        if self.max_request_bytes is None or request_chars(messages) <= self.max_request_bytes:
            return messages
        base = policy or ImagePolicy(max_side=None)
        for side in _SHRINK_SIDES:
            if base.max_side is not None and side >= base.max_side:
                continue
            smaller = ImagePolicy(max_side=side, fmt="jpeg" if base.fmt in ("auto", "png") else base.fmt,
                                  quality=min(base.quality, 85))
            messages = encode_images(req.messages, smaller)
            size = request_chars(messages)
            if size <= self.max_request_bytes:
                log.warning("a %s request was over max_request_bytes (%d); sent with images shrunk to "
                            "%d px JPEG (%d bytes)", req.kind, self.max_request_bytes, side, size)
                return messages
        raise RequestTooLargeError(
            f"a {req.kind} request with {n_images} image(s) is {request_chars(messages)} bytes even with "
            f"images shrunk to {_SHRINK_SIDES[-1]} px, over vlm.max_request_bytes = {self.max_request_bytes}; "
            "raise max_request_bytes if the endpoint accepts larger requests")

    def _params(self, req: VLMRequest) -> ChatParams:
        budget = max(self.budgets.get(req.kind, req.max_tokens), self._learnt_budget.get(req.kind, 0))
        temperature = req.temperature if self.temperature is _FROM_REQUEST else self.temperature
        schema = req.schema if self.structured_output else None
        return ChatParams(max_tokens=min(budget, self.max_tokens_cap), temperature=temperature, seed=req.seed,
                          json_mode=self.json_mode, schema=schema, schema_name=req.kind,
                          reasoning_effort=self.reasoning_effort)

    async def _complete(self, messages: list[dict[str, Any]], params: ChatParams) -> Completion:
        complete = getattr(self.backend, "complete", None)
        if complete is not None:
            return await complete(messages, params)
        text, usage = await self.backend.chat(messages, temperature=params.temperature if params.temperature
                                              is not None else 0.0, max_tokens=params.max_tokens,
                                              seed=params.seed, json_mode=params.json_mode)
        return Completion(text=text, usage=dict(usage or {}))

    def _count_call(self, c: Completion, answer: str, messages: list[dict[str, Any]],
                    usage: dict[str, int], seconds: float) -> None:
        self._counts["calls"] += 1
        self._latencies.append(seconds)
        size = request_chars(messages)
        self._counts["request_bytes"] += size
        self._counts["request_bytes_max"] = max(self._counts["request_bytes_max"], size)
        self._counts["images_sent"] += count_images(messages)
        u = dict(c.usage)
        if "reasoning_tokens" not in u:  # not reported: estimated from the reasoning text (chars / 4)
            hidden = len(c.reasoning or "") + max(0, len(c.text) - len(answer))
            u["reasoning_tokens"] = hidden // 4
        for k in ("prompt_tokens", "completion_tokens", "reasoning_tokens"):
            usage[k] = usage.get(k, 0) + int(u.get(k, 0) or 0)
            self._counts[k] += int(u.get(k, 0) or 0)

    async def _call_with_reasks(self, req: VLMRequest) -> VLMResponse:
        messages = self._prepare(req)
        params = self._params(req)
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        t_start = time.perf_counter()
        text = ""
        problem = "no answer"
        for attempt in range(1, self.max_reasks + 2):
            while True:  # budget raises after a truncated answer are not re-asks
                t0 = time.perf_counter()
                try:
                    c = await self._complete(messages, params)
                except VLMTransportError as e:
                    self._counts["failures"] += 1
                    return VLMResponse(parsed=None, text=text, usage=usage,
                                       latency_s=time.perf_counter() - t_start,
                                       error=f"{TRANSPORT_PREFIX} {e}", attempts=attempt)
                text = strip_reasoning(c.text)  # the answer only: reasoning is never parsed or stored
                self._count_call(c, text, messages, usage, time.perf_counter() - t0)
                parsed, problem = check_answer(text, req.required_keys, req.validator)
                # A cut-off answer is never taken, even when it parses: without the closing tag, the
                # reasoning of a Qwen3 thinking template (opening tag in the prompt) looks like text,
                # and a draft answer in it would pass for the answer.
                if problem is None and c.finish_reason != "length":
                    return VLMResponse(parsed=parsed, text=text, usage=usage,
                                       latency_s=time.perf_counter() - t_start, attempts=attempt)
                if c.finish_reason != "length":
                    break
                if params.max_tokens >= self.max_tokens_cap:
                    problem = (f"the answer was cut off at the output limit ({params.max_tokens} tokens) before "
                               "the JSON was complete; answer with the JSON object directly")
                    break
                raised = min(self.max_tokens_cap, params.max_tokens * 2)
                if raised > self._learnt_budget.get(req.kind, 0):
                    log.info("%s answers cut off at %d output tokens (reasoning); raising the budget to %d",
                             req.kind, params.max_tokens, raised)
                    self._learnt_budget[req.kind] = raised
                self._counts["length_retries"] += 1
                params.max_tokens = raised
            self._counts["invalid_answers"] += 1
            if attempt <= self.max_reasks:
                self._counts["reasks"] += 1
                messages = messages + [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": REASK_TEMPLATE.format(problem=problem)},
                ]
        self._counts["failures"] += 1
        return VLMResponse(parsed=None, text=text, usage=usage, latency_s=time.perf_counter() - t_start,
                           error=f"invalid answer after {self.max_reasks} re-ask(s): {problem}",
                           attempts=self.max_reasks + 1)
