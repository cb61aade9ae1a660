"""The rollout's denoising loop and the trained step's log-prob path make no host synchronisation, and
the sync-free step maths (``arr_core.rpo.sde.StepTable``) gives the same bits as the code it replaced.

On CPU there is no device queue to stall, so syncs are counted instead: every aten op that reads a
tensor's value back to Python or sizes an output by its data (``_local_scalar_dense``, behind
``.item()``, ``bool()``, ``float()``; ``nonzero``; ``masked_select``; …) through a
``TorchDispatchMode``, and the Python-level read-backs that do not dispatch on CPU (``tolist``,
``numpy``, ``cpu``, ``__array__``, printing) by patching ``torch.Tensor``. The count covers the loop
only: it starts when ``policy.initial_latents`` returns and stops when ``policy.decode`` is called.
On CUDA, ``tests/rpo/test_gpu.py`` runs the same loop under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from arr_core.rpo.lora import add_lora
from arr_core.rpo.sde import StepTable, analytic_kl, sde_mean_std, sde_step, step_log_prob
from arr_core.rpo.trainer import Rollout, rollout, set_eval_mode, step_terms

pytestmark = pytest.mark.usefixtures("one_thread")

SYNC_OPS = {"_local_scalar_dense", "nonzero", "nonzero_static", "masked_select", "repeat_interleave",
            "equal", "is_nonzero", "allclose", "unique", "_unique2", "bincount", "histc"}
PY_READBACKS = ("tolist", "numpy", "cpu", "__array__", "__repr__", "__str__", "__format__")


class SyncCounter(TorchDispatchMode):
    """Counts host read-backs while ``on``; ``events`` names each (aten op or Tensor method)."""

    def __init__(self) -> None:
        super().__init__()
        self.on = False
        self.events: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func._schema.name.split("::")[-1]
        if name == "repeat_interleave" and not (args and isinstance(args[0], torch.Tensor)
                                                and len(args) > 1 and isinstance(args[1], torch.Tensor)):
            pass  # repeat_interleave(self, int): no data-dependent size
        elif self.on and name in SYNC_OPS:
            self.events[f"aten::{name}"] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture()
def counter(monkeypatch: pytest.MonkeyPatch) -> SyncCounter:
    c = SyncCounter()
    for meth in PY_READBACKS:
        inner = getattr(torch.Tensor, meth)

        def wrapped(self: torch.Tensor, *a: Any, _inner: Any = inner, _m: str = meth, **k: Any) -> Any:
            if c.on:
                c.events[f"Tensor.{_m}"] += 1
            return _inner(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, meth, wrapped)
    with c:
        yield c


def _scope_to_loop(policy: Any, c: SyncCounter) -> None:
    """Count from the return of ``initial_latents`` to the call of ``decode``: the denoising loop.
    Inside it the default device is ``meta``, so a tensor made on the host without a device (on CUDA a
    host→device copy each step, which synchronises from pageable memory) fails: it cannot be copied
    out of ``meta``. (Before the fix, FluxPolicy built its image position ids so at every step.)"""
    init, dec = policy.initial_latents, policy.decode

    def initial_latents(*a: Any, **k: Any) -> torch.Tensor:
        out = init(*a, **k)
        c.on = True
        torch.set_default_device("meta")
        return out

    def decode(*a: Any, **k: Any) -> Any:
        torch.set_default_device(None)
        c.on = False
        return dec(*a, **k)

    policy.initial_latents, policy.decode = initial_latents, decode


def _flux() -> Any:
    from arr_core.rpo.adapters.flux import FluxPolicy
    from arr_core.rpo.adapters.tiny import tiny_flux_components

    return FluxPolicy.from_components(tiny_flux_components(0), device="cpu", dtype=torch.float32, height=64,
                                      width=64, max_sequence_length=16)


def _toy() -> Any:
    from arr_core.sim.toy_policy import ToyPolicy

    return ToyPolicy.random(seed=0)


POLICIES = {"flux": _flux, "toy": _toy}
PROMPTS = ["a red circle", "two blue squares"]


def _kw(policy: Any, n: int, noise: str = "flow_grpo", **over: Any) -> dict[str, Any]:
    kw: dict[str, Any] = dict(group_size=2, sigmas=policy.sigmas(n).float(), noise=noise, a=0.7, eta=0.3,
                              shared_initial_noise=False, bf16=False)
    kw.update(over)
    return kw


@pytest.mark.parametrize("kind", sorted(POLICIES))
def test_no_host_sync_inside_the_denoising_loop(kind: str, counter: SyncCounter) -> None:
    policy = POLICIES[kind]()
    set_eval_mode(policy)
    _scope_to_loop(policy, counter)
    for n, mask in ((3, None), (6, [True, False, True, True, False, True])):
        try:
            ro = rollout(policy, PROMPTS, None, generator=torch.Generator().manual_seed(0), **_kw(policy, n),
                         sde_mask=mask)
        finally:
            torch.set_default_device(None)
        assert ro.latents.shape[0] == n + 1 and len(ro.images) == 4
        assert not counter.events, f"{kind}, {n} steps: host syncs in the loop: {dict(counter.events)}"


def test_the_counter_sees_the_syncs_the_old_step_made(counter: SyncCounter) -> None:
    """Control: the checked public step (``sde_step`` + ``step_log_prob``) syncs and is counted."""
    x, v = torch.randn(2, 4), torch.randn(2, 4)
    sig = torch.tensor([1.0, 0.5, 0.0])
    counter.on = True
    xn, mean, std = sde_step(x, v, sig[0], sig[1], generator=torch.Generator().manual_seed(0))
    step_log_prob(xn, mean, std)
    counter.on = False
    assert counter.events["aten::_local_scalar_dense"] >= 4, dict(counter.events)
    counter.events.clear()
    table = StepTable(sig)  # its checks sync once, here
    counter.on = True
    table.sample(0, x, v, torch.Generator().manual_seed(0))
    counter.on = False
    assert not counter.events, dict(counter.events)


def test_the_trained_step_path_makes_no_host_sync(counter: SyncCounter, make_policy: Any) -> None:
    policy = make_policy(seed=0)
    set_eval_mode(policy)
    peft = add_lora(policy.transformer, rank=2, alpha=4, targets=list(policy.lora_targets))
    sig = policy.sigmas(3).float()
    ro = rollout(policy, PROMPTS, None, generator=torch.Generator().manual_seed(0), **_kw(policy, 3))
    table = StepTable(sig, kind="flow_grpo", a=0.7, eta=0.3)
    counter.on = True
    lp, kl = step_terms(policy, peft, ro, 1, sig, noise="flow_grpo", a=0.7, eta=0.3, bf16=False, need_ref=True,
                        table=table)
    (lp.mean() + kl.mean()).backward()
    counter.on = False
    assert not counter.events, dict(counter.events)
    assert torch.equal(lp.detach(), ro.log_probs[1]) and torch.equal(kl, torch.zeros_like(kl))


# --- the replaced code path, kept verbatim here as the reference for bit-identity -------------------
@torch.no_grad()
def old_rollout(policy: Any, prompts: list[str], *, group_size: int, sigmas: torch.Tensor,
                generator: torch.Generator, noise: str, a: float, eta: float, shared_initial_noise: bool,
                bf16: bool, sde_mask: Sequence[bool] | None = None, noise_block: int = 1,
                judged_image: str = "clean_estimate") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from arr_core.rpo.policy import index_cond

    b, g = len(prompts), group_size
    cond = policy.encode(prompts, None)
    cond = index_cond(cond, torch.arange(b).repeat_interleave(g))
    if shared_initial_noise:
        x = policy.initial_latents(b, generator).float().repeat_interleave(g, dim=0)
    else:
        x = policy.initial_latents(b * g, generator).float()
    n = len(sigmas) - 1
    lats, lps = [x], []
    x0_hat = None
    for i in range(n):
        v = policy.velocity(x, sigmas[i].expand(x.shape[0]), cond).float()
        if i == n - 1 and judged_image == "clean_estimate":
            x0_hat = x - sigmas[i] * v
        if sde_mask is None or sde_mask[i]:
            x, mean, std = sde_step(x, v, sigmas[i], sigmas[i + 1], kind=noise, a=a, eta=eta, generator=generator,
                                    noise_block=noise_block)
            lps.append(step_log_prob(x, mean, std, noise_block))
        else:
            x = sde_mean_std(x, v, sigmas[i], sigmas[i + 1], kind="ode")[0]
            lps.append(torch.zeros(x.shape[0], dtype=torch.float32, device=x.device))
        lats.append(x)
    return torch.stack(lats), torch.stack(lps), x if x0_hat is None else x0_hat


def old_step_terms(policy: Any, peft_model: Any, ro: Rollout, i: int, sigmas: torch.Tensor, *, noise: str,
                   a: float, eta: float, noise_block: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    x, x_next = ro.latents[i], ro.latents[i + 1]
    v = policy.velocity(x, sigmas[i].expand(x.shape[0]), ro.cond).float()
    mean, std = sde_mean_std(x, v, sigmas[i], sigmas[i + 1], kind=noise, a=a, eta=eta, noise_block=noise_block)
    log_prob = step_log_prob(x_next, mean, std, noise_block)
    with torch.no_grad(), peft_model.disable_adapter():
        v_ref = policy.velocity(x, sigmas[i].expand(x.shape[0]), ro.cond).float()
        mean_ref, _ = sde_mean_std(x, v_ref, sigmas[i], sigmas[i + 1], kind=noise, a=a, eta=eta,
                                   noise_block=noise_block)
    return log_prob, analytic_kl(mean, mean_ref, std)


CASES = {  # policy, noise, extra rollout settings
    "flux-flow_grpo": ("flux", "flow_grpo", {}),
    "flux-dance_grpo-mixed-last_sample": ("flux", "dance_grpo", dict(sde_mask=[True, False, True, True],
                                                                     judged_image="last_sample")),
    "toy-flow_grpo-block4-shared": ("toy", "flow_grpo", dict(noise_block=4, shared_initial_noise=True)),
    "toy-dance_grpo-block2": ("toy", "dance_grpo", dict(noise_block=2)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bit_identical_to_the_replaced_code_path(case: str) -> None:
    kind, noise, extra = CASES[case]
    policy = POLICIES[kind]()
    set_eval_mode(policy)
    kw = _kw(policy, 4, noise, **extra)
    captured: list[torch.Tensor] = []
    dec = policy.decode
    policy.decode = lambda z: (captured.append(z.clone()), dec(z))[1]
    ro = rollout(policy, PROMPTS, None, generator=torch.Generator().manual_seed(3), **kw)
    lats, lps, judged = old_rollout(policy, PROMPTS, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(ro.latents, lats) and torch.equal(ro.log_probs, lps) and torch.equal(captured[0], judged)
    # the trained step, with a LoRA that is not zero (so the KL is not trivially 0)
    peft = add_lora(policy.transformer, rank=2, alpha=4, targets=list(policy.lora_targets))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    nb = kw.get("noise_block", 1)
    for i in (0, 2):
        new = step_terms(policy, peft, ro, i, kw["sigmas"], noise=noise, a=0.7, eta=0.3, bf16=False, need_ref=True,
                         noise_block=nb)
        old = old_step_terms(policy, peft, ro, i, kw["sigmas"], noise=noise, a=0.7, eta=0.3, noise_block=nb)
        assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[1]) and float(new[1].detach().max()) > 0, (i, new, old)


@pytest.mark.parametrize("kind", ["flow_grpo", "dance_grpo"])
def test_step_table_equals_the_checked_functions_at_every_step(kind: str) -> None:
    """Every step of a FLUX-like shifted schedule (σ₀ = 1 included), batch-shaped latents."""
    s = torch.linspace(1.0, 0.0, 9)
    sig = (3 * s / (1 + 2 * s)).float()
    table = StepTable(sig, kind=kind, a=0.9, eta=0.4)
    g = torch.Generator().manual_seed(0)
    for i in range(8):
        x, v = torch.randn(3, 5, 7, generator=g), torch.randn(3, 5, 7, generator=g)
        mean, std = sde_mean_std(x, v, sig[i], sig[i + 1], kind=kind, a=0.9, eta=0.4)
        assert torch.equal(table.mean(i, x, v), mean) and torch.equal(table.std[i], std)
        xn, lp = table.sample(i, x, v, torch.Generator().manual_seed(i))
        xo, _, _ = sde_step(x, v, sig[i], sig[i + 1], kind=kind, a=0.9, eta=0.4,
                            generator=torch.Generator().manual_seed(i))
        assert torch.equal(xn, xo) and torch.equal(lp, step_log_prob(xo, mean, std))
        assert torch.equal(table.kl(i, mean, x), analytic_kl(mean, x, std))
        assert torch.equal(table.euler(i, x, v), sde_mean_std(x, v, sig[i], sig[i + 1], kind="ode")[0])


def test_step_table_checks_once() -> None:
    with pytest.raises(ValueError, match="sigma_next must be smaller"):
        StepTable(torch.tensor([1.0, 0.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match="t must lie in"):
        StepTable(torch.tensor([1.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match="std must be > 0"):
        StepTable(torch.tensor([1.0, 0.5, 0.0]), a=0.0).check_density([0])
    StepTable(torch.tensor([1.0, 0.5, 0.0]), kind="ode").check_density([])  # nothing to train: fine


def test_a_training_step_makes_as_many_syncs_with_twice_the_steps_and_units(
        counter: SyncCounter, make_policy: Any, prompts: list[str], redness_fn: Any, tmp_path: Any) -> None:
    """A whole training step (rollouts, judging, the update with accumulate 'all', metrics, the final
    checkpoint) reads back the same number of times with 3 or 6 denoising steps (2 or 5 trained units
    per batch): nothing syncs per denoising step or per unit; the update reads its figures back once."""
    from rpo_train_helper import train

    from arr_core.rewards import CallableRewarder
    from arr_core.rpo.config import TrainConfig

    counts = {}
    for n in (3, 6):
        cfg = TrainConfig.model_validate(dict(
            policy={"kind": "flux", "folder": "tiny"}, prompts={"source": "file", "path": "x"}, num_steps=n,
            group_size=2, prompts_per_step=2, rollout_batch_size=1, steps=1, sample_grid_every=0,
            checkpoint_every=0, lora={"rank": 2, "alpha": 4}, compile=False))
        counter.events.clear()
        counter.on = True
        res = train(make_policy(seed=0), CallableRewarder(redness_fn), prompts, cfg, tmp_path / str(n), progress=None)
        counter.on = False
        assert res.last_metrics["ratio_max"] == 1.0 and res.last_metrics["grad_norm"] > 0
        counts[n] = dict(counter.events)
    assert counts[3] == counts[6], counts
