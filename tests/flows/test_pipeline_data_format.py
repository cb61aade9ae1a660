"""data.format (and data.root) in a pipeline config reach the dataset loaders (issue 24): a named format
is normalised (aliases), an unknown one is refused naming the field, and the data task loads the file in
that format — a wrong one is refused as the CLI's --format would be. No Prefect server: the task's
function runs directly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from arr_core.errors import InputError
from flows.config import load_pipeline_config
from tasks.data import register_dataset

_spec = importlib.util.spec_from_file_location("_format_writers_flows",
                                               Path(__file__).parents[1] / "data" / "test_formats.py")
writers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(writers)

SPLIT = {"seed_fraction": 0.5, "validation_fraction": 0.25, "salt": ""}


def _config(tmp_path: Path, data: str) -> Path:
    p = tmp_path / "pipeline.yaml"
    p.write_text(f"data:\n{data}\ntraining:\n  config:\n    policy: {{kind: toy}}\n    prompts: {{source: world}}\n")
    return p


def test_data_format_and_root_in_a_pipeline_config(tmp_path: Path) -> None:
    writers.write_pickapic(tmp_path / "pap" / "test.parquet")
    cfg = load_pipeline_config(_config(tmp_path, "  pairs: pap/test.parquet\n  format: Pick-a-Pic\n  root: pap"))
    assert cfg.data.format == "pickapic" and cfg.data.root == (tmp_path / "pap").resolve()
    with pytest.raises(InputError, match="data.format.*unknown format 'parquet'"):
        load_pipeline_config(_config(tmp_path, "  pairs: pap/test.parquet\n  format: parquet"))


def test_the_data_task_loads_in_the_configured_format(tmp_path: Path) -> None:
    pairs = writers.write_editreward(tmp_path / "erb.parquet", [("A>B", None, "2pair"), ("B>A", None, "2pair")])
    out = register_dataset.fn(str(pairs), None, SPLIT, str(tmp_path / "home"), None, None, None, "editreward-bench")
    assert out["n_records"] == 2 and out["task"] == "edit"
    with pytest.raises(InputError, match="not in the hpdv3 format"):
        register_dataset.fn(str(pairs), None, SPLIT, str(tmp_path / "home"), None, None, None, "hpdv3")
