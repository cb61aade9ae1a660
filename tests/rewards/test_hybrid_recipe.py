"""The recipe's hybrid builder: checkpoint questions from a JSONL file (and its errors), user verifiers
by import path, and the scene checker by name."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from reward_scenes import render_pair  # tests/rewards is on sys.path (pytest prepend mode)

from arr_core.errors import InputError
from arr_core.recipes.rpo import load_questions, resolve_checker, reward_from_config
from arr_core.rpo.config import HybridReward
from arr_core.sim.rewards import checker_score, scene_verdict
from arr_core.sim.scene_vlm import SceneVLM
from arr_core.vlm.client import VLMClient


def _hybrid(components: list[dict]):
    rc = HybridReward.model_validate({"components": components})
    return reward_from_config(rc, "t2i", None, VLMClient(SceneVLM(seed=0), cache_mode="off"))


def test_questions_file_drives_the_vlm_checkpoints(tmp_path: Path) -> None:
    prompt, clean, wrong = render_pair(21)
    qfile = tmp_path / "questions.jsonl"
    qfile.write_text(json.dumps({"prompt": prompt, "questions": [f"Does the image show {prompt}?"]}) + "\n\n")
    rewarder, desc = _hybrid([{"kind": "vlm_questions", "questions": str(qfile)}])
    assert desc == "hybrid judge reward: vlm_questions ×1"
    [o] = asyncio.run(rewarder.score([prompt], [[clean, wrong]]))
    assert o.outcome == "win" and o.rewards == [1.0, 0.0]
    [o] = asyncio.run(rewarder.score(["a prompt the file lacks"], [[clean, wrong]]))
    assert o.outcome == "abstain" and "no questions for prompt" in o.details["error"]
    # without a file: one question from the prompt itself
    assert load_questions(None, "q")("a photo of two cats.") == ["Does the image show a photo of two cats?"]


@pytest.mark.parametrize("line,msg", [("{not json", "not JSON"), (json.dumps({"prompt": "p", "questions": []}),
                                                                   "needs 'prompt'")])
def test_questions_file_errors_name_the_record(tmp_path: Path, line: str, msg: str) -> None:
    qfile = tmp_path / "q.jsonl"
    qfile.write_text(json.dumps({"prompt": "a", "questions": ["b?"]}) + "\n" + line + "\n")
    with pytest.raises(InputError, match=msg) as e:
        load_questions(qfile, "reward.components[0].questions")
    assert "record 1" in str(e.value)
    with pytest.raises(InputError, match="cannot read the questions file"):
        load_questions(tmp_path / "missing.jsonl", "reward.components[0].questions")


def test_checkers_by_name_or_import_path() -> None:
    assert resolve_checker("scene", "f") is scene_verdict
    assert resolve_checker("arr_core.sim.rewards:checker_score", "f") is checker_score
    for name, msg in (("nosuch", "unknown checker"), ("arr_core.sim.rewards:nothing", "cannot be loaded"),
                      ("no_such_pkg.mod:fn", "cannot be loaded"), ("arr_core.sim.rewards:__doc__", "not callable")):
        with pytest.raises(InputError, match=msg):
            resolve_checker(name, "reward.components[0].checker")
    prompt, clean, wrong = render_pair(22)
    rewarder, _ = _hybrid([{"kind": "checker", "checker": "arr_core.sim.rewards:checker_score"}])
    [o] = asyncio.run(rewarder.score([prompt], [[clean, wrong]]))
    assert o.rewards == [checker_score(prompt, clean), checker_score(prompt, wrong)]
