"""Layouts satisfy their prompt; each scene-level defect breaks what it should; renders are
deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from arr_core.sim.world.check import check_spec
from arr_core.sim.world.detect import scene_detections
from arr_core.sim.world.grammar import TAGS, sample_spec
from arr_core.sim.world.render import render
from arr_core.sim.world.scene import GAP, apply_defects, scene_from_spec


@pytest.mark.parametrize("tag", TAGS)
def test_layouts_are_correct_and_apart(tag):
    rng = np.random.default_rng(11)
    for _ in range(40):
        spec = sample_spec(rng, tag)
        scene = scene_from_spec(spec, rng)
        assert len(scene.objects) == sum(c["count"] for c in spec.include)
        assert check_spec(spec, scene_detections(scene))["passed"], spec.prompt
        for i, a in enumerate(scene.objects):
            assert a.size / 2 <= a.cx <= 1 - a.size / 2 and a.size / 2 <= a.cy <= 1 - a.size / 2
            for b in scene.objects[i + 1:]:
                lim = (a.size + b.size) / 2 + GAP - 1e-9
                assert abs(a.cx - b.cx) >= lim or abs(a.cy - b.cy) >= lim


# defect → tags on which it must make the (perfectly detected) scene fail its prompt
MUST_FAIL = {
    "missing_object": TAGS,
    "wrong_shape": ("single_object", "two_object", "colors", "position", "color_attr"),
    "wrong_color": ("colors", "color_attr"),
    "broken_relation": ("position",),
    "wrong_count": ("counting",),
}


@pytest.mark.parametrize("defect", sorted(MUST_FAIL))
def test_scene_defects_break_the_prompt(defect):
    rng = np.random.default_rng(3)
    for tag in MUST_FAIL[defect]:
        for _ in range(15):
            spec = sample_spec(rng, tag)
            scene = scene_from_spec(spec, rng)
            bad = apply_defects(scene, spec, [defect], rng)
            assert not check_spec(spec, scene_detections(bad))["passed"], (defect, spec.prompt)
            assert check_spec(spec, scene_detections(scene))["passed"]  # the input is left alone


def test_extra_object_adds_one_and_image_defects_leave_the_scene():
    rng = np.random.default_rng(4)
    spec = sample_spec(rng, "two_object")
    scene = scene_from_spec(spec, rng)
    assert len(apply_defects(scene, spec, ["extra_object"], rng).objects) == 3
    assert apply_defects(scene, spec, ["noise", "blur", "low_contrast"], rng) == scene
    with pytest.raises(ValueError, match="unknown defects"):
        apply_defects(scene, spec, ["smudge"], rng)


def test_render_is_deterministic_and_seeded():
    rng = np.random.default_rng(2)
    scene = scene_from_spec(sample_spec(rng, "counting"), rng)
    a = render(scene, 64, noise=0.1, blur=0.5, contrast=0.7, seed=5)
    b = render(scene, 64, noise=0.1, blur=0.5, contrast=0.7, seed=5)
    c = render(scene, 64, noise=0.1, blur=0.5, contrast=0.7, seed=6)
    assert a.mode == "RGB" and a.size == (64, 64)
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    with pytest.raises(ValueError, match="size"):
        render(scene, 4)
