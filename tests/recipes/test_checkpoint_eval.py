"""Held-out scores at training checkpoints (issue 25 item 2): the evaluation recipe scores the LoRA of
the training run's saved checkpoints like the trained one, the selection is bounded by
``evaluate.checkpoints``, the evaluation task's cache key follows that setting, and the run report
draws the curve. A real (tiny) toy training writes the checkpoints."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from arr_core.bench.run_report import training_section
from arr_core.errors import InputError
from arr_core.recipes import evaluate as recipe
from arr_core.recipes import rpo
from arr_core.rpo.checkpoint import MANIFEST
from arr_core.rpo.config import TrainConfig
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.vlm.config import VLMConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RUBRICS = RubricSet.from_text("Rubric 1:\nTheme: Objects\n- Tip: All objects the caption asks for appear in the image.\n")
EVAL = {"prompts": 6, "prompt_seed": 3, "images_per_prompt": 2, "num_steps": 2, "win_rate": False, "report": True}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[TrainConfig, Path]:
    """The shipped toy policy (its images pass the checker often enough for scores to differ) trained 3
    steps with a checkpoint after each (steps 1, 2, 3)."""
    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = TrainConfig.model_validate({
        "policy": {"kind": "toy", "dtype": "float32", "device": "cpu"},
        "prompts": {"source": "world", "count": 8}, "steps": 3, "num_steps": 2, "prompts_per_step": 2,
        "rollout_batch_size": 2, "sample_grid_every": 0, "checkpoint_every": 1, "lr": 5e-2,
        "lora": {"rank": 2, "alpha": 4}})
    res = rpo.run(cfg, tmp / "run", rubric_set=RUBRICS, progress=None)
    return cfg, res.lora_dir


def test_one_point_per_checkpoint_equal_to_scoring_its_lora_directly(trained, tmp_path) -> None:
    import numpy as np
    from PIL import Image

    from arr_core.bench.checkers import SceneChecker
    from arr_core.bench.generation import (
        load_lora,
        lora_digest,
        prompt_noise_keys,
        run_geneval,
        sample_images,
    )
    from arr_core.sim.toy_policy import ToyPolicy

    cfg, lora = trained
    ckpt = lora.parent / "checkpoints"
    assert lora_digest(ckpt / "step_000001" / "lora") != lora_digest(lora)  # training moved the LoRA
    policy = ToyPolicy.load(None)
    ev = recipe.run(cfg, {**EVAL, "checkpoints": "all"}, lora, tmp_path / "eval", vlm=VLMConfig(), run_key="k" * 40,
                    policy=policy, n_boot=200)
    assert [c["step"] for c in ev.checkpoint_scores] == [1, 2, 3]
    assert ev.metrics["geneval.checkpoints_scored"] == 3
    assert len({c["point"] for c in ev.checkpoint_scores}) > 1  # the curve moves: the check below can fail
    # score each checkpoint's LoRA directly (fresh policy, same noise and checker); the newest one is the
    # final LoRA, whose scores are the trained ones (asserted below)
    for c in ev.checkpoint_scores[:-1]:
        direct = ToyPolicy.load(None)
        load_lora(direct, c["lora"])
        images = sample_images(direct, ev.items, tmp_path / f"direct{c['step']}", n_per_prompt=2, steps=2,
                               noise_key=prompt_noise_keys(ev.items))
        sc = run_geneval(ev.items, images, SceneChecker(), n_boot=200, seed=0, simulated=True).details["scores"]
        assert (c["point"], c["lo"], c["hi"], c["image_mean"]) == (
            sc["overall"]["point"], sc["overall"]["lo"], sc["overall"]["hi"], sc["prompt_mean"])
        got = sorted((tmp_path / "eval" / "samples" / f"step_{c['step']:06d}").glob("*.png"))
        assert len(got) == 12 and all(np.array_equal(np.asarray(Image.open(a)), np.asarray(
            Image.open(tmp_path / f"direct{c['step']}" / a.name))) for a in got)
    # the newest checkpoint is the final LoRA (same bytes): its point is the trained score
    assert ev.checkpoint_scores[-1]["point"] == ev.metrics["geneval.trained"]
    # the caller's policy carries the final LoRA again afterwards
    again = sample_images(policy, ev.items, tmp_path / "again", n_per_prompt=2, steps=2,
                          noise_key=prompt_noise_keys(ev.items))
    assert all(np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
               for it in ev.items for a, b in zip(again[it.id], ev.trained[it.id], strict=True))
    rows = ev.checkpoint_metrics()
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[0]["geneval.checkpoint"] == ev.checkpoint_scores[0]["point"]
    table = ev.result.table("held-out score at training checkpoints")
    assert [r[0] for r in table.rows] == [1, 2, 3]


def test_selection_is_bounded_and_skips_incomplete_checkpoints(trained, tmp_path) -> None:
    _, lora = trained
    src = lora.parent / "checkpoints"
    root = tmp_path / "checkpoints"
    for s in range(1, 4):
        shutil.copytree(src / f"step_{s:06d}", root / f"step_{s:06d}")
    steps = lambda which: [s for s, _ in recipe.select_checkpoints(root, which)]  # noqa: E731
    assert steps("all") == [1, 2, 3] and steps("last") == [3] and steps("none") == [] == steps(0)
    assert steps(1) == [3] and steps(2) == [1, 3] and steps(4) == [1, 2, 3]
    (root / "step_000003" / MANIFEST).unlink()  # a kill while it was written: never scored
    assert steps("all") == [1, 2] and steps("last") == [2]
    assert recipe.select_checkpoints(tmp_path / "absent", "all") == []
    for bad in ("some", -1, True):
        with pytest.raises(InputError, match="evaluate.checkpoints"):
            recipe.select_checkpoints(root, bad)


def test_pipeline_config_field_and_the_evaluation_cache_key_follow_the_setting() -> None:
    from types import SimpleNamespace

    from flows.config import EvaluateStage, demo_config
    from tasks.evaluate import evaluate_policy

    assert EvaluateStage().checkpoints == recipe.DEFAULT_CHECKPOINTS
    assert EvaluateStage(checkpoints="all").checkpoints == "all"
    with pytest.raises(ValueError, match="checkpoints"):
        EvaluateStage(checkpoints=-2)
    with pytest.raises(ValueError):
        EvaluateStage(checkpoints="first")
    demo = demo_config()
    assert demo.training.config.checkpoint_every > 0  # the demo saves checkpoints, so its report has a curve

    def key(checkpoints: object) -> str:
        params = {"train_key": "t" * 40, "eval_cfg": EvaluateStage(checkpoints=checkpoints).model_dump(mode="json"),
                  "rubric_set_id": "rs-x", "vlm": VLMConfig().model_dump(mode="json"), "prompt_version": "v1"}
        return evaluate_policy.cache_key_fn(SimpleNamespace(task=evaluate_policy), params)

    assert key(4) == key(4) and len({key(4), key(2), key("all"), key("last")}) == 4


def test_run_report_draws_the_checkpoint_curve_with_the_base_level() -> None:
    pts = [{"step": 8, "point": 0.4, "lo": 0.3, "hi": 0.5}, {"step": 4, "point": 0.35, "lo": 0.25, "hi": 0.45}]
    sec = training_section([{"step": 1, "kl": 0.0}], pts, base_score=0.3)
    plot = next(p for p in sec.plots if p.title == "Held-out score at checkpoints")
    assert plot.series[0].x == [4, 8] and plot.series[0].y == [0.35, 0.4] and plot.series[0].lo == [0.25, 0.3]
    assert plot.hlines == [(0.3, "base")]
    # no per-step metrics: the curve is still drawn
    assert any(p.title == "Held-out score at checkpoints" for p in training_section([], pts).plots)
