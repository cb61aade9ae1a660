"""The ``gpu`` tier (``pytest -m gpu``; ``scripts/gpu_check.sh`` runs it): RPO on a CUDA device in bf16
with FLUX-class components built from configs (no downloads), a tiny one and a medium one (2 + 4
blocks, 4 heads × 64). Every test is skipped, with the reason, where no CUDA device is visible.

Checks: on-policy ratio 1 ± 1e-3 and KL 0 at init in bf16; ``auto`` attention never enables cuDNN
SDPA and the medium backward runs; the exported LoRA loads with ``FluxPipeline.load_lora_weights``;
compile on/off agree; exact resume (N steps vs N/2 + N/2) within bf16 tolerance; a 2-step FSDP run
on 2 GPUs (skipped with the reason on fewer); the denoising loop and a trained step make no host
synchronisation (``torch.cuda.set_sync_debug_mode("error")``); ``rollout_batch_size: auto`` measures
one image's memory and trains like the size it chose.

This file is also the FSDP worker: ``torchrun --nproc_per_node 2 test_gpu.py OUT``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

HERE = Path(__file__).resolve().parent
CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not CUDA, reason="needs a CUDA device: torch.cuda.is_available() is False")]
SIDE = 128  # image side: 8 × 8 packed tokens with the tiny VAE
TOL = dict(rtol=2e-2, atol=2e-3)  # bf16 LoRA weights (8 mantissa bits)


def _components(medium: bool, seed: int = 0) -> dict[str, Any]:
    """``FluxPipeline`` keyword arguments: the tiny components, with a medium transformer if asked."""
    from diffusers import FluxTransformer2DModel

    from arr_core.rpo.adapters.tiny import tiny_flux_components

    comps = tiny_flux_components(seed)
    if medium:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            comps["transformer"] = FluxTransformer2DModel(
                patch_size=1, in_channels=16, num_layers=2, num_single_layers=4, attention_head_dim=64,
                num_attention_heads=4, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
                axes_dims_rope=(16, 24, 24)).eval()
    return comps


def _policy(medium: bool = False, device: str = "cuda") -> Any:
    from arr_core.rpo.adapters.flux import FluxPolicy

    return FluxPolicy.from_components(_components(medium), device=device, dtype=torch.bfloat16, height=SIDE,
                                      width=SIDE, max_sequence_length=16)


def _cfg(**kw: Any) -> Any:
    from arr_core.rpo.config import TrainConfig

    base: dict[str, Any] = dict(policy={"kind": "flux", "folder": "tiny"}, prompts={"source": "file", "path": "x"},
                                num_steps=4, group_size=2, prompts_per_step=4, rollout_batch_size=2, lr=1e-3,
                                sample_grid_every=0, checkpoint_every=0, lora={"rank": 4, "alpha": 8},
                                compile=False, steps=1)
    base.update(kw)
    return TrainConfig.model_validate(base)


@pytest.fixture()
def run(prompts: list[str], redness_fn: Any) -> Any:
    """``run(policy, cfg, out, **train_kw)`` → (result, metrics), rewarding redness."""
    return lambda policy, cfg, out, **kw: _train(policy, cfg, out, prompts, redness_fn, **kw)


def _train(policy: Any, cfg: Any, out: Path, prompts: list[str], score: Any,
           **kw: Any) -> tuple[Any, list[dict[str, Any]]]:
    from rpo_train_helper import train

    from arr_core.rewards import CallableRewarder

    kw.setdefault("progress", print)
    res = train(policy, CallableRewarder(score), prompts, cfg, out, **kw)
    return res, [json.loads(ln) for ln in res.metrics_path.read_text().splitlines()]


def _lora(policy: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().cpu() for n, p in policy.transformer.named_parameters() if "lora_" in n}


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for n in a:
        torch.testing.assert_close(a[n], b[n], **TOL, msg=n)


def test_auto_attention_excludes_cudnn_and_the_medium_backward_runs() -> None:
    from arr_core.rpo.kernels import attention_context

    policy = _policy(medium=True)
    x = policy.initial_latents(2, torch.Generator("cuda").manual_seed(0)).requires_grad_(True)
    cond = policy.encode(["a red circle", "two blue squares"])
    with attention_context("auto", "cuda"):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
        v = policy.velocity(x, torch.full((2,), 0.7, device="cuda"), cond)
        v.square().mean().backward()
    torch.cuda.synchronize()
    assert torch.isfinite(v).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("medium", [False, True], ids=["tiny", "medium"])
def test_bf16_on_policy_ratio_one_and_kl_zero_at_init(medium: bool, tmp_path: Path, run: Any) -> None:
    _, metrics = run(_policy(medium), _cfg(), tmp_path)
    m = metrics[0]
    assert abs(m["ratio_mean"] - 1) <= 1e-3 and abs(m["ratio_max"] - 1) <= 1e-3, m
    assert m["kl"] <= 1e-6 and m["grad_norm"] > 0, m


def test_lora_loads_with_flux_pipeline(tmp_path: Path, run: Any) -> None:
    from diffusers import FluxPipeline

    from arr_core.rpo.adapters.flux import FluxPolicy

    policy = _policy()
    res, _ = run(policy, _cfg(lr=1e-2), tmp_path)
    pipe = FluxPipeline(**_components(False)).to("cuda", torch.bfloat16)
    x = policy.initial_latents(2, torch.Generator("cuda").manual_seed(1))
    cond = policy.encode(["a red circle", "a blue square"])
    sigma = torch.full((2,), 0.6, device="cuda")
    loaded = FluxPolicy(pipe, height=SIDE, width=SIDE, max_sequence_length=16)
    with torch.no_grad():
        before = loaded.velocity(x, sigma, cond)
        pipe.load_lora_weights(res.lora_dir)
        after = loaded.velocity(x, sigma, cond)
        ours = policy.velocity(x, sigma, cond)
    assert (after - before).abs().max() > 0, "loading the LoRA did not change the pipeline's transformer"
    torch.testing.assert_close(after, ours, rtol=2e-2, atol=2e-2)


def test_compile_on_and_off_agree(tmp_path: Path, run: Any) -> None:
    runs, metrics = {}, {}
    for comp in (False, True):
        policy = _policy(medium=True)
        _, metrics[comp] = run(policy, _cfg(steps=2, compile=comp), tmp_path / str(comp))
        runs[comp] = _lora(policy)
    _close(runs[True], runs[False])
    m = metrics[True][0]
    # Compiled, the adapter-on and adapter-off graphs are different fused kernels, so the KL at init
    # is rounding-sized rather than 0 (1.1e-6 measured with bf16 on CPU inductor).
    assert m["time_warmup_s"] > 0 and abs(m["ratio_max"] - 1) <= 1e-3 and m["kl"] <= 1e-4, m


def test_exact_resume_within_bf16_tolerance(tmp_path: Path, run: Any) -> None:
    kw: dict[str, Any] = dict(accumulate=4, warmup_steps=2, checkpoint_every=2)
    straight = _policy()
    run(straight, _cfg(steps=4, **kw), tmp_path / "a")
    run(_policy(), _cfg(steps=2, **kw), tmp_path / "b")
    resumed = _policy()
    run(resumed, _cfg(steps=4, **kw), tmp_path / "b", resume=tmp_path / "b")
    _close(_lora(straight), _lora(resumed))


def test_no_host_sync_in_the_denoising_loop_or_a_trained_step() -> None:
    """The CUDA side of tests/rpo/test_rollout_syncs.py: any synchronising call between the return of
    ``initial_latents`` and the call of ``decode`` (the loop), or in a trained step's forward and
    backward, raises."""
    from arr_core.rpo.lora import add_lora
    from arr_core.rpo.sde import StepTable
    from arr_core.rpo.trainer import rollout, set_eval_mode, step_terms

    policy = _policy(medium=True)
    set_eval_mode(policy)
    peft = add_lora(policy.transformer, rank=4, alpha=8, targets=list(policy.lora_targets))
    sig = policy.sigmas(4).to("cuda", torch.float32)
    table = StepTable(sig, kind="flow_grpo", a=0.7, eta=0.3)
    table.check_density(range(3))
    init, dec = policy.initial_latents, policy.decode

    def initial_latents(*a: Any, **k: Any) -> torch.Tensor:
        out = init(*a, **k)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        return out

    def decode(*a: Any, **k: Any) -> Any:
        torch.cuda.set_sync_debug_mode("default")
        return dec(*a, **k)

    policy.initial_latents, policy.decode = initial_latents, decode
    try:
        ro = rollout(policy, ["a red circle", "two blue squares"], None, group_size=2, sigmas=sig,
                     generator=torch.Generator("cuda").manual_seed(0), noise="flow_grpo", a=0.7, eta=0.3,
                     shared_initial_noise=False, bf16=False, table=table)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        lp, kl = step_terms(policy, peft, ro, 1, sig, noise="flow_grpo", a=0.7, eta=0.3, bf16=False, need_ref=True,
                            table=table)
        (lp.mean() + kl.mean()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert ro.latents.shape[0] == 5 and len(ro.images) == 4
    assert torch.isfinite(ro.log_probs).all() and torch.isfinite(lp).all()


def test_auto_rollout_batch_size_measures_and_trains_like_the_chosen_size(tmp_path: Path, run: Any) -> None:
    lines: list[str] = []
    auto_policy = _policy(medium=True)
    _, metrics = run(auto_policy, _cfg(rollout_batch_size="auto"), tmp_path / "auto", progress=lines.append)
    chosen = [ln for ln in lines if ln.startswith("rollout_batch_size auto:")]
    print(chosen)  # the size and the measured figures, for the log
    assert len(chosen) == 1 and "GiB per image (probe)" in chosen[0], lines
    # 4 prompts per step: at most 2 per batch; a medium FLUX at 128 px fits twice on any CUDA device
    assert metrics[0]["rollout_batch_size"] == 2 and abs(metrics[0]["ratio_max"] - 1) <= 1e-3, metrics[0]
    fixed_policy = _policy(medium=True)
    run(fixed_policy, _cfg(rollout_batch_size=2), tmp_path / "fixed", progress=None)
    _close(_lora(auto_policy), _lora(fixed_policy))  # the probe left no trace


@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason=f"FSDP needs 2 GPUs; {torch.cuda.device_count()} visible")
def test_two_step_fsdp_run_on_two_gpus(tmp_path: Path) -> None:
    from rpo_train_helper import torchrun

    torchrun(Path(__file__).resolve(), str(tmp_path), timeout=300)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for n in r0["lora"]:
        assert torch.equal(r0["lora"][n], r1["lora"][n]), n  # gathered full tensors agree
    assert any("lora_B" in n and t.abs().sum() > 0 for n, t in r0["lora"].items()), "no update happened"
    assert all(abs(m["ratio_mean"] - 1) <= 1e-3 for m in r0["metrics"][:1]) and len(r0["metrics"]) == 2
    assert (tmp_path / "run" / "lora" / "pytorch_lora_weights.safetensors").is_file()


def _fsdp_worker(out: Path) -> None:
    sys.path.insert(0, str(HERE))
    from conftest import PROMPTS, redness  # run as a script: this folder's conftest is the one on the path

    from arr_core.rpo.checkpoint import _full
    from arr_core.rpo.distributed import cleanup, init_from_env

    ctx = init_from_env("nccl")
    policy = _policy(device=f"cuda:{ctx.local_rank}")
    res, metrics = _train(policy, _cfg(steps=2, distributed="fsdp", compile=False), out / "run", PROMPTS, redness,
                          dist_ctx=ctx)
    lora = {n: _full(p).float() for n, p in res.model.named_parameters() if p.requires_grad}  # gathers shards
    torch.save({"lora": lora, "metrics": metrics if ctx.is_main else []}, out / f"rank{ctx.rank}.pt")
    cleanup(ctx)


if __name__ == "__main__":
    _fsdp_worker(Path(sys.argv[1]))
    from arr_core.rpo.distributed import exit_after_distributed_run

    exit_after_distributed_run(0)
