"""``arr train`` with ``reward: {components: [...]}`` on the toy world: the scene checker (gated by
confidence), per-criterion scores and an http reward model (the reference server on 127.0.0.1)
train together; the config errors a user sees; the single-judge configs still parse as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arr_cli import main
from arr_core.rpo.config import HybridReward, RankJudgeReward, TrainConfig
from arr_core.vlm.server import ServedApp

RUBRICS_TEXT = ("Rubric 1:\nTheme: Counts\n- Tip: Each object appears exactly the number of times the caption "
                "states.\n\nRubric 2:\nTheme: Colour\n- Tip: Object colours match the colours named in the caption.\n")




def _config(tmp_path: Path, folder: Path, components: str) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(f"""
steps: 1
policy: {{kind: toy, folder: {folder}, device: cpu}}
prompts: {{source: world, count: 8, seed: 3}}
reward:
  components:
{components}
lora: {{rank: 4, alpha: 8}}
num_steps: 3
prompts_per_step: 4
rollout_batch_size: 2
sample_grid_every: 0
checkpoint_every: 0
""")
    return path


@pytest.mark.usefixtures("one_torch_thread")
def test_arr_train_with_hybrid_components_on_the_toy_world(tmp_path: Path, capsys, reference_app) -> None:
    from arr_core.sim.toy_policy import ToyPolicy

    folder = ToyPolicy.random(seed=0).save(tmp_path / "toy")
    rubrics = tmp_path / "rubrics.txt"
    rubrics.write_text(RUBRICS_TEXT)
    with ServedApp(reference_app) as srv:
        cfg = _config(tmp_path, folder, f"""
    - {{kind: checker, checker: scene, required: false}}
    - {{kind: rubric_scores, name: rubric, weight: 0.5, normalize: zscore, default_scale: binary}}
    - {{kind: http, name: rm, url: "{srv.url}/score", weight: 0.25, normalize: rank}}
""")
        out = tmp_path / "run"
        assert main(["train", "--config", str(cfg), "--out", str(out), "--rubrics", str(rubrics),
                     "--home", str(tmp_path / "home")]) == 0
        assert srv.app.state.requests == 2  # one request per rollout batch
    text = capsys.readouterr().out
    assert "hybrid judge scene:" in text and "checker ×1 (optional), rubric ×0.5, rm ×0.25" in text
    [m] = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    for name in ("checker", "rubric", "rm"):
        assert 0.0 <= m[f"reward/{name}/failed"] <= 1.0 and f"reward/{name}/gated" in m
    assert m["reward/rubric/failed"] == 0.0 and m["reward/rm/failed"] == 0.0 and m["reward/checker/gated"] == 0.0
    # the checker and the reference reward model both run the scene checker: same mean
    assert m["reward/checker/mean"] == pytest.approx(m["reward/rm/mean"])
    assert "rubric/score_theme/Counts" in m and "rubric/attribution/c2 Object colours match the colours name" in m
    assert m["abstain_rate"] == 0.0 and (out / "lora" / "pytorch_lora_weights.safetensors").is_file()


def test_hybrid_config_errors_exit_2_naming_the_field(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "toy"
    cfg = _config(tmp_path, folder, "    - {kind: checker, checker: scene, url: 'http://127.0.0.1:1/'}")
    assert main(["train", "--config", str(cfg), "--rubrics", "none", "--out", str(tmp_path / "r")]) == 2
    assert "field(s) ['url'] do not apply to kind 'checker'" in " ".join(capsys.readouterr().err.split())
    cfg = _config(tmp_path, folder, "    - {kind: checker, checker: nosuch}")
    assert main(["train", "--config", str(cfg), "--rubrics", "none", "--out", str(tmp_path / "r")]) == 2
    assert "reward.components[0].checker" in " ".join(capsys.readouterr().err.split())
    cfg = _config(tmp_path, folder, "    - {kind: checker, checker: scene}\n    - {kind: checker, checker: scene}")
    assert main(["train", "--config", str(cfg), "--rubrics", "none", "--out", str(tmp_path / "r")]) == 2
    assert "names ['checker'] repeat" in capsys.readouterr().err


def test_single_judge_configs_are_unchanged_and_components_select_the_hybrid() -> None:
    base = {"policy": {"kind": "toy"}, "prompts": {"source": "world"}}
    assert isinstance(TrainConfig.model_validate(base).reward, RankJudgeReward)
    assert TrainConfig.model_validate({**base, "reward": {"order": "single"}}).reward.mode == "rank"
    hy = TrainConfig.model_validate({**base, "reward": {"components": [{"kind": "rubric_judge", "order": "single"}]}})
    assert isinstance(hy.reward, HybridReward) and hy.reward.components[0].order == "single"
