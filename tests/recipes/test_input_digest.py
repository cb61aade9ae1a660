"""The training key covers the content of the files a training config names by path, not just the path:
an edited prompt file or a replaced preference dataset under the same name is a different training."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from arr_core.errors import InputError
from arr_core.recipes.rpo import input_files_digest
from arr_core.rpo.config import TrainConfig


def _prompt_cfg(path: Path) -> TrainConfig:
    return TrainConfig.model_validate({"policy": {"kind": "toy"}, "prompts": {"source": "file", "path": str(path)}})


def _dpo_cfg(path: Path) -> TrainConfig:
    return TrainConfig.model_validate({"policy": {"kind": "toy"}, "algorithm": "dpo",
                                       "dpo": {"pairs": {"source": "dataset", "path": str(path)}}})


def test_prompt_file_content_changes_the_digest(tmp_path: Path) -> None:
    f = tmp_path / "prompts.txt"
    f.write_text("a red cube\na blue ball\n", encoding="utf-8")
    first = input_files_digest(_prompt_cfg(f))
    assert input_files_digest(_prompt_cfg(f)) == first
    f.write_text("a red cube\na green ball\n", encoding="utf-8")
    assert input_files_digest(_prompt_cfg(f)) != first
    f.write_text("a red cube\na blue ball\n", encoding="utf-8")
    assert input_files_digest(_prompt_cfg(f)) == first  # content, not mtime


def test_world_prompts_have_no_file_inputs() -> None:
    a = TrainConfig.model_validate({"policy": {"kind": "toy"}, "prompts": {"source": "world"}})
    b = TrainConfig.model_validate({"policy": {"kind": "toy"}, "prompts": {"source": "world", "seed": 3}})
    assert input_files_digest(a) == input_files_digest(b)


def test_dpo_dataset_folder_is_hashed_file_by_file(tmp_path: Path) -> None:
    d = tmp_path / "pairs"
    d.mkdir()
    (d / "part-0.jsonl").write_text(json.dumps({"prompt": "p", "path1": "a.png", "path2": "b.png",
                                                 "label": [1, 0]}) + "\n", encoding="utf-8")
    first = input_files_digest(_dpo_cfg(d))
    (d / "part-1.jsonl").write_text("", encoding="utf-8")
    assert input_files_digest(_dpo_cfg(d)) != first


def test_missing_file_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"dpo\.pairs\.path"):
        input_files_digest(_dpo_cfg(tmp_path / "gone.jsonl"))
    with pytest.raises(InputError, match=r"prompts\.path"):
        input_files_digest(_prompt_cfg(tmp_path / "gone.txt"))
