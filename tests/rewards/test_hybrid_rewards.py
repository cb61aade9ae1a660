"""Hybrid rewards (arr_core.judge.hybrid): hand-derived normalisation and sums, required vs optional
failures, the confidence gate, the http component against the reference server over real HTTP, the
VLM checkpoints, and a one-component hybrid equal to the single judge."""

from __future__ import annotations

import asyncio
import math

import pytest
from PIL import Image
from reward_scenes import render_pair as _renders  # tests/rewards is on sys.path (pytest prepend mode)

from arr_core.errors import EndpointError
from arr_core.judge.http_reward import HttpComponent, check_scores_body
from arr_core.judge.hybrid import (
    CheckerComponent,
    HybridRewarder,
    JudgeComponent,
    Part,
    QuestionsComponent,
    normalise,
)
from arr_core.judge.reward import JudgeRewarder
from arr_core.rewards import detail_metrics
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.sim.rewards import scene_verdict
from arr_core.sim.scene_vlm import SceneVLM
from arr_core.vlm.client import VLMClient
from arr_core.vlm.server import ServedApp, free_port

A, B = Image.new("RGB", (8, 8), (10, 0, 0)), Image.new("RGB", (8, 8), (0, 10, 0))



def _table(values: dict[tuple[str, int], object]):
    """A verifier answering from a table keyed by (prompt, red channel of the image)."""
    def fn(prompt: str, image: Image.Image):
        key = (prompt, image.getpixel((0, 0))[0])
        if key not in values:
            raise ValueError(f"cannot check {prompt!r}")
        return values[key]
    return fn



def _run(rewarder, prompts, groups, sources=None):
    return asyncio.run(rewarder.score(prompts, groups, sources))


# ---- hand-derived values --------------------------------------------------------------------------

def test_normalisations_by_hand():
    sd = math.sqrt(2 / 3)  # population std of 1, 2, 3
    assert normalise([1, 2, 3], "zscore") == pytest.approx([-1 / sd, 0.0, 1 / sd])
    assert normalise([4, 4], "zscore") == [0.0, 0.0]
    assert normalise([3, 1, 3], "rank") == pytest.approx([0.75, 0.0, 0.75])  # (1 lower + ½·1 equal) / 2
    assert normalise([0.2, 0.9, 0.5], "rank") == pytest.approx([0.0, 1.0, 0.5])
    assert normalise([0.2, 0.9], "none") == [0.2, 0.9]
    with pytest.raises(ValueError, match="normalisation must be one of"):
        normalise([1, 2], "minmax")


def test_weighted_sum_of_normalised_components():
    quality = CheckerComponent("quality", _table({("p", 10): 0.2, ("p", 0): 0.8}))
    verifier = CheckerComponent("verifier", _table({("p", 10): 5.0, ("p", 0): 1.0}))
    r = HybridRewarder([Part(quality, weight=2.0), Part(verifier, weight=1.0, normalize="rank")])
    [o] = _run(r, ["p"], [[A, B]])
    # quality: 2·[0.2, 0.8] = [0.4, 1.6]; verifier ranks [1, 0] → [1.4, 1.6]: B wins
    assert o.outcome == "win" and o.ranks == [2, 1] and o.rewards == pytest.approx([1.4, 1.6])
    m = o.details["metrics"]
    assert m["reward/quality/mean"] == pytest.approx(0.5) and m["reward/verifier/mean"] == pytest.approx(3.0)
    assert m["reward/quality/failed"] == 0.0 and m["reward/verifier/gated"] == 0.0
    # equal sums tie (no advantage)
    r = HybridRewarder([Part(quality, weight=1.0), Part(CheckerComponent("flip", _table({("p", 10): 0.6, ("p", 0): 0.0})))])
    [o] = _run(r, ["p"], [[A, B]])
    assert o.outcome == "tie" and o.rewards == [0.0, 0.0]


def test_required_failure_fails_the_step_optional_failure_scores_zero_and_is_counted():
    good = CheckerComponent("good", _table({("p", 10): 1.0, ("p", 0): 0.0, ("q", 10): 0.0, ("q", 0): 1.0}))
    partial = CheckerComponent("partial", _table({("p", 10): 0.0, ("p", 0): 3.0}))  # cannot check prompt q
    req = HybridRewarder([Part(good), Part(partial, required=True)])
    [o_p] = _run(req, ["p"], [[A, B]])  # every group checkable: the sum
    assert o_p.outcome == "win" and o_p.rewards == pytest.approx([1.0, 3.0])
    assert o_p.details["metrics"]["reward/partial/failed_step"] == 0.0 and "step_failed" not in o_p.details
    # group q fails the required component: no group of the batch gets a verdict, p's neither
    o_p, o_q = _run(req, ["p", "q"], [[A, B], [A, B]])
    assert o_p.outcome == o_q.outcome == "abstain" and o_p.rewards == o_q.rewards == [0.0, 0.0]
    why = o_p.details["step_failed"]
    assert why == o_q.details["step_failed"] == o_p.details["error"]
    assert why.startswith("required reward component partial (checker ") and "on group 1 ('q')" in why
    assert "cannot check 'q'" in why
    assert detail_metrics([o_p, o_q])["reward/partial/failed_step"] == 1.0
    assert req.stats["failed_steps"] == 1 and req.stats["abstained_groups"] == 2
    assert req.stats["components"]["partial"]["failed"] == 1
    opt = HybridRewarder([Part(good), Part(partial, required=False)])
    o_p, o_q = _run(opt, ["p", "q"], [[A, B], [A, B]])
    assert o_q.outcome == "win" and o_q.rewards == pytest.approx([0.0, 1.0])  # 'partial' adds 0 to group q
    assert detail_metrics([o_p, o_q])["reward/partial/failed"] == 0.5  # one group of two
    assert opt.stats["abstained_groups"] == 0 and opt.stats["components"]["partial"]["failed"] == 1


def test_min_confidence_gate_drops_low_confidence_verdicts():
    sure = CheckerComponent("sure", _table({("p", 10): (1.0, 0.9), ("p", 0): (0.0, 0.95)}))
    shaky = CheckerComponent("shaky", _table({("p", 10): (0.0, 0.3), ("p", 0): (5.0, 0.9)}))
    r = HybridRewarder([Part(sure), Part(shaky, required=False, min_confidence=0.5)])
    [o] = _run(r, ["p"], [[A, B]])
    assert o.rewards == pytest.approx([1.0, 0.0]) and o.details["metrics"]["reward/shaky/gated"] == 1.0
    assert r.stats["components"]["shaky"] == {"failed": 0, "gated": 1}
    r = HybridRewarder([Part(sure), Part(shaky, min_confidence=0.5)])  # required: the group abstains
    [o] = _run(r, ["p"], [[A, B]])
    assert o.outcome == "abstain" and "confidence 0.3 below min_confidence 0.5" in o.details["error"]
    # a gated verdict is dropped, not failed: only its group abstains, the step is not failed
    sure_q = CheckerComponent("sure", _table({("p", 10): (1.0, 0.9), ("p", 0): (0.0, 0.95),
                                              ("q", 10): (0.0, 0.9), ("q", 0): (1.0, 0.9)}))
    shaky_q = CheckerComponent("shaky", _table({("p", 10): (0.0, 0.3), ("p", 0): (5.0, 0.9),
                                                ("q", 10): (1.0, 0.9), ("q", 0): (0.0, 0.9)}))
    r = HybridRewarder([Part(sure_q), Part(shaky_q, min_confidence=0.5)])
    o_p, o_q = _run(r, ["p", "q"], [[A, B], [A, B]])
    assert o_p.outcome == "abstain" and o_q.outcome == "tie" and "step_failed" not in o_p.details
    assert r.stats["failed_steps"] == 0
    r = HybridRewarder([Part(sure), Part(shaky, min_confidence=0.2)])  # above the bar: kept
    [o] = _run(r, ["p"], [[A, B]])
    assert o.rewards == pytest.approx([1.0, 5.0])


def test_construction_errors():
    c = CheckerComponent("c", lambda p, im: 1.0)
    with pytest.raises(ValueError, match="at least one component"):
        HybridRewarder([])
    with pytest.raises(ValueError, match=r"names must be unique; \['c'\]"):
        HybridRewarder([Part(c), Part(c)])
    with pytest.raises(ValueError, match="min_confidence must be in"):
        Part(c, min_confidence=1.5)


# ---- http: the reference server over real HTTP ---------------------------------------------------

def test_http_component_against_the_reference_server(reference_app):
    prompt, clean, wrong = _renders(7)
    with ServedApp(reference_app) as srv:
        comp = HttpComponent("rm", srv.url + "/score")
        r = HybridRewarder([Part(comp, min_confidence=0.0)])
        [o] = _run(r, [prompt], [[clean, wrong]])
        expect = [scene_verdict(prompt, clean), scene_verdict(prompt, wrong)]
        assert o.details["components"]["rm"]["values"] == pytest.approx([e[0] for e in expect])
        assert o.details["components"]["rm"]["confidences"] == pytest.approx([e[1] for e in expect])
        assert o.outcome == "win" and o.ranks == [1, 2]
        # a prompt the model cannot score: 422 naming the field, an EndpointError naming the URL
        with pytest.raises(EndpointError, match=r"endpoint http://127\.0\.0\.1:\d+/score failed: HTTP 422.*prompts\[0\]"):
            _run(r, ["not a scene prompt"], [[clean, wrong]])
        assert srv.app.state.requests == 2  # a 4xx is not retried


def test_http_endpoint_down_fails_the_step_when_required_and_counts_when_optional():
    url = f"http://127.0.0.1:{free_port()}/score"  # nothing listens there
    down = HttpComponent("rm", url, timeout_s=2.0, retries=0)
    ok = CheckerComponent("c", _table({("p", 10): 1.0, ("p", 0): 0.0}))
    with pytest.raises(EndpointError, match=f"reward component rm: endpoint {url} failed: ConnectError"):
        _run(HybridRewarder([Part(ok), Part(down)]), ["p"], [[A, B]])
    r = HybridRewarder([Part(ok), Part(down, required=False)])
    [o] = _run(r, ["p"], [[A, B]])
    assert o.outcome == "win" and o.rewards == [1.0, 0.0] and o.details["metrics"]["reward/rm/failed"] == 1.0


def test_scores_body_checks():
    assert check_scores_body({"scores": [1, 2.5]}, 2) == ([1.0, 2.5], None)
    for body, msg in (({"score": [1]}, 'no "scores"'), ({"scores": [1]}, "1 entries for 2"),
                      ({"scores": [1, float("nan")]}, "finite"), ({"scores": [1, 2], "confidences": [0.5, 2]}, r"in \[0, 1\]")):
        with pytest.raises(ValueError, match=msg):
            check_scores_body(body, 2)


# ---- VLM-bound components -------------------------------------------------------------------------

def test_vlm_questions_share_of_yes():
    prompt, clean, wrong = _renders(8)
    client = VLMClient(SceneVLM(seed=0), cache_mode="off")
    qs = {prompt: [f"Does the image show {prompt}?", "Is the image sharp?"]}
    comp = QuestionsComponent("tiif", client, lambda p: qs[p])
    [res] = asyncio.run(comp.evaluate([prompt], [[clean, wrong]], None))
    assert res.values == [1.0, 0.5]  # the wrong count fails the first question; both renders are sharp
    [res] = asyncio.run(comp.evaluate(["a prompt without questions"], [[clean, wrong]], None))
    assert res.values is None and "no questions for prompt" in res.error


RUBRICS = RubricSet.from_text("Rubric 1:\nTheme: Counts\n- Tip: Each object appears exactly the number of times "
                              "the caption states.\n")


def test_one_component_hybrid_equals_the_single_judge():
    batch = [_renders(s) for s in (11, 12, 13)]
    prompts, groups = [b[0] for b in batch], [[b[1], b[2]] for b in batch]
    single = _run(JudgeRewarder(VLMClient(SceneVLM(seed=0), cache_mode="off"), RUBRICS, "t2i"), prompts, groups)
    judge = JudgeRewarder(VLMClient(SceneVLM(seed=0), cache_mode="off"), RUBRICS, "t2i")
    hybrid = _run(HybridRewarder([Part(JudgeComponent("rubric_judge", judge))]), prompts, groups)
    assert [(o.outcome, o.rewards) for o in hybrid] == [(o.outcome, o.rewards) for o in single]
