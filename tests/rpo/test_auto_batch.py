"""``rollout_batch_size: auto``: the choice from free memory and one image's measured peak
(``arr_core.rpo.kernels.choose_batch_size``, a pure function, fed injected figures here), the CPU
fallback to the documented default through the trainer (toy and tiny FLUX, bit-identical to the
explicit size), and a resume keeping the size the run started with. The CUDA probe itself runs in
``tests/rpo/test_gpu.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rpo_train_helper import train

from arr_core.rewards import CallableRewarder
from arr_core.rpo.config import TrainConfig
from arr_core.rpo.kernels import AUTO_BATCH_DEFAULT, choose_batch_size
from arr_core.rpo.trainer import AUTO_BATCH_FILE, RPOArgs, one_image_workload, set_eval_mode

pytestmark = pytest.mark.usefixtures("one_thread")
GiB = 2**30


@pytest.mark.parametrize(("prompts", "free_gib", "per_image_gib", "expected"), [
    (8, 141, 9.0, 4),    # 141·0.85 − 2 = 117.9 GiB usable, 6 prompts × 2 images fit; at most 8/2 = 4
    (8, 60, 9.0, 2),     # 49 GiB usable: 2 prompts fit (2 is a divisor of 8)
    (8, 75, 9.0, 2),     # 61.8 GiB: 3 fit, but 3 does not divide 8 → 2
    (12, 75, 9.0, 3),    # the same with 12 prompts: 3 divides 12
    (64, 141, 0.5, 8),   # 117 prompts fit; the cap is 8
    (1, 141, 0.5, 1),    # one prompt per step: one batch of 1
    (8, 20, 9.0, 1),     # 15 GiB usable < 18 GiB for one prompt: 1, with the warning
])
def test_choice_from_injected_memory_figures(prompts: int, free_gib: float, per_image_gib: float,
                                             expected: int) -> None:
    c = choose_batch_size(prompts, 2, free_bytes=int(free_gib * GiB), per_image_bytes=int(per_image_gib * GiB))
    assert c.size == expected, c
    assert prompts % c.size == 0 and c.free_bytes == int(free_gib * GiB)
    assert f"free {free_gib:.2f} GiB" in c.reason and "per image (probe)" in c.reason
    assert ("not even one prompt" in c.reason) == (expected == 1 and free_gib == 20)


def test_margin_reserve_and_cap_are_applied() -> None:
    per = GiB
    # exactly 4 prompts × 2 images fit in free·(1 − margin) − reserve = 8 GiB
    free = int((8 * GiB + 2 * GiB) / 0.85) + 1
    assert choose_batch_size(16, 2, free_bytes=free, per_image_bytes=per).size == 4
    assert choose_batch_size(16, 2, free_bytes=free - 2, per_image_bytes=per).size == 2  # 3.99 fit → 2
    assert choose_batch_size(16, 2, free_bytes=free, per_image_bytes=per, margin=0.0, reserve_bytes=0).size == 4
    assert choose_batch_size(16, 2, free_bytes=100 * GiB, per_image_bytes=per, cap=2).size == 2
    assert choose_batch_size(16, 4, free_bytes=free, per_image_bytes=per).size == 2  # G = 4: half as many


def test_without_figures_the_documented_default() -> None:
    c = choose_batch_size(8, 2, unmeasured="cpu: no device memory to measure")
    assert c.size == AUTO_BATCH_DEFAULT == 2 and c.reason.startswith("cpu: no device memory to measure: the default 2")
    assert choose_batch_size(3, 2).size == 1  # 2 does not divide 3
    assert choose_batch_size(8, 2, free_bytes=10 * GiB).size == 2  # one figure missing: unmeasured
    with pytest.raises(ValueError, match="per_image_bytes must be > 0"):
        choose_batch_size(8, 2, free_bytes=GiB, per_image_bytes=0)
    with pytest.raises(ValueError, match="prompts_per_step and group_size"):
        choose_batch_size(0, 2)


def test_config_accepts_auto_and_checks_numbers_as_before() -> None:
    base: dict[str, Any] = dict(policy={"kind": "toy"}, prompts={"source": "world"}, prompts_per_step=6)
    assert TrainConfig.model_validate({**base, "rollout_batch_size": "auto"}).rollout_batch_size == "auto"
    for bad, msg in ((0, "greater than or equal to 1"), ("big", "auto"), (4, "must be a multiple")):
        with pytest.raises(ValueError, match=msg):
            TrainConfig.model_validate({**base, "rollout_batch_size": bad})


def _cfg(kind: str, **kw: Any) -> TrainConfig:
    policy = {"kind": "toy"} if kind == "toy" else {"kind": "flux", "folder": "tiny"}
    prompts = {"source": "world"} if kind == "toy" else {"source": "file", "path": "x"}
    base: dict[str, Any] = dict(policy=policy, prompts=prompts, num_steps=3, group_size=2, prompts_per_step=4,
                                lr=1e-2, sample_grid_every=0, checkpoint_every=0, lora={"rank": 2, "alpha": 4},
                                steps=1, compile=False)
    base.update(kw)
    return TrainConfig.model_validate(base)


def _policy(kind: str, make_policy: Any) -> Any:
    if kind == "toy":
        from arr_core.sim.toy_policy import ToyPolicy

        return ToyPolicy.random(seed=0)
    return make_policy(seed=0)


def _lora(res: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in res.model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("kind", ["toy", "flux"])
def test_auto_trains_on_cpu_with_the_default_and_equals_the_explicit_size(
        kind: str, make_policy: Any, prompts: list[str], redness_fn: Any, tmp_path: Path) -> None:
    lines: list[str] = []
    auto = train(_policy(kind, make_policy), CallableRewarder(redness_fn), prompts,
                 _cfg(kind, rollout_batch_size="auto"), tmp_path / "auto", progress=lines.append)
    assert any(ln.startswith("rollout_batch_size auto: 2 prompts × G=2 per batch (cpu: no device memory to "
                             "measure: the default 2") for ln in lines), lines
    m = auto.last_metrics
    assert m["rollout_batch_size"] == 2 and m["ratio_max"] == 1.0 and m["grad_norm"] > 0
    fixed = train(_policy(kind, make_policy), CallableRewarder(redness_fn), prompts,
                  _cfg(kind, rollout_batch_size=2), tmp_path / "fixed", progress=None)
    a, f = _lora(auto), _lora(fixed)
    assert a.keys() == f.keys() and all(torch.equal(a[k], f[k]) for k in a)
    assert not (tmp_path / "fixed" / "checkpoints" / "step_000001" / AUTO_BATCH_FILE).exists()


def test_a_resumed_auto_run_keeps_the_size_it_started_with(make_policy: Any, prompts: list[str], redness_fn: Any,
                                                           tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = dict(rollout_batch_size="auto", checkpoint_every=1)
    train(make_policy(seed=0), CallableRewarder(redness_fn), prompts, _cfg("flux", **cfg), run, progress=None)
    saved = run / "checkpoints" / "step_000001" / AUTO_BATCH_FILE
    kept = json.loads(saved.read_text())
    assert kept["size"] == 2 and "cpu: no device memory" in kept["reason"]
    # As if the run had started on a device where 1 was chosen (the manifest lists the file's size,
    # so rewrite it with the same length).
    size = saved.stat().st_size
    saved.write_text(json.dumps({"size": 1, "reason": ""})[:-2] + "x" * (size - 25) + '"}')
    assert saved.stat().st_size == size and json.loads(saved.read_text())["size"] == 1
    lines: list[str] = []
    res = train(make_policy(seed=0), CallableRewarder(redness_fn), prompts, _cfg("flux", steps=2, **cfg), run,
                resume=run, progress=lines.append)
    assert any("rollout_batch_size auto: 1 prompts" in ln and "kept from step_000001" in ln for ln in lines), lines
    assert res.last_metrics["rollout_batch_size"] == 1


def test_the_measured_workload_is_one_image_and_leaves_no_trace(make_policy: Any, prompts: list[str]) -> None:
    """What the CUDA probe runs (its memory figure itself needs CUDA: tests/rpo/test_gpu.py): one
    prompt, one image, decoded; a trained step's backward reaches the LoRA; gradients are cleared and
    the weights and the global RNG are untouched."""
    from arr_core.rpo.lora import add_lora
    from arr_core.rpo.sde import StepTable

    policy = make_policy(seed=0)
    peft = add_lora(policy.transformer, rank=2, alpha=4, targets=list(policy.lora_targets))
    set_eval_mode(policy)
    params = [p for p in peft.parameters() if p.requires_grad]
    sig = policy.sigmas(3).float()
    roll_kw = dict(group_size=2, sigmas=sig, noise="flow_grpo", a=0.7, eta=0.3, shared_initial_noise=False,
                   bf16=False, sde_mask=[True] * 3, noise_block=1, judged_image="clean_estimate",
                   table=StepTable(sig))
    args = RPOArgs(steps=1, group_size=2, num_steps=3, trained_steps=(1, 2), sde_mask=(True,) * 3,
                   prompts_per_step=4, rollout_batch_size="auto", config_digest="x")
    decoded: list[int] = []
    dec = policy.decode
    policy.decode = lambda z: (decoded.append(z.shape[0]), dec(z))[1]
    grads: list[bool] = []
    hooks = [p.register_hook(lambda g: grads.append(bool(g.abs().sum() >= 0))) for p in params]
    before = {n: p.detach().clone() for n, p in peft.named_parameters()}
    rng = torch.get_rng_state()
    one_image_workload(policy, peft, params, prompts, None, args, roll_kw)()
    for h in hooks:
        h.remove()
    assert decoded == [1] and grads and all(p.grad is None for p in params)
    assert all(torch.equal(p, before[n]) for n, p in peft.named_parameters())
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize(("free_gib", "expected"), [(10.0, 2), (3.0, 1)])
def test_the_trainer_uses_the_measured_figures(free_gib: float, expected: int, make_policy: Any, prompts: list[str],
                                               redness_fn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA branch of the trainer on CPU, with the two device counters injected: the one-image
    workload runs inside the measurement, the figures decide the size, the run trains with it."""
    from arr_core.rpo import trainer

    ran: list[bool] = []

    def measure(fn: Any, device: Any) -> int:
        fn()
        ran.append(True)
        return int(0.3 * GiB)

    monkeypatch.setattr(trainer, "free_device_bytes", lambda device: int(free_gib * GiB))
    monkeypatch.setattr(trainer, "measure_peak_bytes", measure)
    lines: list[str] = []
    res = train(make_policy(seed=0), CallableRewarder(redness_fn), prompts, _cfg("flux", rollout_batch_size="auto"),
                tmp_path / "run", progress=lines.append)
    chosen = [ln for ln in lines if ln.startswith("rollout_batch_size auto:")]
    assert ran == [True] and len(chosen) == 1 and f"free {free_gib:.2f} GiB, 0.300 GiB per image" in chosen[0]
    assert chosen[0].startswith(f"rollout_batch_size auto: {expected} prompts")
    assert ("not even one prompt" in chosen[0]) == (expected == 1)
    assert res.last_metrics["rollout_batch_size"] == expected and res.last_metrics["ratio_max"] == 1.0


@pytest.mark.slow
def test_the_step_benchmark_reports_the_chosen_size(tmp_path: Path) -> None:
    """``benchmarks/rpo_step.py --rollout-batch-size auto`` (what scripts/gpu_check.sh runs) reports the
    size the trainer chose and why, in its table and its JSON (~20 s on CPU with --tiny)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "rpo_step.json"
    r = subprocess.run([sys.executable, str(root / "benchmarks" / "rpo_step.py"), "--tiny", "--steps", "1",
                        "--judge-latency", "0.1", "--configs", "default", "--rollout-batch-size", "auto",
                        "--json-out", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = json.loads(out.read_text())["configs"]["default"]
    assert (run["rollout_batch_setting"], run["rollout_batch_size"]) == ("auto", 2)
    assert run["rollout_batch_choice"].startswith("2 prompts × G=2 per batch (cpu: no device memory to measure")
    assert "default: rollout_batch_size auto → 2 prompts" in r.stdout and "rollout batch (prompts)" in r.stdout
    bad = subprocess.run([sys.executable, str(root / "benchmarks" / "rpo_step.py"), "--tiny",
                          "--rollout-batch-size", "many"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "a number or 'auto', got 'many'" in bad.stderr
