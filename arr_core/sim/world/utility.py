"""The hidden human utility of the scene world and the noisy preference labels made from it.

DESIGN.md: "a hidden human utility (weighted criteria plus image quality, with label noise) that
labels preference pairs". The simulated person looks at the image (through the detector, which is
near-perfect on this world), scores prompt faithfulness and image quality with fixed weights, and
picks the better image, flipping the choice more often the closer the two utilities are.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from arr_core.sim.world.check import check_spec
from arr_core.sim.world.detect import Detection, analyse_image
from arr_core.sim.world.grammar import PromptSpec

# Weights of the criteria (sum 1): the whole prompt right, each clause right, no objects beyond the
# prompt, and image quality (sharpness, low noise, contrast).
WEIGHTS: dict[str, float] = {"all_correct": 0.3, "clauses": 0.2, "no_extra": 0.2, "quality": 0.3}
CLOSENESS = 0.05  # utility gap at which the extra flip probability has fallen to 1/e


def utility_parts(spec: PromptSpec, detections: list[Detection], quality: dict[str, float]) -> dict:
    """The criteria scores in [0, 1] and their weighted sum ``utility``."""
    res = check_spec(spec, detections)
    clauses = res["clauses"]
    wanted = sum(int(c["count"]) for c in spec.include)
    extra = max(0, len(detections) - wanted)
    q = (quality["sharpness"] + (1.0 - quality["noise"]) + quality["contrast"]) / 3.0
    parts = {
        "all_correct": 1.0 if res["passed"] else 0.0,
        "clauses": sum(c["passed"] for c in clauses) / len(clauses) if clauses else 1.0,
        "no_extra": 1.0 / (1.0 + extra),
        "quality": q,
    }
    parts["utility"] = sum(WEIGHTS[k] * parts[k] for k in WEIGHTS)
    return parts


def utility(spec: PromptSpec, image: Image.Image) -> float:
    """Hidden human utility of ``image`` for ``spec``, in [0, 1]."""
    dets, quality = analyse_image(image)
    return float(utility_parts(spec, dets, quality)["utility"])


def flip_probability(u_a: float, u_b: float, noise: float) -> float:
    """Probability that the label goes to the worse image: ``noise`` for clearly different utilities,
    rising to 0.5 (a coin) as the utilities meet."""
    if not 0.0 <= noise <= 0.5:
        raise ValueError(f"label noise must be in [0, 0.5], got {noise}")
    close = math.exp(-abs(u_a - u_b) / CLOSENESS)
    return noise + (0.5 - noise) * close


def rank_from_utilities(u_a: float, u_b: float, rng: np.random.Generator, noise: float) -> list[int]:
    """``label_rank`` [1, 2] (a preferred) or [2, 1], never tied; one uniform draw from ``rng``."""
    a_better = u_a > u_b if u_a != u_b else True
    flip = rng.random() < flip_probability(u_a, u_b, noise)
    return [1, 2] if a_better != flip else [2, 1]


def label_pair(spec: PromptSpec, img_a: Image.Image, img_b: Image.Image, rng: np.random.Generator,
               noise: float = 0.1) -> list[int]:
    """Noisy human preference between two images for ``spec`` as ``label_rank``."""
    return rank_from_utilities(utility(spec, img_a), utility(spec, img_b), rng, noise)
