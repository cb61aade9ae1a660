"""Checkpoints: the saved LoRA loads into a tiny FluxPipeline; resume is bit-exact on CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rpo_train_helper import train

from arr_core.rewards import CallableRewarder
from arr_core.rpo.checkpoint import LORA_WEIGHT_NAME, find_checkpoint
from arr_core.rpo.config import TrainConfig

_TIMING = {"time_rollout_s", "time_judge_s", "time_train_s", "time_step_s", "images_per_s", "judge_latency_s"}

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(policy={"kind": "toy"}, prompts={"source": "world"},
                                num_steps=4, group_size=2, prompts_per_step=4, rollout_batch_size=2,
                                lr=1e-2, sample_grid_every=0, checkpoint_every=0, lora={"rank": 4, "alpha": 8})
    base.update(kw)
    return TrainConfig.model_validate(base)


def test_saved_lora_loads_into_tiny_flux_pipeline(tmp_path: Path, prompts: list[str], redness_fn: Any) -> None:
    from diffusers import FluxPipeline

    from arr_core.rpo.adapters.flux import FluxPolicy
    from arr_core.rpo.adapters.tiny import tiny_flux_components

    policy = FluxPolicy.from_components(tiny_flux_components(0), height=32, width=32, max_sequence_length=16)
    res = train(policy, CallableRewarder(redness_fn), prompts, _cfg(steps=1), tmp_path / "run", progress=None)
    assert (res.lora_dir / LORA_WEIGHT_NAME).is_file()

    pipe = FluxPipeline(**tiny_flux_components(0))  # same seed → same base weights as the trained policy

    def generate() -> torch.Tensor:
        return torch.from_numpy(pipe("a red circle", height=32, width=32, num_inference_steps=2,
                                     max_sequence_length=16, output_type="np",
                                     generator=torch.Generator().manual_seed(0)).images)

    before = generate()
    pipe.load_lora_weights(res.lora_dir)
    after = generate()
    assert (after - before).abs().max() > 1e-4, "loading the LoRA did not change the pipeline's output"

    # The loaded transformer computes what the trained one does (alpha/rank kept via the metadata).
    x = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(1))
    cond = policy.encode(prompts[:2])
    with torch.no_grad():
        ours = policy.velocity(x, torch.full((2,), 0.6), cond)
        pipe_policy = FluxPolicy(pipe, height=32, width=32, max_sequence_length=16)
        theirs = pipe_policy.velocity(x, torch.full((2,), 0.6), cond)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)


def _lora_tensors(policy: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in policy.transformer.named_parameters() if "lora_" in n}


def _metrics(path: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in json.loads(ln).items() if k not in _TIMING} for ln in path.read_text().splitlines()]


def test_resume_is_bit_exact(tmp_path: Path, make_policy: Any, prompts: list[str], redness_fn: Any) -> None:
    # accumulate 2 → 3 optimizer steps per training step with off-policy ratios; warm-up makes the LR
    # scheduler state matter; 6 prompts with 4 per step cross an epoch boundary of the prompt stream.
    kw: dict[str, Any] = dict(accumulate=2, warmup_steps=3, checkpoint_every=2)
    rewarder = CallableRewarder(redness_fn)
    straight = make_policy(seed=0)
    train(straight, rewarder, prompts[:6], _cfg(steps=4, **kw), tmp_path / "a", progress=None)

    first = make_policy(seed=0)
    train(first, rewarder, prompts[:6], _cfg(steps=2, **kw), tmp_path / "b", progress=None)
    second = make_policy(seed=0)
    lines: list[str] = []
    train(second, rewarder, prompts[:6], _cfg(steps=4, **kw), tmp_path / "b", resume=tmp_path / "b",
          progress=lines.append)
    assert any("resumed from" in ln and "step_000002" in ln for ln in lines)

    a, b = _lora_tensors(straight), _lora_tensors(second)
    assert a.keys() == b.keys() and a
    for n in a:
        assert torch.equal(a[n], b[n]), n
    assert _metrics(tmp_path / "a" / "metrics.jsonl") == _metrics(tmp_path / "b" / "metrics.jsonl")
    assert max(m["ratio_max"] for m in _metrics(tmp_path / "a" / "metrics.jsonl")) != 1.0
    assert find_checkpoint(tmp_path / "b").name == "step_000004"


def test_resume_refuses_a_different_config(tmp_path: Path, make_policy: Any, prompts: list[str],
                                           redness_fn: Any) -> None:
    train(make_policy(seed=0), CallableRewarder(redness_fn), prompts, _cfg(steps=1), tmp_path, progress=None)
    with pytest.raises(ValueError, match="different training config"):
        train(make_policy(seed=0), CallableRewarder(redness_fn), prompts, _cfg(steps=2, lr=1e-3), tmp_path,
              resume=tmp_path, progress=None)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        find_checkpoint(tmp_path / "nowhere")


@pytest.mark.parametrize("kind", ["sd3_cfg", "qwen_edit"])
def test_trainer_and_lora_export_with_sd3_and_qwen_edit_adapters(kind: str, tmp_path: Path) -> None:
    """The real SD3 (true CFG inside ``velocity``) and Qwen-Image-Edit (source images as conditions)
    adapters train on-policy (ratio 1, KL 0 at init) and their pipelines load the exported LoRA."""
    from PIL import Image

    from arr_core.sim.rewards import FixedLatencyRewarder

    if kind == "sd3_cfg":
        from arr_core.rpo.adapters.sd3 import SD3Policy
        from arr_core.rpo.adapters.tiny import tiny_sd3_components

        def make() -> Any:
            return SD3Policy.from_components(tiny_sd3_components(0), height=32, width=32, guidance_scale=4.0)
        sources = None
    else:
        from arr_core.rpo.adapters.qwen_edit import QwenEditPolicy
        from arr_core.rpo.adapters.tiny import tiny_qwen_edit_components

        def make() -> Any:
            return QwenEditPolicy.from_components(tiny_qwen_edit_components(0), height=32, width=32)
        sources = [Image.new("RGB", (32, 32), (200, 10, 10)), Image.new("RGB", (32, 32), (10, 10, 200))]
    policy = make()
    res = train(policy, FixedLatencyRewarder(0.0, 0), ["make it blue", "add a cat"], _cfg(steps=1), tmp_path,
                sources=sources, progress=None)
    m = json.loads(res.metrics_path.read_text().splitlines()[0])
    assert m["ratio_mean"] == 1.0 and m["ratio_max"] == 1.0 and m["kl"] == 0.0 and m["grad_norm"] > 0

    fresh = make()
    x = policy.initial_latents(2, torch.Generator().manual_seed(0))
    cond = policy.encode(["make it blue", "add a cat"], sources)
    sig = torch.full((2,), 0.6)
    with torch.no_grad():
        base = fresh.velocity(x, sig, cond)
        fresh.pipe.load_lora_weights(res.lora_dir)
        loaded = fresh.velocity(x, sig, cond)
        ours = policy.velocity(x, sig, cond)
    assert (loaded - base).abs().max() > 1e-6, "the LoRA did not change the loaded pipeline's transformer"
    torch.testing.assert_close(loaded, ours, rtol=1e-5, atol=1e-6)
