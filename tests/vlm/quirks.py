"""A quirk test server: an OpenAI-compatible endpoint on 127.0.0.1 that behaves like one real endpoint.

Each quirk reproduces documented behaviour (``../shared/docs/NOTES.md``, "Real VLM endpoints") and
gets its answers from the offline scene VLM, so a client that copes with the quirk reaches exactly
the answers it gets from the scene VLM directly:

- ``instruct``: vLLM serving an Instruct model; accepts everything (structured output included).
- ``gpt5``: OpenAI GPT-5 / o-series. 400 ``unsupported_parameter`` on ``max_tokens`` (wants
  ``max_completion_tokens``), 400 ``unsupported_value`` on a temperature other than 1, both in the
  OpenAI error form ``{"error": {"message", "type", "param", "code"}}``; reasoning tokens count
  against the budget, so a small budget returns empty content with ``finish_reason: length``;
  reasoning tokens reported in ``usage.completion_tokens_details``.
- ``thinking_parser``: vLLM Qwen3-VL-Thinking started with a reasoning parser: the reasoning (with a
  draft answer in it that is WRONG) in ``reasoning_content``, the answer in ``content``; a budget
  too small for the reasoning returns ``content: null`` and ``finish_reason: length``.
- ``thinking_inline``: the same model without a reasoning parser: ``<think>draft…</think>answer``
  in ``content``; cut off inside the reasoning when the budget is small.
- ``thinking_qwen3``: as ``thinking_inline`` but without the opening tag (the Qwen3 thinking chat
  template puts ``<think>`` in the prompt): ``draft…</think>answer``; when cut off, the content is
  bare reasoning whose draft JSON looks like an answer.
- ``gemini``: Gemini's OpenAI-compatible endpoint: thinking spends part of ``max_tokens`` (no
  content, ``finish_reason: length`` when it does not fit), answers in ```json fences, requests over
  20 MB rejected with a 400 in Gemini's list-wrapped error form.
- ``image_limit``: vLLM started with ``--limit-mm-per-prompt '{"image": 2}'``: a request with more
  images gets its 400 "At most 2 image(s) may be provided in one prompt."
- ``no_json_schema``: a server without guided decoding: ``response_format`` json_schema is a 400
  (the message names it, ``param`` is null).
- ``small_context``: ``thinking_parser`` with a short ``--max-model-len``: prompt + budget over it is
  a 400 naming the context length and the prompt's tokens (vLLM's wording).

Use: ``with QuirkVLM("gpt5") as srv: srv.base_url``; ``srv.log`` lists what each request carried
and how it was answered.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from arr_core.sim.scene_vlm import VAGUE, SceneVLM
from arr_core.vlm.server import ServedVLM

QUIRKS = ("instruct", "gpt5", "thinking_parser", "thinking_inline", "thinking_qwen3", "gemini", "image_limit",
          "no_json_schema", "small_context")
THINKING = ("gpt5", "thinking_parser", "thinking_inline", "thinking_qwen3", "gemini", "small_context")
GEMINI_MAX_BYTES = 20 * 2**20


@dataclass
class Seen:
    """One request as the server saw it."""

    body_bytes: int
    token_param: str | None
    budget: int | None
    temperature: Any
    response_format: str | None
    n_images: int
    outcome: str  # ok | length | 400:<what>


@dataclass
class QuirkLog:
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: list[Seen] = field(default_factory=list)

    def outcomes(self) -> dict[str, int]:
        with self.lock:
            out: dict[str, int] = {}
            for s in self.seen:
                out[s.outcome] = out.get(s.outcome, 0) + 1
            return out


def _openai_error(message: str, *, param: str | None, code: str | int | None,
                  type_: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=400)


def _draft(answer: dict[str, Any]) -> dict[str, Any]:
    """A plausible but WRONG answer of the same kind, as a model might draft while reasoning."""
    if "rank" in answer:
        return {"rank": answer["rank"][::-1], "reason": "first impression"}
    if "rubrics" in answer:
        return {"rubrics": [VAGUE[i % len(VAGUE)] for i in range(len(answer["rubrics"]))], "reason": "draft"}
    if "categories" in answer:
        return {"categories": [{"theme": "Draft theme", "tips": ["A draft tip."]}], "reason": "draft"}
    if "verdicts" in answer:
        flip = {"yes": "no", "no": "yes", "n/a": "yes"}
        return {"verdicts": [flip[v] for v in answer["verdicts"]], "reason": "draft"}
    if "answers" in answer:
        return {"answers": [{**a, "answer": "no" if a["answer"] == "yes" else "yes"} for a in answer["answers"]]}
    return {"draft": True}


def _reasoning(answer: dict[str, Any], n_tokens: int) -> str:
    """About ``n_tokens`` tokens (4 characters each) of reasoning with a wrong draft answer early on."""
    head = ("Let me look at the images one by one. A first guess would be "
            + json.dumps(_draft(answer)) + " but I should check every requirement again. ")
    filler = "Checking the objects, their counts, colours and positions against the text. "
    text = head
    while len(text) < 4 * n_tokens:
        text += filler
    return text[:4 * n_tokens]


def _count_images(messages: list[dict[str, Any]]) -> int:
    return sum(1 for m in messages if isinstance(m.get("content"), list)
               for p in m["content"] if isinstance(p, dict) and p.get("type") == "image_url")


def create_quirk_app(quirk: str, backend: Any = None, *, reasoning_tokens: int = 600, image_limit: int = 2,
                     max_model_len: int = 2048) -> FastAPI:
    """The FastAPI app of one quirk; answers come from ``backend`` (default: ``SceneVLM()``)."""
    if quirk not in QUIRKS:
        raise ValueError(f"quirk must be one of {QUIRKS}, got {quirk!r}")
    backend = backend or SceneVLM()
    qlog = QuirkLog()
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.stats = qlog
    app.state.stop = threading.Event()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": backend.model, "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        raw = await request.body()
        body = json.loads(raw)
        messages = body.get("messages") or []
        tp = next((k for k in ("max_completion_tokens", "max_tokens") if k in body), None)
        budget = int(body[tp]) if tp else None
        rf = (body.get("response_format") or {}).get("type")
        n_images = _count_images(messages)

        def seen(outcome: str) -> None:
            with qlog.lock:
                qlog.seen.append(Seen(len(raw), tp, budget, body.get("temperature"), rf, n_images, outcome))

        # ---- rejections, in the order the real servers check
        if quirk == "gemini" and len(raw) > GEMINI_MAX_BYTES:
            seen("400:too_large")
            return JSONResponse([{"error": {"code": 400, "message": "Request payload size exceeds the limit: "
                                            f"{GEMINI_MAX_BYTES} bytes.", "status": "INVALID_ARGUMENT"}}],
                                status_code=400)
        if quirk == "gpt5" and "max_tokens" in body:
            seen("400:max_tokens")
            return _openai_error("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                                 "'max_completion_tokens' instead.", param="max_tokens", code="unsupported_parameter")
        if quirk == "gpt5" and body.get("temperature") not in (None, 1, 1.0):
            seen("400:temperature")
            return _openai_error(f"Unsupported value: 'temperature' does not support {body['temperature']} with "
                                 "this model. Only the default (1) value is supported.", param="temperature",
                                 code="unsupported_value")
        if quirk == "image_limit" and n_images > image_limit:
            seen("400:image_limit")
            return _openai_error(f"At most {image_limit} image(s) may be provided in one prompt.", param=None,
                                 code=400, type_="BadRequestError")
        if quirk == "no_json_schema" and rf == "json_schema":
            seen("400:json_schema")
            return _openai_error("Unsupported response_format type 'json_schema': this server has no guided "
                                 "decoding backend.", param=None, code=400, type_="BadRequestError")

        text, usage = await backend.chat(messages, temperature=float(body.get("temperature") or 0.0),
                                         max_tokens=budget or 1024, seed=body.get("seed"))
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        if quirk == "small_context" and budget is not None and prompt_tokens + budget > max_model_len:
            seen("400:context")
            return _openai_error(f"This model's maximum context length is {max_model_len} tokens. However, you "
                                 f"requested {prompt_tokens + budget} tokens ({prompt_tokens} in the messages, "
                                 f"{budget} in the completion). Please reduce the length of the messages or "
                                 "completion.", param=None, code=400, type_="BadRequestError")
        answer_tokens = max(1, len(text) // 4)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = "stop"
        rt = 0
        if quirk in THINKING:
            answer = json.loads(text)
            thinking = _reasoning(answer, reasoning_tokens)
            cut = budget is not None and budget < reasoning_tokens + answer_tokens
            rt = min(budget, reasoning_tokens) if budget is not None else reasoning_tokens
            partial = thinking[:4 * rt]
            if cut:
                finish = "length"
                answer_tokens = max(0, (budget or 0) - rt)
            if quirk == "gpt5":
                message = {"role": "assistant", "content": "" if cut else text}
            elif quirk in ("thinking_parser", "small_context"):
                message = {"role": "assistant", "content": None if cut else text, "reasoning_content": partial}
            elif quirk == "thinking_inline":
                message = {"role": "assistant",
                           "content": "<think>\n" + partial + ("" if cut else "\n</think>\n\n" + text)}
            elif quirk == "thinking_qwen3":
                message = {"role": "assistant", "content": partial + ("" if cut else "\n</think>\n\n" + text)}
            else:  # gemini: no content at all when thinking used the budget
                message = {"role": "assistant"} if cut else {"role": "assistant",
                                                             "content": "```json\n" + text + "\n```"}
        seen("length" if finish == "length" else "ok")
        ct = answer_tokens + rt
        u: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": ct,
                             "total_tokens": prompt_tokens + ct}
        if quirk in ("gpt5", "gemini"):
            u["completion_tokens_details"] = {"reasoning_tokens": rt}
        return JSONResponse({"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion",
                             "created": int(time.time()), "model": body.get("model") or backend.model,
                             "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                             "usage": u})

    return app


class QuirkVLM(ServedVLM):
    """``create_quirk_app`` served on a free 127.0.0.1 port in a background thread (a context manager)."""

    def __init__(self, quirk: str, backend: Any = None, **kw: Any) -> None:
        backend = backend or SceneVLM()
        super().__init__(backend)
        self.quirk = quirk
        self.app = create_quirk_app(quirk, backend, **kw)

    @property
    def log(self) -> QuirkLog:
        return self.app.state.stats
