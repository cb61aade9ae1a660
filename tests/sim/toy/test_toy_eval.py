"""`paired_delta`: the change between two GenEval-format results on the same prompt-images, with an
interval over per-prompt differences; `failure_kind`: why a prompt-image failed."""

from __future__ import annotations

import math

import pytest

from arr_core.sim.toy_eval import failure_kind, paired_delta


def _result(passed, seeds=(0, 1), sampler="ode"):
    per_prompt = [sum(p) / len(p) for p in passed]
    return {"passed": passed, "seeds": list(seeds), "sampler": sampler,
            "overall": sum(per_prompt) / len(per_prompt)}


def test_identical_results_change_by_exactly_zero():
    r = _result([[True, False], [False, False], [True, True]])
    d = paired_delta(r, r)
    assert d == {"delta": 0.0, "ci95": [0.0, 0.0], "n_prompts": 3}


def test_delta_and_interval_are_the_per_prompt_differences():
    before = _result([[False, False], [True, False], [True, True], [False, False]])
    after = _result([[True, False], [True, True], [True, True], [False, False]])
    d = paired_delta(before, after)
    diffs = [0.5, 0.5, 0.0, 0.0]
    m = sum(diffs) / 4
    half = 1.96 * math.sqrt(sum((x - m) ** 2 for x in diffs) / 3 / 4)
    assert d["delta"] == pytest.approx(after["overall"] - before["overall"]) == pytest.approx(m)
    assert d["ci95"] == pytest.approx([m - half, m + half])


def test_shared_noise_makes_the_paired_interval_narrower_than_either_accuracy():
    # 40 prompts whose outcome mostly repeats between the runs (same noise): a few flip to pass
    before = _result([[k % 3 == 0, k % 4 == 0] for k in range(40)])
    after = _result([[k % 3 == 0 or k % 5 == 1, k % 4 == 0] for k in range(40)])
    d = paired_delta(before, after)
    assert d["delta"] > 0 and d["ci95"][0] > 0  # five prompts gained, none lost: the change is clear
    per_prompt = [sum(p) / 2 for p in before["passed"]]
    m = sum(per_prompt) / 40
    unpaired_half = 1.96 * math.sqrt(sum((x - m) ** 2 for x in per_prompt) / 39 / 40)
    assert d["ci95"][1] - d["ci95"][0] < 2 * unpaired_half


def test_unpaired_results_are_refused():
    r = _result([[True, False], [False, True]])
    with pytest.raises(ValueError, match="not paired"):
        paired_delta(r, _result([[True, False]]))
    with pytest.raises(ValueError, match="not paired"):
        paired_delta(r, _result([[True], [False]], seeds=(0,)))
    with pytest.raises(ValueError, match="seeds or sampler differ"):
        paired_delta(r, _result([[True, False], [False, True]], sampler="sde(a=0.7)"))
    with pytest.raises(ValueError, match="passed"):
        paired_delta({k: v for k, v in r.items() if k != "passed"}, r)


def test_failure_kind_names_empty_images_and_the_first_failed_clause():
    from arr_core.sim.world.check import check_spec
    from arr_core.sim.world.detect import Detection
    from arr_core.sim.world.grammar import parse_prompt

    spec = parse_prompt("a photo of a red circle")
    blue = [Detection("circle", "blue", 0.5, 0.5, 0.2, 0.2, 0.04, 0.9)]
    assert failure_kind(check_spec(spec, []), []) == "empty"
    assert failure_kind(check_spec(spec, blue), blue) == "colour"
    red = [Detection("circle", "red", 0.5, 0.5, 0.2, 0.2, 0.04, 0.9)]
    with pytest.raises(ValueError, match="failed"):
        failure_kind(check_spec(spec, red), red)


def test_geneval_accuracy_aggregates_like_geneval_mean_over_tags(monkeypatch):
    """`overall` and its interval come from the one GenEval aggregation (`bench.generation.geneval_scores`):
    the mean over tags, not over prompt-images; `image_mean` keeps the latter."""
    from arr_core.bench.generation import geneval_scores
    from arr_core.sim import toy_eval
    from arr_core.sim.toy_policy import ToyPolicy
    from arr_core.sim.world import parse_prompt

    specs = [parse_prompt(p) for p in ("a photo of a red circle", "a photo of a blue square",
                                       "a photo of a green triangle", "a photo of two circles")]
    assert [s.tag for s in specs] == ["colors", "colors", "colors", "counting"]
    # The detector verdict by rule: red and blue prompts pass every image, the rest fail.
    monkeypatch.setattr(toy_eval, "_failure", lambda spec, image: None if ("red" in spec.prompt or "blue" in spec.prompt)
                        else "missing")
    policy = ToyPolicy.random(seed=0, layers=1, width=32, head_dim=16, text_layers=1, text_width=32)
    res = toy_eval.geneval_accuracy(policy, specs, seeds=(0, 1), steps=2, n_boot=300)
    assert res["per_tag"] == {"colors": pytest.approx(2 / 3), "counting": 0.0}
    assert res["overall"] == res["tag_mean"] == pytest.approx(1 / 3)  # (2/3 + 0) / 2
    assert res["image_mean"] == pytest.approx(0.5)  # 4 of 8 prompt-images
    agg = geneval_scores([1.0, 1.0, 0.0, 0.0], [s.tag for s in specs], n_boot=300)
    assert res["ci95"] == [agg["overall"]["lo"], agg["overall"]["hi"]]
    assert res["per_tag_ci95"]["counting"] == [0.0, 0.0]
    assert res["passed"] == [[True, True], [True, True], [False, False], [False, False]]
