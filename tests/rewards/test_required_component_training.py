"""``required`` vs optional reward components in ``arr train`` (issue 23 item 2): a required component
that fails on one group fails the whole step — no policy update, the step counted and named with its
component and endpoint — and two such steps in a row stop training (exit 5, training health); the
same failure from an optional component scores 0 for that group, is counted, and training goes on.

The toy world, two prompts per step in one rollout batch: a scene-world prompt the scene checker can
score and one it cannot (it raises, the checker's "cannot check" failure)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from arr_cli import main


def _config(tmp_path: Path, folder: Path, required: bool, steps: int) -> Path:
    from arr_core.sim.world.grammar import sample_spec

    prompts = tmp_path / "prompts.txt"
    prompts.write_text(sample_spec(np.random.default_rng(3)).prompt + "\na watercolor fox in the snow\n")
    path = tmp_path / f"train-{required}.yaml"
    path.write_text(f"""
steps: {steps}
seed: 0
policy: {{kind: toy, folder: {folder}, device: cpu}}
prompts: {{source: file, path: {prompts}}}
reward:
  vlm: {{backend: scene}}
  components:
    - {{kind: rubric_judge, order: single}}
    - {{kind: checker, checker: scene, required: {str(required).lower()}}}
lora: {{rank: 2, alpha: 4}}
num_steps: 3
prompts_per_step: 2
rollout_batch_size: 2
sample_grid_every: 0
checkpoint_every: 0
""")
    return path


def _rows(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.usefixtures("one_torch_thread")
def test_required_failure_fails_the_step_optional_failure_scores_zero(tmp_path: Path, capsys) -> None:
    from arr_core.sim.toy_policy import ToyPolicy

    folder = ToyPolicy.random(seed=0).save(tmp_path / "toy")
    rubrics = tmp_path / "rubrics.txt"
    rubrics.write_text("Rubric 1:\nTheme: Counts\n- Tip: Each object appears exactly the number of times the "
                       "caption states.\n")
    home = str(tmp_path / "home")

    # required: every step has the watercolor group, so every step fails; two in a row stop training
    out = tmp_path / "required"
    code = main(["train", "--config", str(_config(tmp_path, folder, True, steps=2)), "--out", str(out),
                 "--rubrics", str(rubrics), "--home", home])
    io = capsys.readouterr()
    err = " ".join((io.out + io.err).split())
    assert code == 5, err[-2000:]
    assert "steps in a row" in err and "required reward component checker (checker " in err
    assert "(checker arr_core.sim.rewards:scene_verdict) failed on group" in err  # the verifier is named
    assert "'a watercolor fox in the snow'" in err and "not a scene-world prompt" in err
    assert "step 1: required reward component checker" in err and "the policy was not updated" in err
    [r] = _rows(out)  # step 2 stopped training before its metrics line
    assert r["step"] == 1  # the scene-world group had a verdict from both components, and still nothing trained
    assert r["optimizer_steps"] == 0 and r["grad_norm"] == 0.0 and r["loss"] == 0.0
    assert r["abstain_rate"] == 1.0 and r["reward/checker/failed_step"] == 1.0
    assert r["reward/checker/failed"] == 0.5  # one group of two could not be checked
    assert not (out / "lora").exists()

    # optional: the watercolor group gets 0 from the checker (counted), the judge's ranks train
    out = tmp_path / "optional"
    assert main(["train", "--config", str(_config(tmp_path, folder, False, steps=1)), "--out", str(out),
                 "--rubrics", str(rubrics), "--home", home]) == 0
    [r] = _rows(out)
    assert r["optimizer_steps"] == 1 and r["grad_norm"] > 0.0 and r["abstain_rate"] == 0.0
    assert r["reward/checker/failed"] == 0.5 and "reward/checker/failed_step" not in r
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()
