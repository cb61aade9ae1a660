"""Edit instructions: parsing, sampled tasks checked through the detector, hand cases."""

from __future__ import annotations

import numpy as np
import pytest

from arr_core.sim.world.detect import Detection, detect
from arr_core.sim.world.edit import (
    EDIT_DEFECTS,
    EDIT_KINDS,
    apply_edit_defects,
    check_edit,
    edit_utility,
    instruction_vocabulary,
    label_edit_pair,
    parse_instruction,
    sample_edit,
)
from arr_core.sim.world.render import render


def det(shape, color, cx, cy, size=0.2):
    return Detection(shape, color, cx, cy, size, size, size * size, 0.9)


def test_parse_instruction_hand_cases():
    assert parse_instruction("Change the red circle to blue.") == {
        "kind": "recolour", "object": {"class": "circle", "color": "red"}, "color": "blue"}
    assert parse_instruction("add a green square") == {"kind": "add",
                                                       "object": {"class": "square", "color": "green"}}
    assert parse_instruction("add an orange triangle")["object"] == {"class": "triangle", "color": "orange"}
    assert parse_instruction("remove the triangle") == {"kind": "remove", "object": {"class": "triangle"}}
    assert parse_instruction("move the circle to the left of the square") == {
        "kind": "move", "object": {"class": "circle"}, "relation": "left of", "reference": {"class": "square"}}
    assert parse_instruction("move the blue circle above the red square")["relation"] == "above"
    for text in ("make it pop", "remove the dog", "change the circle to teal", ""):
        assert parse_instruction(text) is None, text


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_sampled_edits_follow_and_preserve(kind):
    rng = np.random.default_rng(13)
    vocab = set(instruction_vocabulary())
    for _ in range(12):
        task = sample_edit(rng, kind)
        assert task.kind == kind and parse_instruction(task.instruction)["kind"] == kind
        assert set(task.instruction.split()) <= vocab
        src = detect(render(task.source, 64))
        good = check_edit(task.instruction, src, detect(render(task.target, 64)))
        assert good["follows"] and good["preserved"], (task.instruction, good)
        same = check_edit(task.instruction, src, src)
        assert not same["follows"], task.instruction  # doing nothing does not follow
        assert same["preserved"]


def test_check_edit_hand_cases():
    src = [det("circle", "red", 0.3, 0.5), det("square", "green", 0.7, 0.5)]
    recoloured = [det("circle", "blue", 0.3, 0.5), det("square", "green", 0.7, 0.5)]
    assert check_edit("change the red circle to blue", src, recoloured) == {
        "follows": True, "preserved": True, "why": "recoloured found; lost []; extra []"}
    both = [det("circle", "blue", 0.3, 0.5), det("square", "yellow", 0.7, 0.5)]
    r = check_edit("change the red circle to blue", src, both)
    assert r["follows"] and not r["preserved"]
    r = check_edit("remove the square", src, [det("circle", "red", 0.3, 0.5)])
    assert r["follows"] and r["preserved"]
    r = check_edit("remove the square", src, [det("square", "green", 0.7, 0.5)])
    assert r["follows"] is False or r["preserved"] is False
    assert not r["preserved"]  # the circle went missing instead
    added = src + [det("triangle", "pink", 0.5, 0.15)]
    assert check_edit("add a pink triangle", src, added) == {
        "follows": True, "preserved": True, "why": check_edit("add a pink triangle", src, added)["why"]}
    assert not check_edit("add a pink triangle", src, src)["follows"]
    moved = [det("circle", "red", 0.3, 0.5), det("square", "green", 0.3, 0.15)]
    r = check_edit("move the square above the circle", src, moved)
    assert r["follows"] and r["preserved"]
    r = check_edit("move the square below the circle", src, moved)
    assert not r["follows"] and r["preserved"]
    r = check_edit("remove the triangle", src, src)
    assert r == {"follows": False, "preserved": False,
                 "why": "the source has 0 objects matching {'class': 'triangle'}, expected exactly 1"}
    with pytest.raises(ValueError, match="not a scene-world edit"):
        check_edit("paint it black", src, src)


def test_edit_utility_and_labels_prefer_the_intended_edit():
    rng = np.random.default_rng(9)
    wins, total = 0, 0
    for _ in range(16):
        task = sample_edit(rng)
        src = render(task.source, 64)
        good = render(task.target, 64)
        u_good = edit_utility(task.instruction, src, good)
        for d in ("not_followed", "wrong_edit", "collateral"):
            bad = render(apply_edit_defects(task, [d], rng), 64)
            wins += edit_utility(task.instruction, src, bad) < u_good
            total += 1
        rank = label_edit_pair(task.instruction, src, good, render(task.source, 64), np.random.default_rng(0))
        assert rank in ([1, 2], [2, 1])
    print(f"\nedit utility: intended edit preferred in {wins}/{total} scene-defect comparisons")
    assert wins == total
    with pytest.raises(ValueError, match="unknown edit defects"):
        apply_edit_defects(task, ["smudge"], rng)
    assert set(EDIT_DEFECTS) >= {"not_followed", "noise", "blur", "low_contrast"}
