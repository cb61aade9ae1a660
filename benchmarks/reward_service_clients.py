"""How three RL frameworks would call ``arr serve reward`` (docs/rewards.md). Each function has the
signature the framework expects of a reward, as read in its public code; the tests
(tests/rewards/test_reward_service.py) call them against the real service with the inputs the
framework passes, so they are tested against OUR protocol, not against the frameworks themselves.

- Flow-Factory (X-GenGroup/Flow-Factory, src/flow_factory/rewards/my_reward_remote.py): its
  ``RemoteGroupwiseRewardModel`` POSTs ``{"prompt": [...], "image": [<base64 PNG>...], "video",
  "condition_images", "condition_videos"}`` to ``<server_url>/compute`` and reads ``"rewards"``, after
  a ``GET <server_url>/health``. The service speaks that protocol directly, so the only client code is
  its config: ``reward_model: flow_factory.rewards.my_reward_remote.RemoteGroupwiseRewardModel``,
  ``server_url: http://127.0.0.1:8200``. ``flow_factory_payload`` builds the same body, for tests.
- flow_grpo (yifan123/flow_grpo, flow_grpo/rewards.py): a reward is a factory ``fn(device)`` returning
  ``_fn(images, prompts, metadata) -> (scores, info)``, with ``images`` an NCHW float tensor in [0, 1]
  or an NHWC uint8 array, registered by name in ``multi_score``. Its own remote rewards send pickled
  JPEG bytes; this one sends JSON to ``/v1/rewards`` (the service never unpickles).
- VeRL-Omni (verl-project/verl-omni, docs/guides/custom_vllm_reward_quick_ref.md): a custom reward is
  ``async def compute_score(data_source, solution_image, ground_truth, extra_info, **kwargs) -> {"score":
  float, ...}`` per sample (``reward.custom_reward_function.path/name``), ``solution_image`` a (C, H, W)
  tensor in [0, 1]. Per sample means pointwise, so it calls ``/v1/scores`` (the per-criterion judge).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

ARR_REWARD_URL = "http://127.0.0.1:8200"


def _png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _to_pil(array: Any) -> Image.Image:
    """(C, H, W) float in [0, 1] (a tensor or an array) or (H, W, C) uint8 → PIL."""
    a = array.detach().cpu().numpy() if hasattr(array, "detach") else np.asarray(array)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    return Image.fromarray(a)


# ---- Flow-Factory ----------------------------------------------------------------------------------

def flow_factory_payload(prompts: list[str], images: list[Image.Image]) -> dict[str, Any]:
    """The body Flow-Factory's remote reward client sends to ``/compute`` (its ``_build_payload``)."""
    return {"prompt": prompts, "image": [_png_b64(im) for im in images], "video": None,
            "condition_images": None, "condition_videos": None}


# ---- flow_grpo --------------------------------------------------------------------------------------

def arr_rubric_score(device: Any = None, url: str = ARR_REWARD_URL, timeout: float = 300.0):
    """flow_grpo reward factory: register as ``score_functions["arr_rubric"] = arr_rubric_score``.

    Consecutive images with the same prompt form one group (flow_grpo's sampler repeats each prompt
    ``num_image_per_prompt`` times); a group of one image cannot be ranked and the service answers
    400. Abstained groups come back as None scores (the service never invents a reward): map them to
    0 or drop the samples, as the trainer prefers."""
    import httpx  # flow_grpo's own remote rewards use requests; either client works

    def _fn(images: Any, prompts: list[str], metadata: Any) -> tuple[list[float | None], dict[str, Any]]:
        pils = [_to_pil(im) for im in images]
        starts = [i for i in range(len(prompts)) if i == 0 or prompts[i] != prompts[i - 1]]
        spans = list(zip(starts, starts[1:] + [len(prompts)], strict=True))
        body = {"prompts": [prompts[a] for a, _ in spans],
                "groups": [[_png_b64(im) for im in pils[a:b]] for a, b in spans]}
        r = httpx.post(f"{url}/v1/rewards", json=body, timeout=timeout)
        r.raise_for_status()  # 400: the named field is wrong; 503: the judge's endpoint failed
        results = r.json()["results"]
        scores: list[float | None] = []
        for res, (a, b) in zip(results, spans, strict=True):
            scores += res["rewards"] if res["rewards"] is not None else [None] * (b - a)
        return scores, {"outcomes": [res["outcome"] for res in results]}

    return _fn


# ---- VeRL-Omni --------------------------------------------------------------------------------------

async def compute_score_arr_rubric(data_source: str, solution_image: Any, ground_truth: str,
                                   extra_info: dict[str, Any] | None = None, *, url: str = ARR_REWARD_URL,
                                   **kwargs: Any) -> dict[str, Any]:
    """VeRL-Omni custom reward (``reward.custom_reward_function.name=compute_score_arr_rubric``): the
    per-criterion composite of the image for the prompt (``ground_truth``), with the criteria's
    scores as extra fields. Needs the service in ``reward.mode: scores``. Raises on a failed endpoint
    or an unusable answer (no made-up score)."""
    import httpx

    images = solution_image if getattr(solution_image, "ndim", 3) == 4 else [solution_image]
    body = {"prompts": [ground_truth] * len(images), "images": [_png_b64(_to_pil(im)) for im in images]}
    async with httpx.AsyncClient(timeout=300.0) as client:
        r = await client.post(f"{url}/v1/scores", json=body)
    r.raise_for_status()
    results = r.json()["results"]
    bad = next((res for res in results if res["composite"] is None), None)
    if bad is not None:
        raise RuntimeError(f"the rubric judge gave no usable scores: {bad['error']}")
    return {"score": float(np.mean([res["composite"] for res in results])),
            "criteria": [res["criteria"] for res in results]}
