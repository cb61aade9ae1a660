"""Per-criterion scores from the CLI (``arr judge --mode scores``) and as the training reward
(``reward: {mode: scores}``): the toy trains and the step metrics carry per-theme scores and
per-criterion attribution."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from arr_cli import main
from arr_core.sim.world.pairs import make_pairs

RUBRICS_TEXT = ("Rubric 1:\nTheme: Counts\n- Tip: Each object appears exactly the number of times the caption "
                "states.\n\nRubric 2:\nTheme: Colour\n- Tip: Object colours match the colours named in the "
                "caption.\n- Tip: Every object named in the caption is present in the image; none is missing.\n")



def test_arr_judge_mode_scores_prints_theme_and_criterion_means(tmp_path: Path, capsys) -> None:
    pairs = make_pairs("t2i", 6, 22, tmp_path / "pairs")
    rubrics = tmp_path / "rubrics.txt"
    rubrics.write_text(RUBRICS_TEXT)
    home = ["--home", str(tmp_path / "home")]
    assert main(["judge", "--rubrics", str(rubrics), "--pairs", str(pairs), "--mode", "scores",
                 "--scale", "binary"] + home) == 0
    out = capsys.readouterr().out
    assert re.search(r"accuracy \(95 % bootstrap\)\s*│\s*[01]\.\d{3} \[", out)
    assert "theme: Counts" in out and "theme: Colour" in out and "criterion c2 Object colours" in out
    assert "12 (0, 0)" in out  # 6 pairs × 2 images, no unusable answer, no transport failure
    assert main(["judge", "--rubrics", "none", "--pairs", str(pairs), "--mode", "scores"] + home) == 2
    assert "give a rubric set" in capsys.readouterr().err
    assert main(["judge", "--rubrics", str(rubrics), "--pairs", str(pairs), "--mode", "points"] + home) == 2
    assert main(["judge", "--rubrics", str(rubrics), "--pairs", str(pairs), "--scale", "1-5"] + home) == 2
    assert "--scale" in capsys.readouterr().err


@pytest.mark.usefixtures("one_torch_thread")
def test_arr_train_with_the_per_criterion_reward_logs_theme_scores_and_attribution(tmp_path: Path, capsys) -> None:
    from arr_core.sim.toy_policy import ToyPolicy

    folder = ToyPolicy.random(seed=0).save(tmp_path / "toy")
    rubrics = tmp_path / "rubrics.txt"
    rubrics.write_text(RUBRICS_TEXT)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"""
steps: 1
policy: {{kind: toy, folder: {folder}, device: cpu}}
prompts: {{source: world, count: 8, seed: 3}}
reward: {{mode: scores, weights: {{Counts: 2.0}}, scales: {{Colour: binary}}}}
lora: {{rank: 4, alpha: 8}}
num_steps: 3
prompts_per_step: 4
rollout_batch_size: 2
sample_grid_every: 0
checkpoint_every: 0
""")
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--rubrics", str(rubrics),
                 "--home", str(tmp_path / "home")]) == 0
    assert "per-criterion judge scene:" in capsys.readouterr().out
    [m] = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"score_theme/Counts", "score_theme/Colour"} <= set(m)
    attr = {k: v for k, v in m.items() if k.startswith("attribution/")}
    assert len(attr) == 3 and all(0.0 <= v <= 1.0 for v in attr.values())
    assert 0.0 <= m["score_theme/Counts"] <= 1.0
    # a weight key the rubric set does not have: exit 2, naming the field
    cfg.write_text(cfg.read_text().replace("Counts: 2.0", "Shapes: 2.0"))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r2"), "--rubrics", str(rubrics),
                 "--home", str(tmp_path / "home")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "reward.weights" in err and "'Shapes' is neither a criterion nor a theme" in err
