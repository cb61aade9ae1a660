"""Attention kernels and regional compilation (``arr_core/rpo/kernels.py``) and how the trainer uses
them: the SDPA context is entered around rollouts and training (backward included) with the backends
of each setting, ``auto`` never allows cuDNN; compile on/off agree; the judge's overlap with training
and its blocking mode."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from rpo_train_helper import train
from torch.nn.attention import SDPBackend

from arr_core.rewards import CallableRewarder, GroupOutcome
from arr_core.rpo import kernels
from arr_core.rpo.config import TrainConfig
from arr_core.sim.rewards import FixedLatencyRewarder

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(policy={"kind": "toy"}, prompts={"source": "world"}, num_steps=3, group_size=2,
                                prompts_per_step=4, rollout_batch_size=2, lr=1e-2, sample_grid_every=0,
                                checkpoint_every=0, lora={"rank": 4, "alpha": 8}, steps=1)
    base.update(kw)
    return TrainConfig.model_validate(base)


def _flags() -> tuple[bool, bool, bool, bool]:
    b = torch.backends.cuda
    return b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled(), b.cudnn_sdp_enabled()


EXPECTED = {  # (flash, efficient, math, cudnn) allowed inside the context
    "auto": (True, True, True, False),
    "flash": (True, False, False, False),
    "efficient": (False, True, False, False),
    "cudnn": (False, False, False, True),
    "math": (False, False, True, False),
}


def test_backend_sets() -> None:
    assert kernels.sdpa_backends("auto") == [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                                             SDPBackend.MATH]
    assert SDPBackend.CUDNN_ATTENTION not in kernels.sdpa_backends("auto")
    for name in ("flash", "efficient", "cudnn", "math"):
        assert len(kernels.sdpa_backends(name)) == 1
    with pytest.raises(ValueError, match="attention_backend must be one of"):
        kernels.sdpa_backends("fast")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_context_sets_the_global_flags_and_restores_them(name: str) -> None:
    before = _flags()
    # On a CUDA device every setting is allowed; the flags are global, so this checks them on CPU too.
    with kernels.attention_context(name, torch.device("cuda")):
        assert _flags() == EXPECTED[name]
    assert _flags() == before


@pytest.mark.parametrize("name", ["efficient", "cudnn"])
def test_cuda_only_kernels_are_refused_on_cpu_by_name(name: str, make_policy: Any, prompts: list[str],
                                                      redness_fn: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"attention_backend '{name}' is a CUDA kernel"):
        kernels.attention_context(name, "cpu")
    with pytest.raises(ValueError, match="is a CUDA kernel"):
        train(make_policy(seed=0), CallableRewarder(redness_fn), prompts, _cfg(attention_backend=name), tmp_path,
              progress=None)


@pytest.mark.parametrize("name", ["auto", "flash", "math"])
def test_trainer_runs_rollouts_training_and_backward_inside_the_context(
        name: str, make_policy: Any, prompts: list[str], redness_fn: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    entered: list[list[SDPBackend]] = []
    real = kernels.sdpa_kernel

    def recording(backends: list[SDPBackend]) -> Any:
        entered.append(list(backends))
        return real(backends)

    monkeypatch.setattr(kernels, "sdpa_kernel", recording)
    policy = make_policy(seed=0)
    seen: list[tuple[bool, bool, bool, bool]] = []
    # A pre-hook on an attention module fires in every forward that reaches attention: rollouts,
    # trained steps, the reference, and the recomputation in backward under gradient checkpointing.
    policy.transformer.transformer_blocks[0].attn.register_forward_pre_hook(lambda *_: seen.append(_flags()))
    before = _flags()
    res = train(policy, CallableRewarder(redness_fn), prompts, _cfg(attention_backend=name,
                gradient_checkpointing=True), tmp_path, progress=None)
    assert entered == [kernels.sdpa_backends(name)]
    # 2 rollout batches × 3 steps, then 2 batches × 2 trained steps × (policy, reference, recompute)
    n_fwd = 2 * 3 + 2 * 2 * 3
    assert len(seen) == n_fwd and set(seen) == {EXPECTED[name]}
    assert _flags() == before  # restored after the run
    m = json.loads(res.metrics_path.read_text().splitlines()[0])
    assert m["ratio_mean"] == 1.0 and m["kl"] == 0.0


def test_repeated_blocks(make_policy: Any) -> None:
    flux = make_policy(seed=0).transformer
    assert [type(b).__name__ for b in kernels.repeated_blocks(flux)] == ["FluxTransformerBlock",
                                                                         "FluxSingleTransformerBlock"]

    class Plain(torch.nn.Module):  # no _repeated_blocks: the outermost list of equal blocks
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList(
                torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ModuleList([torch.nn.ReLU(), torch.nn.ReLU()]))
                for _ in range(3))
            self.head = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.ReLU()])  # mixed: not blocks

    plain = Plain()
    assert kernels.repeated_blocks(plain) == list(plain.layers)
    with pytest.raises(ValueError, match="no repeated blocks to compile"):
        kernels.compile_repeated_blocks(torch.nn.Linear(2, 2))


def _inductor_missing() -> str | None:
    try:
        import torch._inductor  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the install
        return f"torch inductor unavailable: {e}"
    if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        return "no C++ compiler on PATH: inductor cannot build CPU kernels"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_inductor_missing() is not None, reason=str(_inductor_missing()))
def test_compile_on_and_off_agree(make_policy: Any, prompts: list[str], redness_fn: Any, tmp_path: Path) -> None:
    # CPU inductor: ~100 s of warm-up on the 2-core machine (compiling is what takes the time).
    runs, metrics, lines = {}, {}, []
    for comp in (False, True):
        policy = make_policy(seed=0)
        res = train(policy, CallableRewarder(redness_fn), prompts, _cfg(steps=2, compile=comp, num_steps=4),
                    tmp_path / str(comp), progress=lines.append)
        runs[comp] = {n: p.detach() for n, p in policy.transformer.named_parameters() if "lora_" in n}
        metrics[comp] = [json.loads(ln) for ln in res.metrics_path.read_text().splitlines()]
    for n in runs[False]:  # measured: ≤ 2e-6 apart after 2 steps at lr 1e-2
        torch.testing.assert_close(runs[True][n], runs[False][n], rtol=1e-4, atol=2e-5)
    # measured: ratio exactly 1 and KL exactly 0 in fp32; compiled graphs may round differently
    assert abs(metrics[True][0]["ratio_max"] - 1.0) <= 1e-5 and metrics[True][0]["kl"] <= 1e-6
    assert metrics[True][0]["time_warmup_s"] > 0 and "time_warmup_s" not in metrics[True][1]
    assert all("time_warmup_s" not in m for m in metrics[False])
    assert any(ln.startswith("compiled 2 repeated blocks; warm-up") for ln in lines)


def test_compile_auto_is_off_on_cpu(make_policy: Any, prompts: list[str], redness_fn: Any, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import arr_core.rpo.trainer as trainer_mod

    called: list[Any] = []
    monkeypatch.setattr(trainer_mod, "compile_repeated_blocks", lambda m: called.append(m) or 0)
    train(make_policy(seed=0), CallableRewarder(redness_fn), prompts, _cfg(), tmp_path, progress=None)
    assert _cfg().compile == "auto" and called == []


class _GatedRewarder:
    """Judges the last batch of a step only once training has started (a forward with grad enabled),
    or after ``timeout`` s: proves that training does not wait for every verdict."""

    def __init__(self, n_batches: int, timeout: float = 30.0) -> None:
        self.n, self.calls, self.timeout = n_batches, 0, timeout
        self.training = threading.Event()
        self.timed_out = False

    def hook(self, *_: Any) -> None:
        if torch.is_grad_enabled():
            self.training.set()

    async def score(self, prompts: list[str], groups: list[list[Any]], sources: Any = None) -> list[GroupOutcome]:
        self.calls += 1
        if self.calls == self.n:
            ok = await asyncio.get_running_loop().run_in_executor(None, self.training.wait, self.timeout)
            self.timed_out = not ok
        return [GroupOutcome([1.0, -0.1], "win", [1, 2], 0.0) for _ in prompts]


def test_training_starts_before_the_last_batch_is_judged(make_policy: Any, prompts: list[str],
                                                         tmp_path: Path) -> None:
    policy = make_policy(seed=0)
    rewarder = _GatedRewarder(n_batches=2)
    policy.transformer.register_forward_hook(rewarder.hook)
    res = train(policy, rewarder, prompts, _cfg(max_inflight_judge_batches=2), tmp_path, progress=None)
    assert rewarder.calls == 2 and not rewarder.timed_out
    m = json.loads(res.metrics_path.read_text().splitlines()[0])
    assert m["ratio_mean"] == 1.0 and m["optimizer_steps"] == 1


class _Delayed:
    """FixedLatencyRewarder's verdicts, the first call of every step slowest (verdicts out of order)."""

    def __init__(self) -> None:
        self.inner, self.calls = FixedLatencyRewarder(0.0, 0), 0

    async def score(self, prompts: list[str], groups: list[list[Any]], sources: Any = None) -> list[GroupOutcome]:
        self.calls += 1
        await asyncio.sleep(0.3 if self.calls % 2 else 0.0)
        return await self.inner.score(prompts, groups, sources)


def test_results_do_not_depend_on_when_verdicts_arrive(make_policy: Any, prompts: list[str],
                                                       tmp_path: Path) -> None:
    out = {}
    for name, rewarder in (("instant", FixedLatencyRewarder(0.0, 0)), ("delayed", _Delayed())):
        policy = make_policy(seed=0)
        res = train(policy, rewarder, prompts, _cfg(steps=2, accumulate=2), tmp_path / name, progress=None)
        out[name] = ({n: p.detach().clone() for n, p in policy.transformer.named_parameters() if "lora_" in n},
                     [{k: v for k, v in json.loads(ln).items() if not k.startswith(("time_", "images_", "judge_"))}
                      for ln in res.metrics_path.read_text().splitlines()])
    for n, t in out["instant"][0].items():
        assert torch.equal(t, out["delayed"][0][n]), n
    assert out["instant"][1] == out["delayed"][1]
