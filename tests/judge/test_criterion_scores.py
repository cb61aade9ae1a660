"""Per-criterion scores (arr_core.judge.scores): scales, weights, the request contract, the scene VLM's
answers, failures as abstentions, the rewarder's details and the judgments rows."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from PIL import Image
from test_checklist import _renders  # tests/judge is on sys.path (pytest prepend mode)
from test_judge import FixedAnswers

from arr_core.judge.scores import (
    Criterion,
    ScoresRewarder,
    build_scores_request,
    composite,
    group_metrics,
    parse_scores,
    scored_criteria,
    theme_means,
)
from arr_core.rewards import GroupOutcome, detail_metrics
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.sim.scene_vlm import SceneVLM
from arr_core.store import Store
from arr_core.vlm.client import VLMClient

RUBRICS = RubricSet.from_text(
    "Rubric 1:\nTheme: Faithfulness\n- Tip: The image satisfies every requirement of the caption at once.\n\n"
    "Rubric 2:\nTheme: Objects\n- Tip: Each object appears exactly the number of times the caption states.\n"
    "- Tip: Every object named in the caption is present in the image; none is missing.\n")
ALL = "The image satisfies every requirement of the caption at once."
COUNT = "Each object appears exactly the number of times the caption states."
PRESENT = "Every object named in the caption is present in the image; none is missing."


def _client(backend=None, **kw) -> VLMClient:
    return VLMClient(backend or SceneVLM(seed=0), cache_mode="off", **kw)


# ---- pure pieces (hand-derived values) ------------------------------------------------------------

def test_composite_is_the_weighted_mean_of_normalised_scores():
    crit = [Criterion("a", "T1", "1-5", 1.0), Criterion("b", "T1", "binary", 1.0), Criterion("c", "T2", "1-5", 2.0)]
    # normalised: (4-1)/4 = 0.75, 1, (2-1)/4 = 0.25 → (0.75 + 1 + 2·0.25) / 4 = 0.5625
    assert composite(crit, [4, 1, 2]) == pytest.approx(0.5625)
    assert composite(crit[:2], [1, 0]) == 0.0
    # per theme over two rows: T1 = mean(0.75, 1) = 0.875 and mean(0.5, 0) = 0.25 → 0.5625;
    # T2 = 0.25 and 1 → 0.625
    assert theme_means(crit, [[4, 1, 2], [3, 0, 5]]) == pytest.approx({"T1": 0.5625, "T2": 0.625})


def test_scales_and_weights_from_the_set_then_the_config():
    crit = scored_criteria(RUBRICS, weights={"Objects": 2.0, ALL: 0.5})
    assert [(c.scale, c.weight, c.theme) for c in crit] == [("1-5", 0.5, "Faithfulness"), ("1-5", 2.0, "Objects"),
                                                            ("1-5", 2.0, "Objects")]
    crit = scored_criteria(RUBRICS, default_scale="binary", scales={COUNT: "1-5"})
    assert [c.scale for c in crit] == ["binary", "1-5", "binary"]
    carrying = RUBRICS.model_copy(update={"metadata": {"scales": {"Objects": "binary"}}})
    crit = scored_criteria(carrying, scales={"Objects": "1-5", ALL: "binary"})
    assert [c.scale for c in crit] == ["binary", "binary", "binary"]  # the set's own scale wins
    with pytest.raises(ValueError, match="'Colour' is neither a criterion nor a theme"):
        scored_criteria(RUBRICS, weights={"Colour": 1.0})
    with pytest.raises(ValueError, match="scale must be one of"):
        scored_criteria(RUBRICS, scales={ALL: "1-10"})
    with pytest.raises(ValueError, match="must be a number >= 0"):
        scored_criteria(RUBRICS, weights={ALL: -1})
    with pytest.raises(ValueError, match="every criterion weighs 0"):
        scored_criteria(RUBRICS, weights={"Faithfulness": 0, "Objects": 0})


def test_request_contract_schema_and_validator():
    crit = scored_criteria(RUBRICS, scales={ALL: "binary"})
    req = build_scores_request("t2i", "a photo of two cats", Image.new("RGB", (32, 32)), crit)
    text = req.messages[0]["content"][-1]["text"]
    assert "c1 (0/1): " + ALL in text and "c2 (1-5): " + COUNT in text and '"scores"' in text
    assert req.kind == "scores" and req.required_keys == ("scores", "reason")
    props = req.schema["properties"]["scores"]["properties"]
    assert props["c1"]["enum"] == [0, 1] and props["c3"]["enum"] == [1, 2, 3, 4, 5]
    ok = {"scores": {"c1": 1, "c2": 5, "c3": 2.0}, "reason": "x"}
    assert req.validator(ok) is None and parse_scores(ok, crit) == ([1, 5, 2], None)
    assert "lacks criterion \"c3\"" in req.validator({"scores": {"c1": 1, "c2": 5}, "reason": ""})
    assert "must be an integer in [0, 1]" in req.validator({"scores": {"c1": 3, "c2": 5, "c3": 1}, "reason": ""})
    assert "not criteria" in req.validator({"scores": {"c1": 1, "c2": 5, "c3": 1, "c9": 2}, "reason": ""})
    assert "must be an object" in req.validator({"scores": [1, 5, 1], "reason": ""})


def test_group_metrics_attribution_marks_criteria_that_separate_winner_from_loser():
    crit = [Criterion("every requirement", None, "1-5"), Criterion("sharp edges", None, "binary")]
    m = group_metrics(crit, [[5, 1], [2, 1]], ranks=[1, 2])
    assert m["attribution/c1 every requirement"] == 1.0 and m["attribution/c2 sharp edges"] == 0.0
    assert m["score/c1 every requirement"] == pytest.approx((1.0 + 0.25) / 2)
    assert m["score_theme/all criteria"] == pytest.approx(((1.0 + 1) / 2 + (0.25 + 1) / 2) / 2)
    assert group_metrics(crit, [[3, 1], [3, 1]], ranks=None)["attribution/c1 every requirement"] == 0.0


def test_logged_metric_names_are_ones_mlflow_accepts():
    # MLflow metric names: letters, digits, _ - . : / and spaces (its validator's rule)
    crit = [Criterion("Colours (hue) & tone?", "Look & feel (overall)", "1-5")]
    o = GroupOutcome([0.0, 0.0], "tie", None, 0.0, {"metrics": group_metrics(crit, [[3], [3]], None)})
    names = detail_metrics([o])
    assert set(names) == {"score_theme/Look _ feel _overall_", "score/c1 Colours hue tone",
                          "attribution/c1 Colours hue tone"}
    assert all(re.fullmatch(r"[A-Za-z0-9_\-. :/]+", k) for k in names)


# ---- the scene VLM answers and the rewarder -------------------------------------------------------

def test_scene_vlm_scores_a_clean_render_above_a_wrong_count():
    prompt, clean, wrong = _renders(3)
    r = ScoresRewarder(_client(), RUBRICS, "t2i")
    [o] = asyncio.run(r.score([prompt], [[clean, wrong]]))
    assert o.outcome == "win" and o.ranks == [1, 2]
    good, bad = o.details["scores"]
    assert good == [5, 5, 5]  # every check holds on the clean render
    assert bad[1] < 5  # the count criterion sees the wrong count
    assert o.rewards == pytest.approx(o.details["composites"])
    assert o.details["metrics"]["attribution/c2 Each object appears exactly the numbe"] == 1.0
    assert r.stats.as_dict() == {"images": 2, "unusable": 0, "transport_failed": 0, "abstained_groups": 0}


def test_equal_images_tie_and_an_unknown_caption_gets_the_cannot_tell_value():
    _, clean, _ = _renders(4)
    r = ScoresRewarder(_client(), RUBRICS, "t2i", default_scale="binary")
    [o] = asyncio.run(r.score(["not a scene-world caption"], [[clean, clean]]))
    assert o.outcome == "tie" and o.rewards == [0.0, 0.0]
    assert o.details["scores"] == [[0, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize("garbage", [
    "no json here",
    '{"scores": {"c1": 5, "c2": 5}, "reason": "forgot one"}',
    '{"scores": {"c1": 9, "c2": 5, "c3": 5}, "reason": "out of scale"}',
])
def test_unusable_answers_abstain_and_are_counted_never_a_score(garbage):
    _, clean, wrong = _renders(5)
    backend = FixedAnswers([garbage])
    r = ScoresRewarder(_client(backend, max_reasks=1), RUBRICS, "t2i")
    [o] = asyncio.run(r.score(["a photo of a cat"], [[clean, wrong]]))
    assert o.outcome == "abstain" and o.rewards == [0.0, 0.0] and "metrics" not in o.details
    assert backend.calls == 4  # two images, each asked twice (one re-ask)
    assert r.stats.unusable == 2 and r.stats.transport_failed == 0 and r.stats.abstained_groups == 1
    assert detail_metrics([o]) == {}


def test_rewarder_input_errors():
    with pytest.raises(ValueError, match="needs a rubric set"):
        ScoresRewarder(_client(), None, "t2i")
    with pytest.raises(ValueError, match="is for task 't2i', not 'edit'"):
        ScoresRewarder(_client(), RUBRICS, "edit")
    r = ScoresRewarder(_client(), RUBRICS, "t2i")
    with pytest.raises(ValueError, match="takes no source images"):
        asyncio.run(r.score(["x"], [[Image.new("RGB", (8, 8))] * 2], [Image.new("RGB", (8, 8))]))


def test_scores_are_stored_with_the_judgment(tmp_path):
    prompt, clean, wrong = _renders(6)
    store = Store(tmp_path / "home")
    r = ScoresRewarder(_client(), RUBRICS, "t2i", store=store)
    [o] = asyncio.run(r.score([prompt], [[clean, wrong]]))
    rows = store.fetchall("judgment_by_rubric_set", {"rubric_set_id": RUBRICS.id})
    assert len(rows) == 1 and rows[0]["order_mode"] == "scores" and rows[0]["outcome"] == "win"
    orders = rows[0]["orders"] if isinstance(rows[0]["orders"], list) else json.loads(rows[0]["orders"])
    assert [im["scores"] for im in orders] == [dict(zip(["c1", "c2", "c3"], s, strict=True)) for s in o.details["scores"]]
    asyncio.run(r.score([prompt], [[clean, wrong]]))  # re-scoring the same group replaces the row
    assert len(store.fetchall("judgment_by_rubric_set", {"rubric_set_id": RUBRICS.id})) == 1
