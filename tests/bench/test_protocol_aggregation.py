"""The official aggregations and answer parsing of the protocols, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from arr_core.bench.protocols import base, dpg, gedit, imgedit, tiif, unigenbench

from .protocol_fixtures import JUDGE_PROMPT


def test_gedit_sample_scores_take_the_minimum_and_the_geometric_mean() -> None:
    assert gedit.sample_scores([7, 9], [6, 8]) == (7, 6, math.sqrt(42))


def test_gedit_overall_is_averaged_per_sample_then_over_groups() -> None:
    rows = [{"group": "color_alter", "lang": "en", "sc": 4, "pq": 9, "intersection": True},
            {"group": "color_alter", "lang": "en", "sc": 9, "pq": 4, "intersection": False},
            {"group": "subject-add", "lang": "en", "sc": 1, "pq": 1, "intersection": True},
            {"group": "subject-add", "lang": "cn", "sc": 10, "pq": 10, "intersection": True}]
    agg = gedit.aggregate(rows)
    en = agg["en"]["all"]
    # color_alter: SC 6.5, PQ 6.5, O = mean(sqrt 36, sqrt 36) = 6 (not sqrt(6.5 * 6.5) = 6.5)
    assert en["groups"]["color_alter"] == pytest.approx((6.5, 6.5, 6.0))
    assert en["groups"]["subject-add"] == pytest.approx((1.0, 1.0, 1.0))
    assert en["avg"] == pytest.approx((3.75, 3.75, 3.5))  # mean over the two groups, not over 3 samples
    inter = agg["en"]["intersection"]
    assert inter["groups"]["color_alter"] == pytest.approx((4.0, 9.0, 6.0)) and inter["n"] == 2
    assert agg["cn"]["all"]["avg"] == pytest.approx((10.0, 10.0, 10.0))  # languages never mix


def test_imgedit_image_and_type_means() -> None:
    assert imgedit.image_score([5, 4, 3]) == 4
    agg = imgedit.aggregate([("add", 4.0), ("add", 2.0), ("remove", 5.0)])
    assert agg["types"] == {"add": 3.0, "remove": 5.0}
    assert agg["overall"] == 4.0  # mean over types, not the pooled 11/3
    assert agg["n"] == {"add": 2, "remove": 1}


def test_imgedit_labels_come_from_the_prompts_response_format() -> None:
    assert imgedit.score_labels(JUDGE_PROMPT) == ["Prompt Compliance", "Visual Naturalness",
                                                  "Physical & Detail Integrity"]


def test_dpg_dependency_masking_chains_in_question_order() -> None:
    qs = [{"qid": 1, "parents": [0]}, {"qid": 2, "parents": [1]}, {"qid": 3, "parents": [2]},
          {"qid": 4, "parents": [0]}, {"qid": 5, "parents": [1, 4]}]
    yes = {1: False, 2: True, 3: True, 4: True, 5: True}
    # q2 fails through its parent q1, q3 through q2 (already masked), q5 through q1; q4 stands.
    assert dpg.masked_scores(qs, yes) == {1: 0.0, 2: 0.0, 3: 0.0, 4: 1.0, 5: 0.0}
    assert dpg.crop_score(qs, yes) == pytest.approx(0.2)
    assert dpg.crop_score(qs, dict.fromkeys(yes, True)) == 1.0
    assert dpg.category("attribute - color (circle, red)") == ("attribute", "attribute - color")


def test_tiif_pools_questions_per_type_then_averages_types_and_groups() -> None:
    rows = [("shape+color", 3, 4), ("shape+color", 1, 2), ("color+texture", 1, 1), ("numeracy", 1, 2)]
    agg = tiif.aggregate(rows)
    assert agg["types"]["shape+color"] == pytest.approx(4 / 6)  # pooled, not mean(3/4, 1/2)
    assert agg["groups"]["Basic Attribute"] == pytest.approx((4 / 6 + 1) / 2)
    assert agg["groups"]["Basic Reasoning"] == 0.5
    assert set(agg["groups"]) == {"Basic Attribute", "Basic Reasoning"}
    assert agg["overall"] == pytest.approx(((4 / 6 + 1) / 2 + 0.5) / 2)


def test_unigenbench_pools_checkpoints_per_dimension() -> None:
    rows = [(["Style", "Attribute - Color", "Attribute - Quantity"], [1, 0, 1]),
            (["Style", "Attribute - Color"], [1, 1])]
    agg = unigenbench.aggregate(rows)
    assert agg["primary"] == {"Style": 1.0, "Attribute": pytest.approx(2 / 3)}
    assert agg["sub"]["Attribute - Color"] == 0.5 and agg["sub"]["Attribute - Quantity"] == 1.0
    assert agg["overall"] == pytest.approx((1 + 2 / 3) / 2)
    assert agg["pooled"] == pytest.approx(4 / 5)


def test_answer_parsing_is_robust_but_never_guesses() -> None:
    assert tiif.parse_answers({"answers": ["Yes, a cat is there.", "no."]}, 2) == {"answers": ["yes", "no"]}
    assert tiif.parse_answers({"answers": [{"answer": "No"}, "YES - it is"]}, 2) == {"answers": ["no", "yes"]}
    assert tiif.parse_answers({"answers": ["yes"]}, 2) is None  # a count mismatch is a format error
    assert tiif.parse_answers({"answers": ["maybe", "yes"]}, 2) is None
    assert unigenbench.parse_scores({"analysis": ["a", "b"], "score": ["1", 0]}, 2)["score"] == [1, 0]
    assert unigenbench.parse_scores({"analysis": ["a", "b"], "score": [1, 2]}, 2) is None
    assert base.as_number("4/5", 1, 5) == 4 and base.as_number(" 7 ", 0, 10) == 7
    assert base.as_number(11, 0, 10) is None and base.as_number(True, 0, 10) is None
    assert gedit._validator(2)({"score": [8, "9"]}) is None
    assert gedit._validator(2)({"score": [8]}) is not None and gedit._validator(2)({"score": [8, 12]}) is not None
