"""The judge as a reward service (``arr serve reward``): an HTTP app that scores groups of images
with a group rewarder — the rank judge, the per-criterion judge, the checklist judge or a hybrid —
for trainers of other frameworks. Protocol (docs/rewards.md):

    POST /v1/rewards
    {"prompts": ["<caption or instruction>", ...],            one per group
     "groups":  [[<image>, <image>, ...], ...],                G >= 2 images per group
     "sources": [<image>, ...]}                                editing only: one source per group
    <image>: "<base64 PNG/JPEG>" (or a data: URL) | {"data": "<base64>"} | {"path": "<file under the
    server's image root>"} (paths are refused unless the server has --image-root)

    200 {"results": [{"outcome": "win"|"tie"|"abstain",
                      "rewards": [<float>, ...] | null,       null when the group abstained
                      "ranks": [1 = best, ...] | null,
                      "scores": [<float>, ...] | null,        per-image pointwise values (composites,
                                                              hybrid sums) where the reward has them
                      "criteria": {"c1 …": [<int>, ...]},     per-criterion scores (per-criterion judge)
                      "components": {"<name>": {"values", "confidences", "error", "criteria"?}},
                      "error": "<why it abstained>"?}, ...],
         "reward": "<what scored>", "latency_s": <float>}

    POST /v1/scores  (per-criterion judge only: pointwise, any number of images)
    {"prompts": ["…", ...], "images": [<image>, ...], "sources": [...]?}   one prompt per image
    200 {"results": [{"composite": <float> | null, "criteria": {"c1 …": <int>}, "error": …}, ...]}

    GET /health → {"status": "ok", ...};  POST /compute → Flow-Factory's remote reward protocol
    ({"prompt": [...], "image": [<base64>...], "condition_images": [[...]]?} → {"rewards": [...]}),
    where consecutive equal prompts form a group.

Faults: a malformed request is a 400 naming the field (a body over ``max_request_bytes`` is a 413,
refused before it is read in full); an endpoint failure — transport failures past
``max_failure_rate`` of the request's VLM calls, or a component whose endpoint failed — is a 503
naming the endpoint (never a score); more than ``max_queue`` requests waiting is a 503 with
``Retry-After``, answered before the body is read. At most ``max_concurrency`` requests are scored
at once. Model-output failures are abstentions (``outcome: abstain``, ``rewards: null``), as in
training.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

from arr_core.errors import EndpointError
from arr_core.failures import FailureCounter, is_transport_error

MAX_IMAGE_BYTES = 32 * 1024 * 1024


class RequestError(ValueError):
    """A malformed request: ``field`` names what is wrong (answered with a 400)."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


def decode_image(item: Any, field: str, image_root: Path | None) -> Image.Image:
    """One request image: base64 (or a data: URL), ``{"data": …}`` or ``{"path": …}`` under
    ``image_root`` (resolved, links followed; anything outside is refused)."""
    from arr_core.data.images import decode_rgb

    if isinstance(item, dict) and set(item) == {"path"}:
        if image_root is None:
            raise RequestError(field, "image paths are refused: this server has no --image-root; send base64")
        if not isinstance(item["path"], str) or not item["path"]:
            raise RequestError(field, "path must be a non-empty string")
        root = image_root.resolve()
        try:  # a NUL byte, a name too long, a loop of links: refused like a missing file, never a 500
            p = (root / item["path"]).resolve()
            if p != root and root not in p.parents:
                raise RequestError(field, f"path {item['path'][:200]!r} is outside the image root")
            if not p.is_file():
                raise RequestError(field, f"no file {item['path'][:200]!r} under the image root")
            if p.stat().st_size > MAX_IMAGE_BYTES:
                raise RequestError(field, f"the file is over {MAX_IMAGE_BYTES} bytes")
            data = p.read_bytes()
        except (ValueError, OSError) as e:
            if isinstance(e, RequestError):
                raise
            raise RequestError(field, f"path {item['path'][:200]!r} cannot be read ({type(e).__name__})") from None
    else:
        if isinstance(item, dict) and set(item) == {"data"}:
            item = item["data"]
        if not isinstance(item, str):
            raise RequestError(field, 'an image is a base64 string, {"data": base64} or {"path": …}')
        if item.startswith("data:"):
            item = item.partition(",")[2]
        if len(item) > MAX_IMAGE_BYTES * 4 // 3 + 4:
            raise RequestError(field, f"the image is over {MAX_IMAGE_BYTES} bytes")
        try:
            data = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(field, "not valid base64") from None
    try:
        return decode_rgb(data)
    except Exception as e:  # noqa: BLE001 — PIL raises many types for a file that is not an image
        raise RequestError(field, f"not a decodable image ({type(e).__name__})") from None


def _prompts(body: dict[str, Any], key: str) -> list[str]:
    prompts = body.get(key)
    if not isinstance(prompts, list) or not prompts:
        raise RequestError(key, "must be a non-empty list of strings")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise RequestError(f"{key}[{i}]", "must be a non-empty string")
    return prompts


def _per_image(body: Any, prompts_key: str, images_key: str) -> tuple[dict[str, Any], list[str], list[Any]]:
    """(body, prompts, raw images) of a body with one prompt per image."""
    if not isinstance(body, dict):
        raise RequestError("body", "must be a JSON object")
    prompts = _prompts(body, prompts_key)
    images = body.get(images_key)
    if not isinstance(images, list) or len(images) != len(prompts):
        raise RequestError(images_key, f"must be a list of {len(prompts)} images (one per prompt)")
    return body, prompts, images


def _sources(body: dict[str, Any], n: int, task: str, image_root: Path | None) -> list[Image.Image] | None:
    sources = body.get("sources")
    if task == "t2i":
        if sources is not None:
            raise RequestError("sources", "this server judges text-to-image; it takes no source images")
        return None
    if not isinstance(sources, list) or len(sources) != n:
        raise RequestError("sources", f"editing needs one source image per prompt ({n})")
    return [decode_image(s, f"sources[{i}]", image_root) for i, s in enumerate(sources)]


def parse_rewards_request(body: Any, task: str, image_root: Path | None, max_images: int
                          ) -> tuple[list[str], list[list[Image.Image]], list[Image.Image] | None]:
    """(prompts, groups, sources) of a ``/v1/rewards`` body; RequestError naming the field otherwise."""
    if not isinstance(body, dict):
        raise RequestError("body", "must be a JSON object")
    prompts = _prompts(body, "prompts")
    groups = body.get("groups")
    if not isinstance(groups, list) or len(groups) != len(prompts):
        raise RequestError("groups", f"must be a list of {len(prompts)} groups (one per prompt)")
    total = 0
    for k, g in enumerate(groups):
        if not isinstance(g, list) or len(g) < 2:
            raise RequestError(f"groups[{k}]", "must be a list of at least 2 images (the judge compares a group)")
        total += len(g)
    if total > max_images:
        raise RequestError("groups", f"{total} images in one request; this server takes at most {max_images}")
    ims = [[decode_image(im, f"groups[{k}][{i}]", image_root) for i, im in enumerate(g)] for k, g in enumerate(groups)]
    return prompts, ims, _sources(body, len(prompts), task, image_root)


class _RequestClient:
    """The VLM client as one request sees it: every response is kept, so the request's transport
    failures are counted apart from other requests'."""

    def __init__(self, client: Any) -> None:
        self._client, self.responses = client, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def ask(self, req: Any) -> Any:
        resp = await self._client.ask(req)
        self.responses.append(resp)
        return resp

    async def ask_many(self, reqs: list[Any], progress: Any = None) -> list[Any]:
        resps = await self._client.ask_many(reqs, progress)
        self.responses.extend(resps)
        return resps


def group_result(o: Any) -> dict[str, Any]:
    """The public JSON of one GroupOutcome."""
    d = o.details or {}
    out: dict[str, Any] = {"outcome": o.outcome, "rewards": None if o.outcome == "abstain" else list(o.rewards),
                           "ranks": o.ranks, "scores": None}
    if d.get("composites") is not None and None not in d["composites"]:
        out["scores"] = list(d["composites"])
    elif d.get("totals") is not None and o.outcome != "abstain":
        out["scores"] = list(d["totals"])
    if d.get("criteria") and d.get("scores"):
        out["criteria"] = {lab: [r[i] if r is not None else None for r in d["scores"]]
                           for i, lab in enumerate(d["criteria"])}
    if d.get("components"):
        out["components"] = d["components"]
    err = d.get("error") or next((e for e in (d.get("errors") or []) if e), None)
    if o.outcome == "abstain" and err:
        out["error"] = str(err)
    return out


@dataclass
class ServiceSettings:
    task: str = "t2i"
    image_root: Path | None = None
    max_concurrency: int = 4
    max_queue: int = 16
    max_images: int = 64
    max_failure_rate: float = 0.2
    max_request_bytes: int = 128 * 1024 * 1024


def create_app(make_rewarder: Callable[[Any], Any], client: Any, settings: ServiceSettings, *,
               description: str = "", endpoint: str = "?", pointwise: Callable[[Any], Any] | None = None) -> Any:
    """The FastAPI app. ``make_rewarder(client)`` builds the request's rewarder around the request's
    view of ``client``; ``pointwise(client)``, when given, builds a ``ScoresRewarder`` for
    ``/v1/scores``; ``endpoint`` names the VLM endpoint in 503s."""
    app = FastAPI(title="arr reward service")
    app.state.counts = {"requests": 0, "scored": 0, "rejected": 0, "failed": 0, "busy": 0, "in_flight_max": 0}
    sem = asyncio.Semaphore(settings.max_concurrency)
    waiting = {"n": 0, "in_flight": 0}

    def bad(e: RequestError) -> JSONResponse:
        app.state.counts["rejected"] += 1
        return JSONResponse({"error": e.message, "field": e.field}, status_code=e.status)

    def failed(msg: str) -> JSONResponse:
        app.state.counts["failed"] += 1
        return JSONResponse({"error": msg}, status_code=503)

    async def body_of(request: Request) -> Any:
        """The JSON body, read up to ``max_request_bytes`` (413 beyond, before reading it all)."""
        cap = settings.max_request_bytes
        too_big = RequestError("body", f"the request is over max_request_bytes ({cap} bytes); send fewer or "
                               "smaller images per request", status=413)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise too_big
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > cap:
                raise too_big
        try:
            return await asyncio.to_thread(json.loads, bytes(buf))  # off the event loop: /health still answers
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
            raise RequestError("body", "is not JSON") from None

    async def guarded(request: Request, parse: Callable[[Any], Any], work: Callable[[Any], Awaitable[JSONResponse]]
                      ) -> JSONResponse:
        """Admit the request (a full queue: 503 busy, before its body is read, so memory stays bounded by
        (max_concurrency + max_queue) × max_request_bytes), read its body and ``parse(body)`` it in a
        thread (decoding images; RequestError: 400 or 413) and run ``work`` on the result under the
        concurrency cap; endpoint faults → 503, never a score."""
        if waiting["n"] >= settings.max_queue + settings.max_concurrency:
            app.state.counts["busy"] += 1
            return JSONResponse({"error": f"busy: {waiting['n']} requests in progress or waiting "
                                 f"(max_concurrency {settings.max_concurrency}, max_queue {settings.max_queue})"},
                                status_code=503, headers={"Retry-After": "1"})
        waiting["n"] += 1
        try:
            try:
                parsed = await asyncio.to_thread(parse, await body_of(request))
            except RequestError as e:
                return bad(e)
            async with sem:
                waiting["in_flight"] += 1
                app.state.counts["in_flight_max"] = max(app.state.counts["in_flight_max"], waiting["in_flight"])
                try:
                    return await work(parsed)
                finally:
                    waiting["in_flight"] -= 1
        except EndpointError as e:
            return failed(str(e))
        finally:
            waiting["n"] -= 1

    def check_transport(rc: _RequestClient) -> None:
        counter = FailureCounter("reward service", endpoint, max_failure_rate=settings.max_failure_rate,
                                 early_abort=0)
        for r in rc.responses:
            if is_transport_error(r.error):
                counter.fail(r.error)
            else:
                counter.ok()
        counter.check()  # EndpointError past the policy: nothing was measured

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "reward": description, "task": settings.task, **app.state.counts}

    async def score_groups(prompts: list[str], groups: list[list[Image.Image]],
                           sources: list[Image.Image] | None) -> tuple[list[Any], float]:
        rc = _RequestClient(client)
        t0 = time.perf_counter()
        outs = await make_rewarder(rc).score(prompts, groups, sources)
        check_transport(rc)
        app.state.counts["scored"] += 1
        return outs, time.perf_counter() - t0

    @app.post("/v1/rewards")
    async def rewards(request: Request) -> JSONResponse:
        app.state.counts["requests"] += 1

        def parse(body: Any) -> Any:
            return parse_rewards_request(body, settings.task, settings.image_root, settings.max_images)

        async def work(parsed: Any) -> JSONResponse:
            outs, dt = await score_groups(*parsed)
            return JSONResponse({"results": [group_result(o) for o in outs], "reward": description,
                                 "latency_s": dt})

        return await guarded(request, parse, work)

    @app.post("/compute")
    async def compute(request: Request) -> JSONResponse:
        """Flow-Factory's remote reward protocol: consecutive equal prompts form one group."""
        app.state.counts["requests"] += 1

        def parse(body: Any) -> Any:
            body, prompts, images = _per_image(body, "prompt", "image")
            cond = body.get("condition_images")
            starts = [i for i in range(len(prompts)) if i == 0 or prompts[i] != prompts[i - 1]]
            spans = list(zip(starts, starts[1:] + [len(prompts)], strict=True))
            groups_raw = [images[a:b] for a, b in spans]
            sources_raw = None
            if settings.task == "edit":
                if not isinstance(cond, list) or len(cond) != len(prompts) or not all(
                        isinstance(c, list) and c for c in cond):
                    raise RequestError("condition_images", "editing needs one list of condition images per sample")
                sources_raw = [cond[a][0] for a, _ in spans]
            return parse_rewards_request({"prompts": [prompts[a] for a, _ in spans], "groups": groups_raw,
                                          **({"sources": sources_raw} if sources_raw is not None else {})},
                                         settings.task, settings.image_root, settings.max_images)

        async def work(parsed: Any) -> JSONResponse:
            outs, _ = await score_groups(*parsed)
            bad_group = next((o for o in outs if o.outcome == "abstain"), None)
            if bad_group is not None:  # the protocol has no way to say "no score": refuse, never invent one
                return JSONResponse({"error": "a group got no usable verdict: " +
                                     str(group_result(bad_group).get("error", "the judge abstained"))},
                                    status_code=502)
            return JSONResponse({"rewards": [r for o in outs for r in o.rewards]})

        return await guarded(request, parse, work)

    @app.post("/v1/scores")
    async def scores(request: Request) -> JSONResponse:
        app.state.counts["requests"] += 1
        if pointwise is None:
            return bad(RequestError("path", "/v1/scores needs reward mode 'scores' (per-criterion, pointwise); "
                                    "this server ranks groups: use /v1/rewards"))

        def parse(body: Any) -> Any:
            body, prompts, images = _per_image(body, "prompts", "images")
            if len(images) > settings.max_images:
                raise RequestError("images", f"{len(images)} images; this server takes at most {settings.max_images}")
            ims = [decode_image(im, f"images[{i}]", settings.image_root) for i, im in enumerate(images)]
            return prompts, ims, _sources(body, len(prompts), settings.task, settings.image_root)

        async def work(parsed: Any) -> JSONResponse:
            from arr_core.judge.scores import criterion_label, score_images

            prompts, ims, sources = parsed
            rc = _RequestClient(client)
            judge = pointwise(rc)
            items = [(p, im, sources[i] if sources is not None else None) for i, (p, im) in enumerate(zip(
                prompts, ims, strict=True))]
            res = await score_images(rc, judge.criteria, settings.task, items)
            check_transport(rc)
            app.state.counts["scored"] += 1
            labels = [criterion_label(i, c.text) for i, c in enumerate(judge.criteria)]
            return JSONResponse({"results": [
                {"composite": r.composite, "error": r.error,
                 "criteria": dict(zip(labels, r.scores, strict=True)) if r.scores is not None else None}
                for r in res], "reward": description})

        return await guarded(request, parse, work)

    return app


def image_root_from(path: str | os.PathLike[str] | None) -> Path | None:
    """The image root as a resolved existing folder, or None."""
    if path is None:
        return None
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise ValueError(f"image root {str(path)!r} is not a folder")
    return p
