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
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from arr_core.secrets import redact_url
from arr_core.vlm.base import ChatParams, Completion, ImageLimitError, VLMTransportError
from arr_core.vlm.messages import count_images

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


def _parse_completion(raw: httpx.Response) -> Completion:
    """The answer, finish reason, reasoning and usage of a chat-completions response body;
    VLMTransportError if it is not one.

    ``content`` may be null (a thinking model that spent the budget before answering) or a list of
    text parts; ``reasoning_content`` (vLLM/SGLang with a reasoning parser) and ``reasoning`` (other
    servers) are kept apart and never become the answer. Reasoning tokens come from
    ``usage.completion_tokens_details.reasoning_tokens`` when the server reports them.
    """
    try:
        body = raw.json()
        choice = body["choices"][0]
        message = choice["message"]
        content = message.get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise VLMTransportError(f"the endpoint's answer is not a chat completion: {raw.text[:200]!r}") from None
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    u = body.get("usage") or {}
    details = u.get("completion_tokens_details") or {}
    usage = {"prompt_tokens": int(u.get("prompt_tokens") or 0),
             "completion_tokens": int(u.get("completion_tokens") or 0)}
    rt = details.get("reasoning_tokens") if isinstance(details, dict) else None
    if rt is None:
        rt = u.get("reasoning_tokens")
    if rt is not None:
        usage["reasoning_tokens"] = int(rt or 0)
    return Completion(text=str(content or ""), usage=usage, finish_reason=choice.get("finish_reason"),
                      reasoning=str(reasoning) if reasoning else None)


# --------------------------------------------------------------------------- endpoint adaptation

TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
DROPPABLE = ("temperature", "seed", "reasoning_effort")
_IMAGE_LIMIT = re.compile(r"at most (\d+) images?|(?:maximum|max|limit)[^.]{0,40}?(\d+) images?|"
                          r"images?[^.]{0,30}(?:limit|maximum|at most)[^.]{0,20}?(\d+)", re.IGNORECASE)
_CONTEXT = re.compile(r"maximum (?:context|model) length is (\d+)", re.IGNORECASE)
_PROMPT_TOKENS = re.compile(r"(\d+) (?:tokens )?in the messages|(\d+) input tokens|prompt (?:contains|has) "
                            r"(?:at least )?(\d+)", re.IGNORECASE)
_SCHEMA_WORDS = re.compile(r"response_format|json_schema|guided|structured output", re.IGNORECASE)
_TOO_LARGE = re.compile(r"payload size|request (?:entity |body )?(?:is )?too large|exceeds the limit",
                        re.IGNORECASE)


@dataclass
class EndpointState:
    """What the run has learnt about one endpoint + model (shared by every backend on it)."""

    token_param: str | None = None  # the name that works, once a 400 named the other one
    dropped: set[str] = field(default_factory=set)  # optional parameters the endpoint rejects
    schema_ok: bool | None = None  # False: structured output rejected; text parsing instead
    image_limit: int | None = None  # learnt from a 400 about the image count
    probed: bool = False  # a request with the current parameters has succeeded
    notes: list[str] = field(default_factory=list)  # adaptations made (each logged once)


_ENDPOINTS: dict[tuple[str, str], EndpointState] = {}
_ENDPOINTS_LOCK = threading.Lock()


def endpoint_state(base_url: str | None, model: str) -> EndpointState:
    """The shared adaptation state of ``base_url`` + ``model`` for this process (created on first use)."""
    key = (str(base_url or "https://api.openai.com/v1").rstrip("/"), model)
    with _ENDPOINTS_LOCK:
        return _ENDPOINTS.setdefault(key, EndpointState())


def forget_endpoints() -> None:
    """Forget every adaptation (tests start from a fresh run)."""
    with _ENDPOINTS_LOCK:
        _ENDPOINTS.clear()


def error_details(exc: Exception) -> tuple[str, str | None, str | None]:
    """(message, param, code) of an API error: the OpenAI form ``{"error": {message, type, param,
    code}}``, vLLM's top-level form and Gemini's list form ``[{"error": {…}}]``."""
    body = getattr(exc, "body", None)
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0].get("error", body[0])
    if isinstance(body, dict):
        err = body.get("error") if isinstance(body.get("error"), dict) else body
        msg = err.get("message") or getattr(exc, "message", "") or ""
        param, code = err.get("param"), err.get("code")
        return str(msg), (str(param) if param else None), (str(code) if code is not None else None)
    if isinstance(body, str) and body:
        return body, None, None
    return str(getattr(exc, "message", "") or exc), None, None


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

    Adaptation (``endpoint_state``, shared per endpoint + model for the process): ``token_param``
    ``auto`` sends ``max_tokens`` and switches to ``max_completion_tokens`` (or back) when a 400 names
    the one sent (OpenAI GPT-5 and o-series); with ``adapt_params`` a 400 naming ``temperature``,
    ``seed`` or ``reasoning_effort`` drops that parameter and one rejecting ``response_format``
    json_schema falls back to text parsing. Each adaptation is logged once and listed in
    ``adaptations``. Until one request has succeeded, requests to a new endpoint go one at a time, so
    a batch adapts on its first request instead of collecting one 400 per request in flight. A 400
    about the prompt not fitting the context shrinks the output budget to what fits; one about the
    image count raises ``ImageLimitError`` (and later requests with too many images fail before
    they are sent).
    """

    name = "openai"

    def __init__(self, base_url: str | None, api_key: str | None, model: str, *, timeout_s: float = 60.0,
                 max_retries: int = 5, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 total_retry_budget_s: float = 300.0, seed: int = 0, token_param: str = "auto",
                 adapt_params: bool = True) -> None:
        if not model:
            raise ValueError("model must name the served model (e.g. 'Qwen/Qwen3-VL-8B-Instruct')")
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0 or total_retry_budget_s < 0:
            raise ValueError("need timeout_s > 0, max_retries >= 0, backoff_s >= 0, total_retry_budget_s >= 0")
        if token_param not in ("auto", *TOKEN_PARAMS):
            raise ValueError(f"token_param must be auto, max_tokens or max_completion_tokens, got {token_param!r}")
        self.model = model
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.total_retry_budget_s = total_retry_budget_s
        self.token_param = token_param
        self.adapt_params = adapt_params
        self.state = endpoint_state(base_url, model)
        self._rng = random.Random(seed)
        # A local server (``arr vlm serve``, vLLM) needs no key, but the openai client insists on one.
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key,
                                          timeout=timeout_s, max_retries=0)
        self.retries = 0
        self.http_requests = 0
        self.rejected = 0  # 400s answered by adapting (not failures)
        self.errors_by_kind: dict[str, int] = {}
        self._probe: asyncio.Lock | None = None
        self._probe_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, timeout_s={self.timeout_s})"

    @property
    def where(self) -> str:
        return f"the VLM endpoint {redact_url(self.base_url) or 'the OpenAI API'} (model {self.model})"

    @property
    def adaptations(self) -> list[str]:
        return list(self.state.notes)

    def _delay(self, retry_no: int, exc: Exception) -> float:
        ra = _retry_after_s(exc)
        if ra is not None:
            return ra
        base = min(self.max_backoff_s, self.backoff_s * (2 ** retry_no))
        return base * (0.5 + 0.5 * self._rng.random())

    def _probe_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._probe is None or self._probe_loop is not loop:  # asyncio primitives are bound to one loop
            self._probe, self._probe_loop = asyncio.Lock(), loop
        return self._probe

    async def chat(self, messages: list[dict[str, Any]], *, temperature: float | None, max_tokens: int,
                   seed: int | None = None, json_mode: bool = False) -> tuple[str, dict[str, int]]:
        c = await self.complete(messages, ChatParams(max_tokens=max_tokens, temperature=temperature, seed=seed,
                                                     json_mode=json_mode))
        return c.text, c.usage

    async def complete(self, messages: list[dict[str, Any]], params: ChatParams) -> Completion:
        """One completion with the endpoint's adapted parameters. Raises ``VLMTransportError`` (with
        the server's message) when no answer can be had, ``ImageLimitError`` for too many images."""
        n_images = count_images(messages)
        limit = self.state.image_limit
        if limit is not None and n_images > limit:
            raise ImageLimitError(n_images, limit, self.where)
        if not self.state.probed:
            async with self._probe_lock():
                if not self.state.probed:
                    return await self._complete(messages, params, n_images)
        return await self._complete(messages, params, n_images)

    def _body(self, messages: list[dict[str, Any]], p: ChatParams, max_tokens: int) -> dict[str, Any]:
        st = self.state
        name = st.token_param or ("max_tokens" if self.token_param == "auto" else self.token_param)
        body: dict[str, Any] = {"model": self.model, "messages": messages, name: max_tokens}
        if p.temperature is not None and "temperature" not in st.dropped:
            body["temperature"] = p.temperature
        if p.seed is not None and "seed" not in st.dropped:
            body["seed"] = p.seed
        if p.reasoning_effort and "reasoning_effort" not in st.dropped:
            body["reasoning_effort"] = p.reasoning_effort
        if p.schema is not None and st.schema_ok is not False:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": p.schema_name, "schema": p.schema}}
        elif p.json_mode and "response_format" not in st.dropped:
            body["response_format"] = {"type": "json_object"}
        return body

    async def _complete(self, messages: list[dict[str, Any]], params: ChatParams, n_images: int) -> Completion:
        max_tokens = params.max_tokens
        for _ in range(8):  # each round fixes one rejected parameter; 8 is more than there are
            body = self._body(messages, params, max_tokens)
            try:
                raw = await self._post(body)
            except openai.APIStatusError as exc:
                new_budget = self._adapt(exc, body, n_images)
                self.rejected += 1
                if new_budget is not None:
                    max_tokens = new_budget
                continue
            self.state.probed = True
            return _parse_completion(raw)
        raise VLMTransportError(f"{self.where} kept rejecting the request after adapting its parameters "
                                f"({'; '.join(self.state.notes) or 'none'})")

    def _note(self, what: str) -> None:
        if what not in self.state.notes:
            self.state.notes.append(what)
            log.warning("%s: %s; adapted for the rest of the run", self.where, what)

    def _adapt(self, exc: openai.APIStatusError, body: dict[str, Any], n_images: int) -> int | None:
        """Learn from a rejected request: return a smaller output budget to retry with, or None after
        changing the endpoint state; raise when nothing can be adapted."""
        msg, param, _code = error_details(exc)
        status = exc.status_code
        fail = VLMTransportError(f"HTTP {status} from {self.where}: {msg[:500]} (not retryable)")
        if status not in (400, 413, 422):
            raise fail from None
        m = _IMAGE_LIMIT.search(msg)
        if m or "limit-mm-per-prompt" in msg or re.search(r"too many images", msg, re.IGNORECASE):
            found = next((int(g) for g in (m.groups() if m else ()) if g), None)
            limit = found if found is not None and found < n_images else max(0, n_images - 1)
            self.state.image_limit = limit
            raise ImageLimitError(n_images, limit, self.where, msg[:300]) from None
        if status == 413 or _TOO_LARGE.search(msg):
            raise VLMTransportError(f"HTTP {status} from {self.where}: the request is too large ({msg[:300]}); "
                                    "lower vlm.max_side or vlm.max_request_bytes") from None
        m = _CONTEXT.search(msg)
        if m:
            sent = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
            pm = _PROMPT_TOKENS.search(msg)
            prompt = next((int(g) for g in pm.groups() if g), None) if pm else None
            fits = int(m.group(1)) - prompt - 8 if prompt is not None else None
            if fits is not None and 64 <= fits < sent:
                log.info("%s: output budget %d does not fit the context; using %d", self.where, sent, fits)
                return fits
            raise VLMTransportError(f"HTTP {status} from {self.where}: the prompt does not fit the model's "
                                    f"context ({msg[:300]}); raise the server's --max-model-len or lower "
                                    "vlm.max_side") from None
        sent = [k for k in (*TOKEN_PARAMS, *DROPPABLE, "response_format") if k in body]
        name = param if param in sent else next(
            (k for k in sent if re.search(rf"(?<![a-z_]){k}(?![a-z_])", msg)), None)
        if name is None and "response_format" in body and _SCHEMA_WORDS.search(msg):
            name = "response_format"
        if name in TOKEN_PARAMS and self.token_param == "auto":
            other = TOKEN_PARAMS[1 - TOKEN_PARAMS.index(name)]
            if self.state.token_param == name:  # both names rejected: nothing left to try
                raise fail from None
            self.state.token_param = other
            self._note(f"'{name}' rejected; sending '{other}'")
            return None
        if name in DROPPABLE and self.adapt_params:
            self.state.dropped.add(name)
            self._note(f"'{name}' rejected ({msg[:120]}); leaving it out")
            return None
        if name == "response_format" and self.adapt_params:
            if body["response_format"].get("type") == "json_schema":
                self.state.schema_ok = False
                self._note("structured output (response_format json_schema) rejected; parsing the text answer")
            else:
                self.state.dropped.add("response_format")
                self._note("response_format json_object rejected; parsing the text answer")
            return None
        raise fail from None

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        """POST with retries for 429, 5xx, 408, timeouts and connection errors; other HTTP errors are
        raised as the openai exception (the caller adapts or fails), the rest as VLMTransportError."""
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
                return await self._client.post("/chat/completions", body=body, cast_to=httpx.Response)
            except openai.OpenAIError as exc:
                kind = _describe(exc)
                self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1
                if not _retryable(exc):
                    if isinstance(exc, openai.APIStatusError):
                        raise
                    raise VLMTransportError(f"{kind} from {self.where}: not retryable") from None
                delay = self._delay(retry_no, exc)
                spent = time.monotonic() - t0
                if retry_no >= self.max_retries or spent + delay > self.total_retry_budget_s:
                    msg = error_details(exc)[0] if isinstance(exc, openai.APIStatusError) else ""
                    raise VLMTransportError(
                        f"{kind} after {retry_no} retries ({spent:.1f}s) from {self.where}"
                        + (f": {msg[:300]}" if msg else "")) from None
                retry_no += 1
                self.retries += 1
                log.info("VLM %s; retry %d/%d in %.2fs", kind, retry_no, self.max_retries, delay)
                await asyncio.sleep(delay)

    async def aclose(self) -> None:
        await self._client.close()
