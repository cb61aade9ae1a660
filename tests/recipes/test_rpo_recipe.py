"""The RPO recipe: the one composer of a training run (``arr train``, the pipeline task and the
benchmarks all call it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arr_core.errors import InputError
from arr_core.judge.checklist import ChecklistRewarder
from arr_core.judge.reward import JudgeRewarder
from arr_core.recipes import rpo as recipe
from arr_core.rpo.config import TrainConfig
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.vlm.config import VLMConfig, build_client

RUBRICS = RubricSet.from_text("Rubric 1:\nTheme: Faithfulness\n- Tip: The image is fully faithful to the caption.\n\n"
                              "Rubric 2:\nTheme: Objects\n- Tip: All objects the caption asks for appear in the image.\n")


def _cfg(experimental: dict | None = None, **reward) -> TrainConfig:
    return TrainConfig.model_validate({"policy": {"kind": "toy"}, "prompts": {"source": "world"},
                                       "reward": reward, "experimental": experimental or {}})


def test_build_rewarder_honours_the_judge_mode() -> None:
    client = build_client(VLMConfig(), None)
    rank, desc = recipe.build_rewarder(_cfg(), RUBRICS, client)
    assert isinstance(rank, JudgeRewarder) and RUBRICS.id in desc and "order swap" in desc
    gated, _ = recipe.build_rewarder(_cfg(mode="checklist", hard_themes=["Faithfulness"]), RUBRICS, client)
    assert isinstance(gated, ChecklistRewarder) and gated.hard == [True, False] and not gated.hard_only
    only, desc = recipe.build_rewarder(_cfg({"hard_only": True}, mode="checklist", hard_themes=["Faithfulness"]),
                                       RUBRICS, client)
    assert only.hard_only and desc.endswith("only")
    with pytest.raises(InputError, match="checks rubrics"):
        recipe.build_rewarder(_cfg(mode="checklist"), None, client)
    with pytest.raises(InputError, match=r"\['Colour'\] not in rubric set") as e:
        recipe.build_rewarder(_cfg(mode="checklist", hard_themes=["Colour"]), RUBRICS, client)
    assert e.value.field == "reward.hard_themes"


def test_judge_vlm_prefers_reward_vlm_then_the_stage_default() -> None:
    default = VLMConfig(backend="openai", model="m", base_url="http://127.0.0.1:9/v1")
    assert recipe.judge_vlm(_cfg(), default) is default
    assert recipe.judge_vlm(_cfg(), None) == VLMConfig()
    assert recipe.judge_vlm(_cfg(vlm={"backend": "scene", "concurrency": 3}), default).concurrency == 3


def test_trainer_args_are_plain_values_from_the_config() -> None:
    cfg = TrainConfig.model_validate({"policy": {"kind": "toy"}, "prompts": {"source": "world"}, "num_steps": 6,
                                      "trained_window": [1, 3], "sde_steps": "trained", "lora": {"rank": 4},
                                      "experimental": {"noise_block": 4}})
    args = recipe.trainer_args(cfg)
    assert args.trained_steps == (1, 2) and args.sde_mask == (False, True, True, False, False, False)
    assert (args.lora_rank, args.noise_block, args.num_steps) == (4, 4, 6)
    assert (args.judged_image, args.attention_backend, args.compile) == ("clean_estimate", "auto", "auto")
    det = recipe.trainer_args(cfg.model_copy(update={"judged_image": "deterministic_last_step", "compile": False,
                                                      "attention_backend": "math", "max_inflight_judge_batches": 0}))
    assert det.sde_mask == (False, True, True, False, False, False)  # the last step was Euler already
    assert (det.judged_image, det.compile, det.attention_backend, det.max_inflight_judge_batches) == \
        ("deterministic_last_step", False, "math", 0)
    full = recipe.trainer_args(TrainConfig.model_validate({"policy": {"kind": "toy"}, "prompts": {"source": "world"},
                                                           "num_steps": 3, "judged_image": "deterministic_last_step"}))
    assert full.sde_mask == (True, True, False)
    assert args.config_digest == recipe.config_digest(cfg)
    assert json.loads(args.config_json) == json.loads(cfg.model_dump_json())


def test_policy_fingerprint_hashes_every_file_of_the_shipped_toy_checkpoint() -> None:
    from arr_core.sim.toy_policy import shipped_checkpoint_dir

    files = [p for p in shipped_checkpoint_dir().rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)  # weights live in sub-folders
    assert recipe.policy_fingerprint({"kind": "toy"}).startswith("pol-")


def test_run_trains_the_toy_policy_with_the_judge(tmp_path: Path) -> None:
    cfg = TrainConfig.model_validate({
        "policy": {"kind": "toy", "device": "cpu"}, "prompts": {"source": "world", "count": 8},
        "steps": 1, "num_steps": 3, "prompts_per_step": 2, "rollout_batch_size": 2, "sample_grid_every": 0,
        "checkpoint_every": 0, "lora": {"rank": 2, "alpha": 4}})
    lines: list[str] = []
    res = recipe.run(cfg, tmp_path / "run", rubric_set=RUBRICS, progress=lines.append)
    assert (res.lora_dir / "pytorch_lora_weights.safetensors").is_file() and res.steps == 1
    assert lines[0].startswith("policy toy on cpu; reward: judge scene:") and RUBRICS.id in lines[0]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["reward"]["mode"] == "rank"
