"""The evaluation recipe: the one composer of a generation benchmark (the pipeline's evaluate task and
`arr eval generate` call it). Toy policy with the scene detector, a tiny real FLUX policy with the VLM's
yes/no questions (offline scene VLM), and the policy specs `arr eval generate` accepts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from arr_core.errors import InputError
from arr_core.recipes import evaluate as recipe
from arr_core.rpo.config import TrainConfig
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.vlm.config import VLMConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RUBRICS = RubricSet.from_text("Rubric 1:\nTheme: Objects\n- Tip: All objects the caption asks for appear in the image.\n")
# A 1-layer, 32-wide toy policy (tests/bench/test_cli.py): same classes as the shipped one.
TINY = {"layers": 1, "width": 32, "head_dim": 16, "text_layers": 1, "text_width": 32}
# 7 prompts: tag i mod 6, so "single_object" has two prompts and the set is not tag-balanced.
EVAL = {"prompts": 7, "prompt_seed": 3, "images_per_prompt": 2, "num_steps": 2, "win_rate": True, "report": True}


def _perturbed_lora(transformer: torch.nn.Module, targets: list[str], folder: Path, scale: float) -> Path:
    from arr_core.rpo.checkpoint import save_lora
    from arr_core.rpo.lora import add_lora

    peft_model = add_lora(transformer, rank=2, alpha=4, targets=targets)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(scale * torch.randn(p.shape, generator=gen))
    save_lora(peft_model, folder)
    return folder


def _cfg(policy: dict, **extra) -> TrainConfig:
    return TrainConfig.model_validate({"policy": {"dtype": "float32", "device": "cpu", **policy},
                                       "prompts": {"source": "world"}, "num_steps": 2, **extra})


def _decisive(base: list[bool], trained: list[bool]) -> float:
    decisive = [t for t, b in zip(trained, base, strict=True) if t != b]
    return sum(decisive) / len(decisive) if decisive else 0.5


def test_toy_run_samples_like_the_scene_world_evaluation_and_aggregates_over_tags(tmp_path) -> None:
    from arr_core.bench.generation import geneval_scores
    from arr_core.sim.toy_eval import geneval_accuracy
    from arr_core.sim.toy_policy import LORA_TARGETS, ToyPolicy
    from arr_core.sim.world import PromptSpec

    folder = ToyPolicy.random(seed=0, **TINY).save(tmp_path / "toy")
    lora = _perturbed_lora(ToyPolicy.load(folder).transformer, LORA_TARGETS, tmp_path / "run" / "lora", 0.05)
    ev = recipe.run(_cfg({"kind": "toy", "folder": str(folder)}), EVAL, lora, tmp_path / "eval", rubric_set=RUBRICS,
                    vlm=VLMConfig(), run_key="k" * 40, policy_id="pol-test")
    assert [it.category for it in ev.items].count("single_object") == 2 and len(ev.items) == 7

    # Same noise as toy_eval.geneval_accuracy (prompt keys, repeats get fresh noise): the same images.
    specs = [PromptSpec.from_geneval(it.meta["geneval"]) for it in ev.items]
    ref = geneval_accuracy(ToyPolicy.load(folder), specs, seeds=(0, 1), steps=2, return_images=True)
    got = [np.asarray(Image.open(p)) for it in ev.items for p in ev.base[it.id]]
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(got, ref["images"], strict=True))
    trained = [np.asarray(Image.open(p)) for it in ev.items for p in ev.trained[it.id]]
    assert any(not np.array_equal(a, b) for a, b in zip(got, trained, strict=True))  # the LoRA is on

    # One aggregation: overall = mean over tags of the per-tag means; the old per-image mean is kept apart.
    gb = ev.result.details["geneval"]["base"]
    per_prompt = [gb.details["per_prompt"][it.id] for it in ev.items]
    assert per_prompt == [sum(p) / 2 for p in ref["passed"]]
    scores = geneval_scores(per_prompt, [it.category for it in ev.items])
    m = ev.metrics
    assert m["geneval.base"] == scores["overall"]["point"] == pytest.approx(ref["overall"])
    assert m["geneval.base"] == pytest.approx(np.mean([m[f"geneval.base.{t}"] for t in ref["per_tag"]]))
    assert m["geneval.base_image_mean"] == pytest.approx(ref["image_mean"])
    assert m["geneval.delta"] == pytest.approx(m["geneval.trained"] - m["geneval.base"])
    assert ev.tables[0].rows[0][1] == scores["overall"]  # the report's interval is the stratified bootstrap

    # Win rates: decisive pairs of the detector's verdicts, the judge over every pair in both orders.
    wr = ev.result.details["winrate"]
    res_b, res_t = wr.details["results"]["base"], wr.details["results"]["trained"]
    flat = [(b.passed, t.passed) for it in ev.items for b, t in zip(res_b[it.id], res_t[it.id], strict=True)]
    assert m["winrate.checker"] == _decisive([b for b, _ in flat], [t for _, t in flat])
    js = wr.details["judgments"]
    wins, losses = sum(j.winner == 0 for j in js), sum(j.winner == 1 for j in js)
    assert m["winrate.judge"] == (wins / (wins + losses) if wins + losses else 0.5)
    assert m["winrate.judge_ties"] == sum(j.outcome != "win" for j in js) / 14
    assert m["vlm_calls"] == 2 * 14  # swap: two orders per pair; the detector asks no VLM
    assert ev.result.config["train_key"] == "k" * 40 and ev.result.rubric_set_id == RUBRICS.id
    w, h = Image.open(ev.base["p000"][0]).size
    assert ev.samples_png is not None and Image.open(ev.samples_png).size == (2 * w, 8 * h)  # 8 pairs


def test_toy_run_without_win_rate_asks_no_vlm(tmp_path) -> None:
    from arr_core.sim.toy_policy import LORA_TARGETS, ToyPolicy

    folder = ToyPolicy.random(seed=0, **TINY).save(tmp_path / "toy")
    lora = _perturbed_lora(ToyPolicy.load(folder).transformer, LORA_TARGETS, tmp_path / "lora", 0.05)
    ev = recipe.run(_cfg({"kind": "toy", "folder": str(folder)}), {**EVAL, "prompts": 2, "win_rate": False}, lora,
                    tmp_path / "eval")
    assert "winrate.checker" in ev.metrics and "winrate.judge" not in ev.metrics and "vlm_calls" not in ev.metrics
    assert ev.result.details["winrate"].details["judgments"] == []


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory) -> Path:
    from arr_core.rpo.adapters.tiny import save_tiny_pipeline

    return save_tiny_pipeline("flux", tmp_path_factory.mktemp("tiny_flux"))


def test_flux_policy_is_evaluated_with_the_vlm_questions(tmp_path, flux_folder) -> None:
    from arr_core.recipes.rpo import build_policy

    cfg = _cfg({"kind": "flux", "folder": str(flux_folder)}, resolution=32)
    lora = _perturbed_lora(build_policy(cfg, torch.device("cpu")).transformer,
                           ["attn.to_q", "attn.to_k", "attn.to_v"], tmp_path / "lora", 0.5)
    ev = recipe.run(cfg, {**EVAL, "prompts": 3, "images_per_prompt": 1}, lora, tmp_path / "eval", rubric_set=RUBRICS,
                    vlm=VLMConfig(), run_key="f" * 40)
    gb, gt = ev.result.details["geneval"]["base"], ev.result.details["geneval"]["trained"]
    assert gb.config["checker"] == "vlm-questions"
    # Every image was asked its prompt's GenEval questions (the scene VLM answers every question).
    for res in (gb, gt):
        for it in ev.items:
            (r,) = res.details["results"][it.id]
            assert not r.abstained and len(r.answers) >= 1
    assert Image.open(ev.base[ev.items[0].id][0]).size == (32, 32)
    assert not np.array_equal(np.asarray(Image.open(ev.base[ev.items[0].id][0])),
                              np.asarray(Image.open(ev.trained[ev.items[0].id][0])))
    # One client checks and judges: 6 images checked + 3 pairs judged in two orders.
    assert ev.metrics["vlm_calls"] == 6 + 2 * 3
    assert ev.metrics["geneval.base"] == pytest.approx(
        np.mean([ev.metrics[f"geneval.base.{it.category}"] for it in ev.items]))
    assert "GenEval-format accuracy (vlm-questions)" in [s.title for s in ev.report.sections]
    assert ev.report.notes  # the offline scene VLM answered: the report says so


def test_load_policy_builds_a_real_generator_from_a_yaml_policy_section(tmp_path, flux_folder) -> None:
    from arr_core.rpo.adapters.flux import FluxPolicy

    spec = tmp_path / "train.yaml"
    spec.write_text(f"policy:\n  kind: flux\n  folder: {flux_folder}\n  dtype: float32\n  device: cpu\n"
                    "resolution: 32\nprompts:\n  source: world\n")
    policy, peft_model, pid = recipe.load_policy(str(spec))
    assert isinstance(policy, FluxPolicy) and peft_model is None and pid.startswith("pol-")
    assert recipe.load_policy(str(spec))[2] == pid


def test_editing_policies_and_bad_specs_are_refused_by_name(tmp_path) -> None:
    folder = tmp_path / "qwen"
    folder.mkdir()
    with pytest.raises(InputError, match="edits images") as e:
        recipe.run(_cfg({"kind": "qwen_edit", "folder": str(folder)},
                        prompts={"source": "file", "path": str(tmp_path / "edits.jsonl")}),
                   EVAL, tmp_path / "lora", tmp_path / "eval")
    assert e.value.field == "policy.kind"
    spec = tmp_path / "edit.yaml"
    spec.write_text(f"kind: qwen_edit\nfolder: {folder}\n")
    with pytest.raises(InputError, match="edits images"):
        recipe.load_policy(str(spec))
    with pytest.raises(ValueError, match="--policy must be"):
        recipe.load_policy(str(tmp_path / "missing"))
    with pytest.raises(InputError, match="--checker must be"):
        recipe.check_generate_args("geneval", "detector", None)
    with pytest.raises(InputError, match="pass --lora"):
        recipe.check_generate_args("winrate", "scene", None)
