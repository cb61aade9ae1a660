"""Rubric-reward DPO (``arr_core/rpo/dpo.py``) on the tiny real FLUX adapter (built from config: VAE,
CLIP, T5, transformer; real peft LoRA), CPU fp32: the loss and its gradient against a hand-written
computation, log 2 at initialisation, an optimizer step that moves only LoRA weights, exact resume,
and pairs from judge labelling (ties dropped and counted) and from dataset records (margins)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from arr_core.rpo import dpo
from arr_core.rpo.adapters.flux import FluxPolicy
from arr_core.rpo.adapters.tiny import tiny_flux_components
from arr_core.rpo.lora import add_lora, base_parameters, lora_parameters


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _flux() -> FluxPolicy:
    pol = FluxPolicy.from_components(tiny_flux_components(0), height=32, width=32, max_sequence_length=16)
    for m in pol.pipe.components.values():
        if isinstance(m, torch.nn.Module):
            m.eval()
    return pol


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB")


def _pairs(n: int) -> list[dpo.DPOPair]:
    return [dpo.DPOPair(f"a red circle {k}", _image(2 * k), _image(2 * k + 1)) for k in range(n)]


def _perturb_lora(model: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in lora_parameters(model):
            p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.usefixtures("one_thread")
def test_loss_and_gradient_equal_a_hand_written_reference() -> None:
    pol = _flux()
    peft = add_lora(pol.transformer, rank=4, alpha=8, targets=pol.lora_targets)
    peft.eval()
    _perturb_lora(peft)  # policy != reference, so the loss is not at its initial value
    pairs = _pairs(2)
    x_w = pol.encode_latents([p.winner for p in pairs])
    x_l = pol.encode_latents([p.loser for p in pairs])
    assert x_w.shape == pol.initial_latents(2, torch.Generator().manual_seed(0)).shape
    cond = pol.encode([p.prompt for p in pairs])
    g = torch.Generator().manual_seed(3)
    sigma = dpo.sample_sigmas(2, g)
    noise = torch.randn(x_w.shape, generator=g)
    beta, weight = 7.0, torch.tensor([0.5, 1.5])
    params = [p for _, p in lora_parameters(peft)]

    e_w, e_l, r_w, r_l = dpo.pair_errors(pol, peft, x_w, x_l, cond, sigma, noise)
    loss, logits = dpo.dpo_loss(e_w, e_l, r_w, r_l, beta, weight)
    grads = torch.autograd.grad(loss, params)

    # By hand: one image per forward, the formula written out.
    def err(k: int, x0: torch.Tensor, ref: bool) -> torch.Tensor:
        ck = {key: v[k:k + 1] for key, v in cond.items()}
        s, eps = sigma[k:k + 1], noise[k:k + 1]
        xt = (1 - s) * x0[k:k + 1] + s * eps
        if ref:
            with torch.no_grad(), peft.disable_adapter():
                v = pol.velocity(xt, s, ck)
        else:
            v = pol.velocity(xt, s, ck)
        return ((v - (eps - x0[k:k + 1])) ** 2).mean()

    terms = []
    for k in range(2):
        d_pol = err(k, x_w, False) - err(k, x_l, False)
        d_ref = err(k, x_w, True) - err(k, x_l, True)
        terms.append(-weight[k] * torch.log(torch.sigmoid(-beta * (d_pol - d_ref))))
    ref_loss = (terms[0] + terms[1]) / 2
    ref_grads = torch.autograd.grad(ref_loss, params)

    lv, rv = float(loss.detach()), float(ref_loss.detach())
    assert abs(lv - rv) < 1e-5 * max(1.0, abs(rv))
    assert lv != pytest.approx(math.log(2), abs=1e-4)  # the perturbation moved it
    num = sum(float((a - b).abs().max()) for a, b in zip(grads, ref_grads, strict=True))
    scale = max(float(b.abs().max()) for b in ref_grads)
    assert scale > 0 and num / scale < 1e-4
    assert logits.shape == (2,)


@pytest.mark.usefixtures("one_thread")
def test_loss_is_log2_at_lora_init() -> None:
    pol = _flux()
    peft = add_lora(pol.transformer, rank=4, alpha=8, targets=pol.lora_targets)
    peft.eval()
    pairs = _pairs(3)
    x_w, x_l = pol.encode_latents([p.winner for p in pairs]), pol.encode_latents([p.loser for p in pairs])
    g = torch.Generator().manual_seed(0)
    e_w, e_l, r_w, r_l = dpo.pair_errors(pol, peft, x_w, x_l, pol.encode([p.prompt for p in pairs]),
                                         dpo.sample_sigmas(3, g, "logit_normal"), torch.randn(x_w.shape, generator=g))
    loss, logits = dpo.dpo_loss(e_w, e_l, r_w, r_l, beta=2500.0)
    assert torch.equal(e_w, r_w) and torch.equal(e_l, r_l)  # B = 0: the policy is the reference bit for bit
    assert torch.count_nonzero(logits) == 0
    assert float(loss.detach()) == pytest.approx(math.log(2), abs=1e-7)


def _args(steps: int, **kw) -> dpo.DPOArgs:
    base = dict(steps=steps, config_digest="test", pairs_per_step=4, micro_batch=2, beta=500.0, lora_rank=4,
                lora_alpha=8.0, lr=1e-3, checkpoint_every=2, warmup_steps=1)
    base.update(kw)
    return dpo.DPOArgs(**base)


@pytest.mark.usefixtures("one_thread")
def test_an_optimizer_step_moves_only_lora_weights(tmp_path: Path) -> None:
    pol = _flux()
    before = {n: p.detach().clone() for n, p in pol.transformer.named_parameters()}
    res = dpo.train_dpo(pol, _pairs(4), _args(1), tmp_path / "run", progress=None)
    m = res.last_metrics
    assert math.isfinite(m["loss"]) and m["loss"] == pytest.approx(math.log(2), abs=1e-6)  # first step at init
    assert m["grad_norm"] > 0
    lora = dict(lora_parameters(res.model))
    changed_b = [n for n, p in lora.items() if "lora_B" in n and not torch.equal(p, torch.zeros_like(p))]
    assert changed_b, "no LoRA B weight moved"
    for n, p in base_parameters(res.model):
        key = n.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(p, before[key]), f"base weight {key} changed"
    assert (tmp_path / "run" / "lora" / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.usefixtures("one_thread")
def test_exact_resume_gives_identical_lora_bytes(tmp_path: Path) -> None:
    pairs = _pairs(6)  # 4 pairs per step over 6 pairs: the second step crosses an epoch boundary
    dpo.train_dpo(_flux(), pairs, _args(4), tmp_path / "straight", progress=None)
    dpo.train_dpo(_flux(), pairs, _args(2), tmp_path / "split", progress=None)
    dpo.train_dpo(_flux(), pairs, _args(4), tmp_path / "split", resume=tmp_path / "split", progress=None)
    name = "lora/pytorch_lora_weights.safetensors"
    a, b = (tmp_path / "straight" / name).read_bytes(), (tmp_path / "split" / name).read_bytes()
    assert a == b
    la = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    def strip(line: str) -> dict:
        return {k: v for k, v in json.loads(line).items() if not k.startswith(("time", "pairs_per"))}

    assert [strip(x) for x in la] == [strip(x) for x in lb]
    with pytest.raises(ValueError, match="different training config"):
        dpo.train_dpo(_flux(), pairs, _args(5, config_digest="other"), tmp_path / "split",
                      resume=tmp_path / "split", progress=None)


def test_judge_labelled_pairs_drop_ties_and_count_them() -> None:
    """The offline scene VLM judge in both orders: a faithful render beats an empty canvas; two
    copies of one image get disagreeing orders (position bias) or a tie: dropped and counted."""
    from arr_core.recipes.rpo import build_rewarder, label_pairs
    from arr_core.rpo.config import TrainConfig
    from arr_core.sim.world import render, scene_from_spec
    from arr_core.sim.world.grammar import parse_prompt
    from arr_core.vlm.config import VLMConfig, build_client

    prompt = "a photo of a red circle"
    good = render(scene_from_spec(parse_prompt(prompt), np.random.default_rng(0)))
    blank = Image.new("RGB", good.size, "white")
    cfg = TrainConfig.model_validate({"policy": {"kind": "toy"}, "prompts": {"source": "world"},
                                      "reward": {"mode": "rank", "order": "swap"}})
    rewarder, _ = build_rewarder(cfg, None, build_client(VLMConfig(), None))
    pairs, counts = label_pairs(rewarder, [prompt, prompt], [[blank, good], [good, good.copy()]], None)
    assert counts == {"candidates": 2, "kept": 1, "tie": 1, "abstain": 0}
    assert pairs[0].winner is good and pairs[0].loser is blank and pairs[0].margin is None
    with pytest.raises(ValueError, match="composite-score margin"):
        dpo.apply_weighting(pairs, "margin")


def test_dataset_pairs_best_over_worst_with_margin_weights(tmp_path: Path) -> None:
    from arr_core.data.records import ImageRef, PreferenceRecord

    refs = []
    for k in range(3):
        path = tmp_path / f"{k}.png"
        _image(k).save(path)
        refs.append(ImageRef.from_uri(str(path)))
    recs = [PreferenceRecord("t2i", "p0", [refs[0], refs[1], refs[2]], label_score=[0.2, 0.9, 0.5], idx=0),
            PreferenceRecord("t2i", "p1", [refs[0], refs[1]], label_score=[0.4, 0.1], idx=1),
            PreferenceRecord("t2i", "p2", [refs[0], refs[1]], label_score=[0.3, 0.3], idx=2),
            PreferenceRecord("t2i", "p3", [refs[2], refs[0]], label_rank=[2, 1], idx=3)]
    pairs, counts = dpo.pairs_from_records(recs)
    assert counts == {"candidates": 4, "kept": 3, "tie": 1, "abstain": 0}
    assert [p.prompt for p in pairs] == ["p0", "p1", "p3"]
    assert np.array_equal(np.asarray(pairs[0].winner), np.asarray(_image(1)))
    assert np.array_equal(np.asarray(pairs[0].loser), np.asarray(_image(0)))
    assert pairs[2].margin is None
    with pytest.raises(ValueError, match="pair 2"):
        dpo.apply_weighting(pairs, "margin")
    weighted = dpo.apply_weighting(pairs[:2], "margin")  # margins 0.7 and 0.3 → mean 0.5
    assert [round(p.weight, 6) for p in weighted] == [1.4, 0.6]
    saved = dpo.save_pairs(weighted, tmp_path / "pairs")
    back = dpo.load_pairs(saved.parent)
    assert [(p.prompt, p.weight, p.margin) for p in back] == [(p.prompt, p.weight, p.margin) for p in weighted]
    assert np.array_equal(np.asarray(back[0].winner), np.asarray(weighted[0].winner))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("kind", ["sd3", "qwen_edit"])
def test_one_dpo_step_on_the_sd3_and_qwen_edit_adapters(kind: str, tmp_path: Path) -> None:
    """``encode_latents`` gives the latents the adapter samples (shape of its noise), and a DPO step
    runs from log 2 (an edit pair conditioned on its source image, as the adapter's ``encode``)."""
    if kind == "sd3":
        from arr_core.rpo.adapters.sd3 import SD3Policy
        from arr_core.rpo.adapters.tiny import tiny_sd3_components

        pol = SD3Policy.from_components(tiny_sd3_components(), height=32, width=32, max_sequence_length=16)
        pairs = _pairs(2)
    else:
        from arr_core.rpo.adapters.qwen_edit import QwenEditPolicy
        from arr_core.rpo.adapters.tiny import tiny_qwen_edit_components

        pol = QwenEditPolicy.from_components(tiny_qwen_edit_components(), height=32, width=32)
        pairs = [dpo.DPOPair(f"make it red {k}", _image(2 * k), _image(2 * k + 1), source=_image(10 + k))
                 for k in range(2)]
    x0 = pol.encode_latents([p.winner for p in pairs])
    assert x0.shape == pol.initial_latents(2, torch.Generator().manual_seed(0)).shape and torch.isfinite(x0).all()
    res = dpo.train_dpo(pol, pairs, _args(1, pairs_per_step=2, micro_batch=2), tmp_path / kind, progress=None)
    assert res.last_metrics["loss"] == pytest.approx(math.log(2), abs=1e-6) and res.last_metrics["grad_norm"] > 0


def test_pairs_labelled_by_the_per_criterion_judge_carry_composite_margins() -> None:
    """``reward.mode: scores``: the margin of a kept pair is the difference of the two composites, so
    ``weighting: margin`` works on generated pairs; a pair of identical images ties and is dropped."""
    from arr_core.recipes.rpo import build_rewarder, label_pairs
    from arr_core.rpo.config import TrainConfig
    from arr_core.rubrics.rubric_set import RubricSet
    from arr_core.sim.world import apply_defects, render, scene_from_spec
    from arr_core.sim.world.grammar import sample_spec
    from arr_core.vlm.config import VLMConfig, build_client

    rs = RubricSet.from_text("Rubric 1:\nTheme: Counts\n- Tip: Each object appears exactly the number of times "
                             "the caption states.\n")
    prompts, groups = [], []
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        spec = sample_spec(rng, "counting")
        clean = render(scene_from_spec(spec, rng), 64, seed=seed)
        wrong = render(apply_defects(scene_from_spec(spec, rng), spec, ["wrong_count"], rng), 64, seed=seed + 1)
        prompts.append(spec.prompt)
        groups.append([wrong, clean])
    prompts.append(prompts[0])
    groups.append([groups[0][1], groups[0][1].copy()])
    cfg = TrainConfig.model_validate({"policy": {"kind": "toy"}, "prompts": {"source": "world"},
                                      "reward": {"mode": "scores", "default_scale": "binary"}})
    rewarder, _ = build_rewarder(cfg, rs, build_client(VLMConfig(), None))
    pairs, counts = label_pairs(rewarder, prompts, groups, None)
    assert counts == {"candidates": 3, "kept": 2, "tie": 1, "abstain": 0}
    assert all(p.winner is g[1] and p.margin == pytest.approx(1.0) for p, g in zip(pairs, groups[:2], strict=True))
    assert [p.weight for p in dpo.apply_weighting(pairs, "margin")] == [1.0, 1.0]
