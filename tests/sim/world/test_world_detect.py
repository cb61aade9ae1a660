"""Detector accuracy on seeded renders: exact scene recovery (shapes, colours, counts; centres
within 0.06 of the side), clean and with the image-level defects, at 64 and 32 px.

The lower bounds asserted below are the accuracies measured on these seeds (2-core CPU, see
docs/world.md) rounded down with a small margin; the measured values are printed (pytest -s).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from arr_core.sim.world.detect import detect, image_quality, scene_detections
from arr_core.sim.world.grammar import BACKGROUND, sample_spec
from arr_core.sim.world.render import render
from arr_core.sim.world.scene import Scene, SceneObject, scene_from_spec

TOL = 0.06


def recovered(scene: Scene, dets) -> bool:
    """True when detections and objects pair up one to one by shape, colour and centre."""
    if len(dets) != len(scene.objects):
        return False
    left = list(scene.objects)
    for d in dets:
        hit = next((o for o in left if o.shape == d.shape and o.color == d.color
                    and abs(o.cx - d.cx) <= TOL and abs(o.cy - d.cy) <= TOL), None)
        if hit is None:
            return False
        left.remove(hit)
    return True


def accuracy(n: int, seed: int, size: int, **opts) -> float:
    rng = np.random.default_rng(seed)
    ok = 0
    for i in range(n):
        scene = scene_from_spec(sample_spec(rng), rng)
        ok += recovered(scene, detect(render(scene, size, seed=i, **opts)))
    return ok / n


# (name, renders, size, render options, asserted lower bound)
CASES = [
    ("clean 64px", 500, 64, {}, 0.99),
    ("clean 32px", 120, 32, {}, 0.98),
    ("noise 0.08 64px", 100, 64, {"noise": 0.08}, 0.96),
    ("blur 1.2px 64px", 100, 64, {"blur": 1.2}, 0.96),
    ("contrast 0.5 64px", 100, 64, {"contrast": 0.5}, 0.96),
    ("blur 0.7px 32px", 120, 32, {"blur": 0.7}, 0.95),
    ("noise 0.06 32px", 120, 32, {"noise": 0.06}, 0.90),
    ("blur 1px + noise 0.05 32px", 150, 32, {"blur": 1.0, "noise": 0.05}, 0.8),
]


@pytest.mark.parametrize("name,n,size,opts,bound", CASES, ids=[c[0] for c in CASES])
def test_scene_recovery(name, n, size, opts, bound):
    acc = accuracy(n, 1000 + n + size, size, **opts)
    print(f"\ndetector exact scene recovery, {name}, {n} renders: {acc:.3f} (bound {bound})")
    assert acc >= bound


def test_soft_and_tinted_images_like_a_toy_generator_makes():
    """Blurred 64-px renders shrunk to 32 px, with a colour cast and a slow background wave."""
    rng = np.random.default_rng(42)
    ok, n = 0, 100
    yy, xx = np.mgrid[0:64, 0:64] / 64
    for _ in range(n):
        scene = scene_from_spec(sample_spec(rng), rng)
        arr = np.asarray(render(scene, 64, blur=1.6), dtype=np.float64)
        wave = 10 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 1.5) + rng.uniform()))
        arr = arr + rng.uniform(-10, 10, 3) + wave[..., None] * rng.uniform(-1, 1, 3)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).resize(
            (32, 32), Image.Resampling.BILINEAR)
        ok += recovered(scene, detect(img))
    print(f"\ndetector exact scene recovery, soft tinted 32px, {n} images: {ok / n:.3f} (bound 0.95)")
    assert ok / n >= 0.95


def test_specks_and_empty_images_give_no_detections():
    img = np.full((64, 64, 3), BACKGROUND, dtype=np.uint8)
    assert detect(Image.fromarray(img)) == []
    img[10:12, 10:12] = (220, 30, 30)  # a 4-pixel speck, below the minimum area
    assert detect(Image.fromarray(img)) == []
    noisy = render(Scene([]), 64, noise=0.1, seed=3)
    assert detect(noisy) == []


def test_boxes_and_areas_match_the_scene():
    scene = Scene([SceneObject("square", "blue", 0.3, 0.3, 0.25), SceneObject("circle", "white", 0.7, 0.6, 0.25)])
    dets = sorted(detect(render(scene, 64)), key=lambda d: d.cx)
    truth = scene_detections(scene)
    for d, t in zip(dets, truth, strict=True):
        assert (d.shape, d.color) == (t.shape, t.color)
        assert abs(d.w - t.w) <= 1.5 / 64 and abs(d.h - t.h) <= 1.5 / 64
        assert abs(d.area - t.area) <= 0.1 * t.area
        assert 0.0 <= d.score <= 1.0


def test_image_quality_tracks_the_defects():
    rng = np.random.default_rng(5)
    scene = scene_from_spec(sample_spec(rng, "color_attr"), rng)
    clean = image_quality(render(scene, 64))
    blurred = image_quality(render(scene, 64, blur=1.5))
    noisy = image_quality(render(scene, 64, noise=0.1, seed=1))
    faint = image_quality(render(scene, 64, contrast=0.5))
    for q in (clean, blurred, noisy, faint):
        assert set(q) == {"sharpness", "noise", "contrast"}
        assert all(0.0 <= v <= 1.0 for v in q.values())
    assert clean["sharpness"] > 0.9 and clean["noise"] < 0.05 and clean["contrast"] > 0.9
    assert blurred["sharpness"] < clean["sharpness"] - 0.3
    assert noisy["noise"] > clean["noise"] + 0.3
    assert abs(faint["contrast"] - 0.5) < 0.1
