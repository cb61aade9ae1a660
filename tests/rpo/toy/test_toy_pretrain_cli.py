"""`arr toy pretrain` end to end at a tiny size, and the pieces it is made of."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from arr_core.cli.toy import register_toy, run_pretrain
from arr_core.errors import InputError
from arr_core.rpo.adapters.toy import ToyPolicy
from arr_core.rpo.toy_pretrain import flow_matching_loss, make_batch


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
    with pytest.raises(InputError, match="--defect-rate"):
        run_pretrain(steps=1, out=tmp_path / "x", defect_rate=1.5)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="--out"):
        run_pretrain(steps=1, out=tmp_path / "file")
