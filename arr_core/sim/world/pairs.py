"""Preference-pair datasets of the scene world in the ARR reference format, and held-out prompt sets.

T2I record: ``{"query", "response": [a, b], "label_rank", "meta"}``; edit record:
``{"query", "source_image", "edited_images": [a, b], "label_rank", "meta"}``; image paths relative to
the output folder. Both candidates render the same prompt (or edit) with different random defect sets,
one of them sometimes empty, so that preferences carry information; labels come from the hidden
utility with label noise. Everything is drawn from one seeded generator: equal seeds give equal bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from arr_core.sim.world.edit import EDIT_DEFECTS, apply_edit_defects, edit_utility, sample_edit
from arr_core.sim.world.grammar import TAGS, PromptSpec, sample_spec
from arr_core.sim.world.render import render
from arr_core.sim.world.scene import Scene, applicable_defects, apply_defects, scene_from_spec
from arr_core.sim.world.utility import rank_from_utilities, utility

TASKS = ("t2i", "edit")
P_CLEAN = 0.25  # chance that a candidate has no defect at all
LABEL_NOISE = 0.1


def _draw_defects(rng: np.random.Generator, pool: list[str]) -> list[str]:
    if rng.random() < P_CLEAN:
        return []
    k = 1 if rng.random() < 0.7 else 2
    idx = sorted(rng.choice(len(pool), size=min(k, len(pool)), replace=False).tolist())
    return [pool[i] for i in idx]


def _two_defect_sets(rng: np.random.Generator, pool: list[str]) -> tuple[list[str], list[str]]:
    """Two different defect sets (so the pair is informative)."""
    a = _draw_defects(rng, pool)
    for _ in range(20):
        b = _draw_defects(rng, pool)
        if b != a:
            return a, b
    return a, ([] if a else [pool[0]])


def _edit_defect_sets(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Like ``_two_defect_sets`` over EDIT_DEFECTS; an edit that was not made cannot also be wrong."""
    a, b = _two_defect_sets(rng, list(EDIT_DEFECTS))
    a, b = ([d for d in s if not ("not_followed" in s and d == "wrong_edit")] for s in (a, b))
    return a, b


def image_options(defects: list[str], rng: np.random.Generator, size: int) -> dict:
    """Render options for the image-level defects; strengths scale with the image side."""
    opts: dict = {"noise": 0.0, "blur": 0.0, "contrast": 1.0}
    if "noise" in defects:
        opts["noise"] = float(rng.uniform(0.05, 0.12))
    if "blur" in defects:
        opts["blur"] = float(rng.uniform(0.8, 1.4)) * size / 64
    if "low_contrast" in defects:
        opts["contrast"] = float(rng.uniform(0.4, 0.6))
    return opts


def _render_candidate(scene: Scene, defects: list[str], rng: np.random.Generator, size: int) -> Image.Image:
    opts = image_options(defects, rng, size)
    return render(scene, size, seed=int(rng.integers(2**31)), **opts)


def _save(img: Image.Image, out_dir: Path, rel: str) -> str:
    path = out_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return rel


def make_prompts(n: int, seed: int) -> list[PromptSpec]:
    """``n`` prompts balanced over TAGS (tag i mod 6), distinct while the grammar allows it."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[PromptSpec] = []
    for i in range(n):
        tag = TAGS[i % len(TAGS)]
        spec = sample_spec(rng, tag)
        for _ in range(50):
            if spec.prompt not in seen:
                break
            spec = sample_spec(rng, tag)
        seen.add(spec.prompt)
        out.append(spec)
    return out


def make_pairs(task: str, n: int, seed: int, out_dir: Path, size: int = 64) -> Path:
    """Write ``n`` preference pairs of ``task`` ("t2i" or "edit") under ``out_dir``; returns the path
    of ``pairs.json``. For T2I also writes ``geneval_metadata.jsonl`` (one line per prompt)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records: list[dict] = []
    if task == "t2i":
        specs = make_prompts(n, int(rng.integers(2**31)))
        for i, spec in enumerate(specs):
            pool = applicable_defects(spec)
            da, db = _two_defect_sets(rng, pool)
            imgs, utils = [], []
            for defects in (da, db):
                scene = apply_defects(scene_from_spec(spec, rng), spec, defects, rng)
                imgs.append(_render_candidate(scene, defects, rng, size))
            # the same draws as label_pair(spec, a, b, rng), without detecting each image twice
            utils = [utility(spec, im) for im in imgs]
            rank = rank_from_utilities(utils[0], utils[1], rng, LABEL_NOISE)
            utils = [round(u, 6) for u in utils]
            paths = [_save(im, out_dir, f"images/{i:04d}_{s}.png") for im, s in zip(imgs, "ab", strict=True)]
            records.append({"query": spec.prompt, "response": paths, "label_rank": rank,
                            "meta": {"tag": spec.tag, "geneval": spec.to_geneval(), "defects_a": da,
                                     "defects_b": db, "utility": utils}})
        with open(out_dir / "geneval_metadata.jsonl", "w", encoding="utf-8") as f:
            for spec in specs:
                f.write(json.dumps(spec.to_geneval()) + "\n")
    else:
        for i in range(n):
            et = sample_edit(rng)
            da, db = _edit_defect_sets(rng)
            src_img = render(et.source, size)
            imgs = []
            for defects in (da, db):
                scene = apply_edit_defects(et, defects, rng)
                imgs.append(_render_candidate(scene, defects, rng, size))
            utils = [edit_utility(et.instruction, src_img, im) for im in imgs]
            rank = rank_from_utilities(utils[0], utils[1], rng, LABEL_NOISE)
            utils = [round(u, 6) for u in utils]
            src = _save(src_img, out_dir, f"images/{i:04d}_src.png")
            paths = [_save(im, out_dir, f"images/{i:04d}_{s}.png") for im, s in zip(imgs, "ab", strict=True)]
            records.append({"query": et.instruction, "source_image": src, "edited_images": paths,
                            "label_rank": rank, "meta": {"kind": et.kind, "defects_a": da,
                                                         "defects_b": db, "utility": utils}})
    path = out_dir / "pairs.json"
    path.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return path

