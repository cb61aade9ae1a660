"""`arr toy pretrain` end to end at a tiny size, and the pieces it is made of."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from arr_cli.toy import register_toy
from arr_core.errors import InputError
from arr_core.sim.toy_policy import ToyPolicy
from arr_core.sim.toy_pretrain import (
    flow_matching_loss,
    lr_factor,
    make_batch,
    pretrain,
    run_pretrain,
    sample_sigmas,
)


def test_make_batch_defect_rate_and_range():
    rng = np.random.default_rng(0)
    prompts, x, n_bad = make_batch(rng, 40, 32, defect_rate=0.5)
    assert len(prompts) == 40 and x.shape == (40, 3, 32, 32)
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert 10 <= n_bad <= 30  # Binomial(40, 0.5): outside [10, 30] with probability < 2e-3
    _, _, none_bad = make_batch(np.random.default_rng(0), 10, 32, defect_rate=0.0)
    assert none_bad == 0


def test_flow_matching_loss_trains_both_modules():
    policy = ToyPolicy.random(seed=1)
    prompts, x, _ = make_batch(np.random.default_rng(1), 4, 32, 0.0)
    loss = flow_matching_loss(policy, prompts, x, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert policy.text_encoder.get_input_embeddings().weight.grad.abs().sum() > 0
    assert policy.transformer.proj_out.weight.grad.abs().sum() > 0


@torch.no_grad()
def test_loss_floor_spans_v_loss_to_x_loss():
    """floor = sigma_min is the velocity MSE (JiT's v-loss); floor = 1 is the clean-image MSE."""
    policy = ToyPolicy.random(seed=2)
    prompts, x0, _ = make_batch(np.random.default_rng(2), 6, 32, 0.0)
    gen = torch.Generator().manual_seed(3)
    eps = torch.randn(x0.shape, generator=gen)
    sigma = torch.rand((6,), generator=gen)
    assert float(sigma.min()) >= policy.config["sigma_min"]  # the two forms agree only above sigma_min
    s = sigma.view(6, 1, 1, 1)
    xs = (1 - s) * x0 + s * eps
    cond = policy.encode(prompts)
    v_loss = torch.nn.functional.mse_loss(policy.velocity(xs, sigma, cond), eps - x0)
    x_loss = torch.nn.functional.mse_loss(policy.predict_x0(xs, sigma, cond), x0)

    def loss(floor):
        return flow_matching_loss(policy, prompts, x0, torch.Generator().manual_seed(3), floor)

    torch.testing.assert_close(loss(policy.config["sigma_min"]), v_loss, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(loss(1.0), x_loss, rtol=1e-5, atol=1e-7)
    assert float(loss(0.5)) < float(v_loss)  # a higher floor only lowers the weights


def test_pretrain_command_writes_a_loadable_policy(tmp_path):
    app = typer.Typer()
    register_toy(app)
    app.command("noop")(lambda: None)  # a second command keeps `toy` a sub-command group
    out = tmp_path / "toy"
    res = CliRunner().invoke(app, ["toy", "pretrain", "--steps", "5", "--out", str(out),
                                   "--batch-size", "8", "--eval-per-tag", "1", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "held-out GenEval-format accuracy" in res.output
    policy = ToyPolicy.load(out)
    facts = policy.describe()["pretrain"]
    assert facts["steps"] == 5 and facts["eval"]["n"] == 6 and np.isfinite(facts["final_loss"])
    fresh = ToyPolicy.random(seed=0)
    moved = [not torch.equal(a, b) for a, b in zip(policy.transformer.parameters(),
                                                   fresh.transformer.parameters(), strict=True)]
    assert any(moved)


def test_pretrain_rejects_bad_options(tmp_path):
    with pytest.raises(InputError, match="--steps"):
        run_pretrain(steps=0, out=tmp_path / "x")
    with pytest.raises(InputError, match="--loss-floor"):
        run_pretrain(steps=1, out=tmp_path / "x", loss_floor=0.0)
    with pytest.raises(InputError, match="--defect-rate"):
        run_pretrain(steps=1, out=tmp_path / "x", defect_rate=1.5)
    with pytest.raises(InputError, match="--schedule"):
        run_pretrain(steps=1, out=tmp_path / "x", schedule="linear")
    with pytest.raises(InputError, match="--sigma-sampling"):
        run_pretrain(steps=1, out=tmp_path / "x", sigma_sampling="lognormal")
    with pytest.raises(InputError, match="--logit-std"):
        run_pretrain(steps=1, out=tmp_path / "x", sigma_sampling="logit-normal", logit_std=0.0)
    with pytest.raises(InputError, match="--width"):
        run_pretrain(steps=1, out=tmp_path / "x", width=100)
    with pytest.raises(InputError, match="--layers"):
        run_pretrain(steps=1, out=tmp_path / "x", layers=0)
    with pytest.raises(InputError, match="--image-size"):
        run_pretrain(steps=1, out=tmp_path / "x", image_size=4)
    with pytest.raises(InputError, match="--patch-size"):
        run_pretrain(steps=1, out=tmp_path / "x", patch_size=0)
    with pytest.raises(InputError, match="multiple of the patch size"):
        run_pretrain(steps=1, out=tmp_path / "x", image_size=64, patch_size=3)
    with pytest.raises(InputError, match="multiple of the patch size"):  # the default patch is 2 px
        run_pretrain(steps=1, out=tmp_path / "x", image_size=33)
    with pytest.raises(InputError, match="--init"):
        run_pretrain(steps=1, out=tmp_path / "x", init=tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="--out"):
        run_pretrain(steps=1, out=tmp_path / "file")


def test_lr_factor_warmup_then_constant_or_cosine():
    assert lr_factor(0, 100, 10, "constant") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(99, 100, 10, "constant") == 1.0
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)  # halfway through the decay
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    decay = [lr_factor(k, 100, 10, "cosine") for k in range(10, 101)]
    assert all(a >= b for a, b in zip(decay[:-1], decay[1:], strict=True))


def test_pretrain_continues_from_a_saved_policy(tmp_path):
    first = tmp_path / "first"
    pretrain(first, steps=3, batch_size=4, eval_per_tag=0, log=None)
    cont = tmp_path / "cont"
    facts = pretrain(cont, init=first, steps=2, batch_size=4, eval_per_tag=0, schedule="cosine", log=None)
    assert facts["steps"] == 2 and facts["schedule"] == "cosine"
    assert facts["continued_from"]["pretrain"]["steps"] == 3
    assert facts["continued_from"]["source"] == str(first)
    start, end = ToyPolicy.load(first), ToyPolicy.load(cont)
    assert end.describe()["pretrain"]["continued_from"]["pretrain"]["steps"] == 3
    moved = [not torch.equal(a, b) for a, b in zip(end.transformer.parameters(), start.transformer.parameters(),
                                                   strict=True)]
    assert any(moved)
    # With a vanishing learning rate the continued run ends where it started: it starts from `first`.
    pretrain(tmp_path / "still", init=first, steps=1, batch_size=4, lr=1e-12, eval_per_tag=0, log=None)
    still = ToyPolicy.load(tmp_path / "still")
    for a, b in zip(still.transformer.parameters(), start.transformer.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_cond_dropout_replaces_a_share_of_prompts_by_the_empty_prompt(tmp_path, monkeypatch):
    import arr_core.sim.toy_pretrain as tp

    seen: list[list[str]] = []
    real = tp.flow_matching_loss

    def spy(policy, prompts, *args, **kwargs):
        seen.append(list(prompts))
        return real(policy, prompts, *args, **kwargs)

    monkeypatch.setattr(tp, "flow_matching_loss", spy)
    facts = tp.pretrain(tmp_path / "drop", steps=4, batch_size=16, cond_dropout=0.5, eval_per_tag=0, log=None)
    dropped = sum(p == "" for batch in seen for p in batch)
    assert facts["cond_dropout"] == 0.5 and 16 <= dropped <= 48  # 64 prompts, p = 0.5
    seen.clear()
    tp.pretrain(tmp_path / "keep", steps=4, batch_size=16, eval_per_tag=0, log=None)
    assert all(p for batch in seen for p in batch)
    with pytest.raises(ValueError, match="cond_dropout"):
        tp.pretrain(tmp_path / "bad", steps=1, cond_dropout=1.0, log=None)


def test_sample_sigmas_uniform_keeps_the_old_stream_and_logit_normal_favours_the_middle():
    uni = sample_sigmas(20000, torch.Generator().manual_seed(4))
    torch.testing.assert_close(uni, torch.rand((20000,), generator=torch.Generator().manual_seed(4)))
    ln = sample_sigmas(20000, torch.Generator().manual_seed(4), "logit-normal")
    z = torch.randn((20000,), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(ln, torch.sigmoid(z))
    assert 0.0 < float(ln.min()) and float(ln.max()) < 1.0
    middle = [float(((s > 0.3) & (s < 0.7)).float().mean()) for s in (uni, ln)]
    assert middle[0] == pytest.approx(0.4, abs=0.02)
    assert middle[1] == pytest.approx(0.603, abs=0.02)  # P(|z| < logit(0.7) = 0.847) for z ~ N(0, 1)
    shifted = sample_sigmas(20000, torch.Generator().manual_seed(4), "logit-normal", mean=1.0, std=0.5)
    torch.testing.assert_close(shifted, torch.sigmoid(1.0 + 0.5 * z))
    with pytest.raises(ValueError, match="sigma sampling"):
        sample_sigmas(2, torch.Generator(), "beta")
    with pytest.raises(ValueError, match="std"):
        sample_sigmas(2, torch.Generator(), "logit-normal", std=0.0)


def test_pretrain_records_and_uses_logit_normal_sigmas(tmp_path, monkeypatch):
    import arr_core.sim.toy_pretrain as tp

    drawn: list[torch.Tensor] = []
    real = tp.sample_sigmas

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        drawn.append(out)
        return out

    monkeypatch.setattr(tp, "sample_sigmas", spy)
    facts = tp.pretrain(tmp_path / "ln", steps=3, batch_size=4, eval_per_tag=0, log=None,
                        sigma_sampling="logit-normal", logit_mean=0.5, logit_std=0.8)
    assert len(drawn) == 3 and all(d.shape == (4,) for d in drawn)
    assert facts["sigma_sampling"] == "logit-normal"
    assert (facts["logit_mean"], facts["logit_std"]) == (0.5, 0.8)
    saved = ToyPolicy.load(tmp_path / "ln").describe()["pretrain"]
    assert saved["sigma_sampling"] == "logit-normal" and saved["logit_std"] == 0.8
    plain = tp.pretrain(tmp_path / "uni", steps=1, batch_size=4, eval_per_tag=0, log=None)
    assert plain["sigma_sampling"] == "uniform" and "logit_mean" not in plain
    with pytest.raises(ValueError, match="sigma_sampling"):
        tp.pretrain(tmp_path / "bad", steps=1, sigma_sampling="beta", log=None)


def test_pretrain_builds_a_fresh_policy_of_another_size(tmp_path):
    out = tmp_path / "big"
    run_pretrain(steps=1, out=out, batch_size=2, eval_per_tag=0, width=64, layers=1)
    policy = ToyPolicy.load(out)
    assert (policy.config["width"], policy.config["layers"]) == (64, 1)
    assert len(policy.transformer.transformer_blocks) == 1
    assert policy.transformer.transformer_blocks[0].attn1.to_q.in_features == 64
    with pytest.raises(InputError, match="architecture"):  # a continued run keeps init's architecture
        run_pretrain(steps=1, out=tmp_path / "cont", init=out, layers=2)
    with pytest.raises(ValueError, match="architecture"):
        pretrain(tmp_path / "cont", init=out, steps=1, architecture={"layers": 2}, log=None)


def test_pretrain_builds_a_64px_policy_that_trains_and_samples_at_64px(tmp_path):
    """--image-size 64 --patch-size 4: the data are 64 px renders, the transformer keeps 256 tokens,
    and sampling decodes 64 px images without resampling."""
    out = tmp_path / "p64"
    run_pretrain(steps=2, out=out, batch_size=2, eval_per_tag=0, image_size=64, patch_size=4, width=32,
                 layers=1)
    policy = ToyPolicy.load(out)
    assert (policy.config["image_size"], policy.config["patch_size"]) == (64, 4)
    assert policy.transformer.config.sample_size == 64 and policy.transformer.config.patch_size == 4
    assert policy.transformer.pos_embed.height * policy.transformer.pos_embed.width == 256  # tokens
    gen = torch.Generator().manual_seed(0)
    noise = policy.initial_latents(2, gen)
    assert tuple(noise.shape) == (2, 3, 64, 64)
    cond = policy.encode(["a photo of a red circle", "a photo of a blue square"])
    v = policy.velocity(noise, 1.0, cond)
    assert tuple(v.shape) == (2, 3, 64, 64) and torch.isfinite(v).all()
    images = policy.decode(noise - v)  # x̂₀ at σ = 1
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    with pytest.raises(InputError, match="architecture"):
        run_pretrain(steps=1, out=tmp_path / "cont", init=out, image_size=32)


def test_research_options_live_in_the_benchmark_script_not_the_product_command(tmp_path):
    """`arr toy pretrain` refuses the research flags; benchmarks/toy_pretrain.py takes them."""
    import subprocess
    import sys

    app = typer.Typer()
    register_toy(app)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["toy", "pretrain", "--width", "64", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "No such option" in res.output
    root = Path(__file__).resolve().parents[3]
    out = tmp_path / "toy"
    r = subprocess.run([sys.executable, str(root / "benchmarks" / "toy_pretrain.py"), "--steps", "1", "--out", str(out),
                        "--batch-size", "2", "--eval-per-tag", "0", "--width", "32", "--layers", "1",
                        "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert ToyPolicy.load(out).config["width"] == 32
    r = subprocess.run([sys.executable, str(root / "benchmarks" / "toy_pretrain.py"), "--steps", "1", "--out",
                        str(tmp_path / "y"), "--width", "33"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--width" in r.stderr
