"""Reference server of the ``http`` reward component's protocol (docs/rewards.md).

A scalar "reward model" over JSON-over-HTTP that scores images with the scene world's detector (the
share of the prompt's GenEval-format clauses it confirms) and returns the lowest detection score as
the confidence. It shows the whole protocol a user's HPSv3 / PickScore / UnifiedReward server has to
speak; swap ``score_fn`` for the model.

    POST /score   {"prompts": [...], "images": [<base64 PNG>, ...], "sources": [...]?}
    200           {"scores": [...], "confidences": [...]}
    400           {"error": "...", "field": "<the field at fault>"}
    422           {"error": "...", "field": "prompts[i]"}   (a prompt this model cannot score)

Run:  python benchmarks/reward_http_reference.py --port 8100     (binds 127.0.0.1)
Then: reward: {components: [{kind: http, url: "http://127.0.0.1:8100/score"}]}
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import io
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError

ScoreFn = Callable[[str, Image.Image], "float | tuple[float, float]"]


def _bad(msg: str, field: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": msg, "field": field}, status_code=status)


def _image(b64: Any, field: str) -> Image.Image:
    if not isinstance(b64, str):
        raise ValueError(f"{field}: must be a base64 PNG/JPEG string")
    try:
        return Image.open(io.BytesIO(base64.b64decode(b64, validate=True))).convert("RGB")
    except (binascii.Error, UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{field}: not a base64 image ({type(e).__name__})") from None


def create_app(score_fn: ScoreFn | None = None) -> FastAPI:
    """The app; ``score_fn(prompt, image) -> score | (score, confidence)`` (default: the scene checker)."""
    if score_fn is None:
        from arr_core.sim.rewards import scene_verdict

        score_fn = scene_verdict
    app = FastAPI(title="reference scalar reward model")
    app.state.requests = 0

    @app.post("/score")
    async def score(request: Request) -> JSONResponse:
        app.state.requests += 1
        try:
            body = await request.json()
        except ValueError:
            return _bad("the body is not JSON", "body")
        if not isinstance(body, dict):
            return _bad("the body must be a JSON object", "body")
        prompts, images = body.get("prompts"), body.get("images")
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            return _bad("must be a list of strings", "prompts")
        if not isinstance(images, list) or len(images) != len(prompts):
            return _bad(f"must be a list of {len(prompts)} images (one per prompt)", "images")
        try:
            ims = [_image(b, f"images[{i}]") for i, b in enumerate(images)]
        except ValueError as e:
            return _bad(str(e), str(e).split(":")[0])
        scores, confs = [], []
        for i, (p, im) in enumerate(zip(prompts, ims, strict=True)):
            try:
                out = await asyncio.to_thread(score_fn, p, im)
            except ValueError as e:
                return _bad(str(e), f"prompts[{i}]", 422)
            s, c = out if isinstance(out, tuple) else (out, 1.0)
            scores.append(float(s))
            confs.append(float(c))
        return JSONResponse({"scores": scores, "confidences": confs})

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8100)
    args = ap.parse_args(argv)
    print(f"reference reward model at http://127.0.0.1:{args.port}/score")
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
