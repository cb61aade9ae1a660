"""RPO step cost on a FLUX.1-dev-sized transformer with random weights (GPU), or a tiny one (CPU smoke).

    python benchmarks/rpo_step.py                 # GPU: FLUX.1-dev size, bf16, LoRA r16, 512², 8 steps, G=2
    python benchmarks/rpo_step.py --tiny          # CPU smoke run of the same code path (seconds)

What runs: ``arr_core.recipes.rpo.run`` (hence ``arr_core.rpo.trainer.train``) for ``--steps`` training
steps with a ``FixedLatencyRewarder`` standing in for the judge (``--judge-latency`` s per call), on a
``FluxTransformer2DModel`` with FLUX.1-dev's config (19 double + 38 single blocks, 24 heads × 128,
joint_attention_dim 4096, pooled 768, in_channels 64, guidance embedding) and FLUX's VAE decoder shape
(``AutoencoderKL``, 16 latent channels), all random (no download). Text encoders are not run: each
prompt gets seeded random T5-shaped (512 × 4096) and CLIP-pooled (768) embeddings, so the figures
cover sampling, decoding, judging and the update only.

Two configurations run one after the other on freshly built models, and are printed side by side:

- ``default``: the project's defaults (compile ``auto``: on for CUDA, with its warm-up left out of the
  step times; attention ``auto``: never cuDNN; the judge overlapped with sampling and training;
  rollout batch ``--rollout-batch-size``, a number or ``auto``: chosen from free memory and one
  image's measured peak, reported with its reason as ``rollout_batch_choice``);
- ``reference``: the released code's pattern: no compile, a blocking judge per pair
  (``max_inflight_judge_batches: 0``), rollout batch 1 (one prompt's G images per forward).

Reported per configuration (the first step of each is warm-up and left out of the means): seconds
split into rollout / judge wait / train, images per second, peak GPU memory, MFU; then the speed-up
(default img/s ÷ reference img/s).

FLOPs: counted, not estimated — ``torch.utils.flop_counter.FlopCounterMode`` over one transformer
forward at batch 1 (F_fwd, includes attention) and one forward + backward to the latents with frozen
weights (F_fwd + F_bwd; the LoRA weight gradients add < 1 %), inside the same attention context as
training. Model FLOPs of one RPO step =
  b·G · [ n_steps · F_fwd                           (rollout)
          + |trained| · (F_fwd + F_bwd + F_fwd·[β>0]) ]  (policy fwd+bwd, reference fwd)
where b = prompts per step; gradient-checkpointing recomputation and the VAE are not counted.
MFU = model FLOPs / (step seconds × a peak): the datasheet's dense bf16 peak (989 TFLOP/s for
H100/H200 SXM, or ``--peak-tflops``), and a measured ceiling — the bf16 TFLOP/s of a short 8192³
matmul benchmark on the same GPU. On CPU (``--tiny``) neither applies and MFU is reported as n/a.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arr_core.recipes import rpo as recipe  # noqa: E402
from arr_core.rpo.config import TrainConfig  # noqa: E402
from arr_core.rpo.kernels import attention_context  # noqa: E402
from arr_core.rpo.policy import Cond  # noqa: E402
from arr_core.sim.rewards import FixedLatencyRewarder  # noqa: E402

FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                guidance_embeds=True, axes_dims_rope=(16, 56, 56))
FLUX_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16,
                norm_num_groups=32)
TINY = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(4, 6, 6))
TINY_VAE = dict(block_out_channels=(16, 16, 32, 32), layers_per_block=1, latent_channels=4, norm_num_groups=8)
FLUX_ATTN = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
             "attn.add_v_proj", "attn.to_add_out"]
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "B200": 2250.0}


class RandomFluxPolicy:
    """A ``Policy`` over a random FLUX transformer + VAE decoder, with seeded random text embeddings."""

    name = "random-flux"
    lora_targets = FLUX_ATTN

    def __init__(self, tcfg: dict[str, Any], vcfg: dict[str, Any], side: int, text_len: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        from diffusers import AutoencoderKL, FluxTransformer2DModel

        torch.manual_seed(0)
        prev = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # build directly in the target dtype on the target device
        try:
            with torch.device(device):
                self.transformer = FluxTransformer2DModel(**tcfg)
                self.vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                                         up_block_types=("UpDecoderBlock2D",) * 4, use_quant_conv=False,
                                         use_post_quant_conv=False, **vcfg)
        finally:
            torch.set_default_dtype(prev)
        self.transformer.eval()
        self.vae.eval()
        self.device, self.dtype, self.side, self.text_len = device, dtype, side, text_len
        self.c = vcfg["latent_channels"]
        self.lat = side // 8  # VAE 8× downsampling; packed 2×2 → (lat/2)² tokens of 4c
        half = self.lat // 2
        ids = torch.zeros(half, half, 3)
        ids[..., 1] = torch.arange(half)[:, None]
        ids[..., 2] = torch.arange(half)[None, :]
        self.img_ids = ids.reshape(-1, 3).to(device, dtype)
        self.txt_ids = torch.zeros(text_len, 3, device=device, dtype=dtype)
        self.d_txt, self.d_pool = tcfg["joint_attention_dim"], tcfg["pooled_projection_dim"]

    def encode(self, prompts: list[str], conditions: list[Image.Image] | None = None) -> Cond:
        embs, pools = [], []
        for p in prompts:
            g = torch.Generator().manual_seed(int(hashlib.sha256(p.encode()).hexdigest()[:8], 16))
            embs.append(torch.randn(self.text_len, self.d_txt, generator=g))
            pools.append(torch.randn(self.d_pool, generator=g))
        return {"prompt_embeds": torch.stack(embs).to(self.device, self.dtype),
                "pooled": torch.stack(pools).to(self.device, self.dtype)}

    def initial_latents(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        n = (self.lat // 2) ** 2
        return torch.randn(batch, n, 4 * self.c, generator=generator, device=self.device)

    def sigmas(self, num_steps: int) -> torch.Tensor:
        # FLUX: linspace(1, 1/n, n) with dynamic shift mu from the image token count, then a final 0.
        seq = (self.lat // 2) ** 2
        mu = 0.5 + (1.15 - 0.5) * (seq - 256) / (4096 - 256)
        s = torch.linspace(1.0, 1.0 / num_steps, num_steps, dtype=torch.float64)
        s = math.exp(mu) / (math.exp(mu) + (1 / s - 1))
        return torch.cat([s, torch.zeros(1, dtype=torch.float64)]).float()

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        b = latents.shape[0]
        return self.transformer(hidden_states=latents.to(self.dtype), timestep=sigma.to(self.dtype),
                                guidance=torch.full((b,), 3.5, device=self.device, dtype=self.dtype),
                                pooled_projections=cond["pooled"], encoder_hidden_states=cond["prompt_embeds"],
                                txt_ids=self.txt_ids, img_ids=self.img_ids, return_dict=False)[0].float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        b, half = latents.shape[0], self.lat // 2
        x = latents.reshape(b, half, half, self.c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, self.c, self.lat, self.lat)
        img = self.vae.decode(x.to(self.dtype), return_dict=False)[0].float()
        arr = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]

    def describe(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "params": sum(p.numel() for p in self.transformer.parameters())}


def count_flops(policy: RandomFluxPolicy, attention_backend: str = "auto") -> tuple[float, float]:
    """(F_fwd, F_bwd) of one transformer call at batch 1, counted by FlopCounterMode, with the SDPA
    kernels training uses (cuDNN attention crashed this backward on an H200)."""
    with attention_context(attention_backend, policy.device):
        return _count_flops(policy)


def _count_flops(policy: RandomFluxPolicy) -> tuple[float, float]:
    from torch.utils.flop_counter import FlopCounterMode

    x = policy.initial_latents(1, torch.Generator(device=policy.device).manual_seed(0))
    cond = policy.encode(["flop count"])
    sig = torch.full((1,), 0.5, device=policy.device)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        policy.velocity(x, sig, cond)
    fwd = float(fc.get_total_flops())
    # Frozen base weights (as under LoRA): the backward computes activation gradients only.
    flags = [p.requires_grad for p in policy.transformer.parameters()]
    policy.transformer.requires_grad_(False)
    xg = x.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as fc:
        policy.velocity(xg, sig, cond).float().square().mean().backward()
    for p, f in zip(policy.transformer.parameters(), flags, strict=True):
        p.requires_grad_(f)
    return fwd, float(fc.get_total_flops()) - fwd


def matmul_ceiling_tflops(device: torch.device, n: int = 8192, iters: int = 20) -> float | None:
    """bf16 TFLOP/s of ``iters`` n × n × n matmuls on a CUDA device (after 3 warm-up ones); None on CPU."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * iters / (start.elapsed_time(end) / 1e3) / 1e12


# The released code's pattern: no compile, the judge blocking per pair, one prompt's G images per forward.
REFERENCE = {"compile": False, "max_inflight_judge_batches": 0, "rollout_batch_size": 1}
_MEANS = ("time_step_s", "time_rollout_s", "time_judge_s", "time_train_s", "images_per_s")


def run_config(name: str, base: dict[str, Any], overrides: dict[str, Any], make_policy: Any, prompts: list[str],
               judge_latency: float, flops: tuple[float, float], peaks: dict[str, float | None],
               cuda: bool) -> dict[str, Any]:
    """One configuration on a freshly built policy: train, self-check, summarise."""
    cfg = TrainConfig.model_validate({**base, **overrides})
    t0 = time.perf_counter()
    policy = make_policy()
    build_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    print(f"--- {name}: compile {cfg.compile}, rollout batch {cfg.rollout_batch_size}, judge in flight "
          f"{cfg.max_inflight_judge_batches or 'blocking'}")
    choice: list[str] = []

    def progress(line: str) -> None:
        print(line)
        if line.startswith("rollout_batch_size auto:"):
            choice.append(line.split(":", 1)[1].strip())

    with tempfile.TemporaryDirectory() as tmp:
        res = recipe.run(cfg, Path(tmp) / "run", policy=policy, prompts=prompts, progress=progress,
                         rewarder=FixedLatencyRewarder(judge_latency, 0), reward_desc=f"fixed latency {judge_latency}s")
        metrics = [json.loads(ln) for ln in res.metrics_path.read_text().splitlines()]
        assert (res.lora_dir / "pytorch_lora_weights.safetensors").is_file(), "LoRA not saved"
    peak_gb = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    del res, policy
    if cuda:
        torch.cuda.empty_cache()

    # Self-checks: finite, on-policy ratio 1 (accumulate 'all'), KL 0 at init, an update happened.
    # Exact on CPU; on CUDA the with-grad recomputation may pick other kernels, so allow 1e-3; compiled,
    # the adapter-on and adapter-off graphs are different fused kernels, so the KL at init is
    # rounding-sized (1.1e-6 with bf16 on CPU inductor) rather than 0.
    compiled = "time_warmup_s" in metrics[0]
    tol = 0.0 if not cuda else 1e-3
    for m in metrics:
        assert all(math.isfinite(float(v)) for v in m.values()), m
        assert abs(m["ratio_mean"] - 1.0) <= tol and abs(m["ratio_max"] - 1.0) <= tol, m
    assert metrics[0]["kl"] <= (1e-4 if compiled else 0.0 if not cuda else 1e-6), metrics[0]
    assert metrics[0]["grad_norm"] > 0, metrics[0]

    f_fwd, f_bwd = flops
    trained = len(cfg.trained_step_indices())
    n_img = cfg.prompts_per_step * cfg.group_size
    step_flops = n_img * (cfg.num_steps * f_fwd + trained * (f_fwd + f_bwd + (f_fwd if cfg.beta > 0 else 0)))
    timed = metrics[1:] or metrics
    mean = {k: sum(m[k] for m in timed) / len(timed) for k in _MEANS}
    achieved = step_flops / mean["time_step_s"] / 1e12
    mfu = {k: (round(achieved / v, 4) if (v and cuda) else None) for k, v in peaks.items()}
    return {
        "rollout_batch_size": metrics[0]["rollout_batch_size"], "rollout_batch_setting": cfg.rollout_batch_size,
        "rollout_batch_choice": choice[0] if choice else None,
        "max_inflight_judge_batches": cfg.max_inflight_judge_batches,
        "compile": compiled, "time_warmup_s": metrics[0].get("time_warmup_s"),
        "attention_backend": cfg.attention_backend, "gradient_checkpointing": cfg.gradient_checkpointing,
        "build_s": round(build_s, 2), "steps_timed": len(timed), **{k: round(v, 4) for k, v in mean.items()},
        "judge_wait_share": round(mean["time_judge_s"] / mean["time_step_s"], 4),
        "peak_gpu_mem_gb": round(peak_gb, 2) if peak_gb is not None else None,
        "model_flops_per_step": step_flops, "achieved_tflops": round(achieved, 6),
        "mfu_datasheet": mfu["datasheet"], "mfu_matmul": mfu["matmul"],
        "ratio_max": max(m["ratio_max"] for m in metrics), "kl_step1": metrics[0]["kl"],
    }


def side_by_side(runs: dict[str, dict[str, Any]], peaks: dict[str, float | None]) -> str:
    """A plain-text table: one row per figure, one column per configuration."""
    def fmt(v: Any, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    rows = [("s/step", "time_step_s", ".3f"), ("rollout s", "time_rollout_s", ".3f"),
            ("judge wait s", "time_judge_s", ".3f"), ("train s", "time_train_s", ".3f"),
            ("judge wait share", "judge_wait_share", ".3f"), ("img/s", "images_per_s", ".3f"),
            ("rollout batch (prompts)", "rollout_batch_size", "d"), ("peak GPU GB", "peak_gpu_mem_gb", ".1f"), ("achieved TFLOP/s", "achieved_tflops", ".2f"),
            (f"MFU vs datasheet ({fmt(peaks['datasheet'], '.0f')} TFLOP/s)", "mfu_datasheet", ".3f"),
            (f"MFU vs matmul ceiling ({fmt(peaks['matmul'], '.0f')} TFLOP/s)", "mfu_matmul", ".3f"),
            ("compile warm-up s (not timed)", "time_warmup_s", ".1f")]
    names = list(runs)
    width = max(len(r[0]) for r in rows) + 2
    lines = [" " * width + "".join(f"{n:>12}" for n in names)]
    lines += [f"{label:<{width}}" + "".join(f"{fmt(runs[n][key], spec):>12}" for n in names)
              for label, key, spec in rows]
    return "\n".join(lines)


def _batch_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number or 'auto', got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny transformer/VAE on CPU (smoke run)")
    ap.add_argument("--steps", type=int, default=3, help="training steps per configuration (the first is warm-up)")
    ap.add_argument("--resolution", type=int, default=None, help="image side (512; tiny: 64)")
    ap.add_argument("--num-steps", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=2)
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--rollout-batch-size", type=_batch_size, default=2,
                    help="the default configuration's: a number or 'auto' (from free memory)")
    ap.add_argument("--judge-latency", type=float, default=2.0, help="seconds per judged rollout batch")
    ap.add_argument("--no-grad-ckpt", action="store_true")
    ap.add_argument("--configs", default="default,reference", help="which configurations to run, in order")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak dense bf16 TFLOP/s")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    if not names or any(n not in ("default", "reference") for n in names):
        ap.error(f"--configs takes default and/or reference, got {args.configs!r}")

    cuda = torch.cuda.is_available() and not args.tiny
    if not args.tiny and not cuda:
        print("no CUDA device: the FLUX.1-dev-sized run needs a GPU (~24 GB bf16 weights); use --tiny "
              "for a CPU smoke run", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    side = args.resolution or (64 if args.tiny else 512)
    text_len = 16 if args.tiny else 512
    if args.tiny:
        torch.set_num_threads(1)

    def make_policy() -> RandomFluxPolicy:
        return RandomFluxPolicy(TINY if args.tiny else FLUX_DEV, TINY_VAE if args.tiny else FLUX_VAE, side,
                                text_len, device, dtype)

    base = dict(policy={"kind": "flux", "folder": "random-weights"}, prompts={"source": "file", "path": "synthetic"},
                steps=args.steps, resolution=side, num_steps=args.num_steps, group_size=args.group_size,
                prompts_per_step=args.prompts_per_step, rollout_batch_size=args.rollout_batch_size,
                lora={"rank": 16, "alpha": 32}, gradient_checkpointing=not args.no_grad_ckpt and cuda,
                sample_grid_every=0, checkpoint_every=0)
    default_cfg = TrainConfig.model_validate(base)
    probe = make_policy()
    n_params = sum(p.numel() for p in probe.transformer.parameters())
    flops = count_flops(probe, default_cfg.attention_backend)
    del probe
    name = torch.cuda.get_device_name() if cuda else "cpu"
    datasheet = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    peaks = {"datasheet": datasheet if cuda else None, "matmul": matmul_ceiling_tflops(device)}
    prompts = [f"benchmark prompt {k}" for k in range(64)]
    runs: dict[str, dict[str, Any]] = {}
    summary = {
        "device": name, "tiny": args.tiny, "dtype": str(dtype), "torch": torch.__version__,
        "transformer_params": n_params, "resolution": side, "num_steps": default_cfg.num_steps,
        "group_size": default_cfg.group_size, "prompts_per_step": default_cfg.prompts_per_step,
        "trained_steps": len(default_cfg.trained_step_indices()), "judge_latency_s": args.judge_latency,
        "flops_fwd_per_image": flops[0], "flops_bwd_per_image": flops[1],
        "peak_tflops_datasheet": peaks["datasheet"], "matmul_ceiling_tflops":
            round(peaks["matmul"], 1) if peaks["matmul"] is not None else None,
        "configs": runs, "speedup_images_per_s": None,
    }
    for n in names:
        runs[n] = run_config(n, base, {} if n == "default" else REFERENCE, make_policy, prompts,
                             args.judge_latency, flops, peaks, cuda)
        if {"default", "reference"} <= set(runs):
            summary["speedup_images_per_s"] = round(runs["default"]["images_per_s"]
                                                    / runs["reference"]["images_per_s"], 3)
        if args.json_out:  # after each configuration: a run cut short by a time limit keeps what it measured
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(json.dumps(summary, indent=1) + "\n")
    print(side_by_side(runs, peaks))
    for n, r in runs.items():
        if r["rollout_batch_choice"]:
            print(f"{n}: rollout_batch_size auto → {r['rollout_batch_choice']}")
    if summary["speedup_images_per_s"] is not None:
        print(f"speed-up (img/s, default / reference): {summary['speedup_images_per_s']:.2f}x")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
