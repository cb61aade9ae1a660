"""GenEval checking semantics on hand-built detections."""

from __future__ import annotations

import pytest

from arr_core.sim.world.check import check_spec, geneval_score
from arr_core.sim.world.detect import Detection
from arr_core.sim.world.grammar import parse_prompt


def det(shape, color="red", cx=0.5, cy=0.5, size=0.2, score=0.9):
    return Detection(shape, color, cx, cy, size, size, size * size, score)


def test_counts_are_at_least_with_exclude_for_exact():
    spec = parse_prompt("a photo of two circles")
    assert check_spec(spec, [det("circle", cx=0.2), det("circle", cx=0.7)])["passed"]
    one = check_spec(spec, [det("circle")])
    assert not one["passed"] and one["clauses"][0]["why"] == "expected circle>=2, found 1"
    three = check_spec(spec, [det("circle", cx=x) for x in (0.2, 0.5, 0.8)])
    assert [c["passed"] for c in three["clauses"]] == [True, False]  # include holds, exclude fails
    assert three["clauses"][1]["why"] == "expected circle<3, found 3"
    # other shapes do not count
    assert check_spec(spec, [det("circle", cx=0.2), det("circle", cx=0.7), det("square")])["passed"]


def test_colour_uses_the_top_scored_objects():
    spec = parse_prompt("a photo of a red circle")
    assert check_spec(spec, [det("circle", "red")])["passed"]
    assert not check_spec(spec, [det("circle", "blue")])["passed"]
    # GenEval takes the first `count` detections of the class by score
    assert not check_spec(spec, [det("circle", "red", score=0.5), det("circle", "blue", cx=0.1, score=0.9)])["passed"]
    assert check_spec(spec, [det("circle", "red", score=0.9), det("circle", "blue", cx=0.1, score=0.5)])["passed"]


def test_position_margin_is_a_tenth_of_the_summed_sizes():
    spec = parse_prompt("a photo of a square left of a circle")  # include[0] circle, include[1] square
    ref = det("circle", cx=0.6, cy=0.5, size=0.2)
    # summed widths 0.4 → margin 0.04; GenEval then asks the shrunk offset to exceed half of the
    # raw offset: |dx| − 0.04 > |dx| / 2, i.e. |dx| > 0.08 for a purely horizontal offset
    assert check_spec(spec, [ref, det("square", cx=0.51, cy=0.5)])["passed"]
    res = check_spec(spec, [ref, det("square", cx=0.53, cy=0.5)])
    assert not res["passed"] and "found none" in res["clauses"][1]["why"]
    assert not check_spec(spec, [ref, det("square", cx=0.8, cy=0.5)])["passed"]  # right of
    # mostly vertical offset: "above", not "left of"
    assert not check_spec(spec, [ref, det("square", cx=0.5, cy=0.1)])["passed"]
    # the reference missing fails the relation clause too
    res = check_spec(spec, [det("square", cx=0.2)])
    assert [c["passed"] for c in res["clauses"]] == [False, False]
    assert res["clauses"][1]["why"].startswith("no target")


def test_bad_position_index_raises():
    spec = parse_prompt("a photo of a square left of a circle")
    spec.include[1]["position"] = ["left of", 1]
    with pytest.raises(ValueError, match="position"):
        check_spec(spec, [det("circle"), det("square")])


def test_geneval_score_is_the_mean_over_tags():
    out = geneval_score({"colors": [True, False], "counting": [{"passed": True}], "position": []})
    assert out["per_tag"] == {"colors": 0.5, "counting": 1.0}
    assert out["overall"] == pytest.approx(0.75)
    assert out["n"] == {"colors": 2, "counting": 1}
    with pytest.raises(ValueError, match="tag"):
        geneval_score({"nope": [True]})


def test_failed_clauses_name_what_went_wrong():
    two = parse_prompt("a photo of two circles")
    assert [c["fail"] for c in check_spec(two, [det("circle", cx=0.2), det("circle", cx=0.7)])["clauses"]] == [None, None]
    assert check_spec(two, [det("square")])["clauses"][0]["fail"] == "missing"
    assert check_spec(two, [det("circle")])["clauses"][0]["fail"] == "too_few"
    assert check_spec(two, [det("circle", cx=x) for x in (0.2, 0.5, 0.8)])["clauses"][1]["fail"] == "too_many"
    assert check_spec(parse_prompt("a photo of a red circle"), [det("circle", "blue")])["clauses"][0]["fail"] == "colour"
    rel = parse_prompt("a photo of a square left of a circle")
    ref = det("circle", cx=0.6, cy=0.5, size=0.2)
    assert [c["fail"] for c in check_spec(rel, [ref, det("square", cx=0.8, cy=0.5)])["clauses"]] == [None, "position"]
    assert [c["fail"] for c in check_spec(rel, [det("square", cx=0.2)])["clauses"]] == ["missing", "position"]
