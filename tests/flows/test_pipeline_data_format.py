"""data.format (and data.root) in a pipeline config reach the dataset loaders (issue 24): a named format
is normalised (aliases), an unknown one is refused naming the field, and the data task loads the file in
that format — a wrong one is refused as the CLI's --format would be. No Prefect server: the task's
function runs directly."""

from __future__ import annotations

import importlib.util
import json
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


def test_data_allow_ties_sets_tied_pairs_aside_from_every_split(tmp_path: Path) -> None:
    """EditReward-Bench holds A=B rows: refused by default (naming the record), loaded and stored with
    data.allow_ties but kept out of the splits the induction and the judge check read."""
    rows = [("A>B", None, "2pair"), ("B>A", None, "2pair"), ("A=B", None, "2pair"), ("A>B", None, "3pair")]
    pairs = writers.write_editreward(tmp_path / "erb.parquet", rows)
    cfg = load_pipeline_config(_config(tmp_path, "  pairs: erb.parquet\n  format: editreward\n  allow_ties: true"))
    assert cfg.data.allow_ties is True
    home = str(tmp_path / "home")
    with pytest.raises(InputError, match="record 2, field 'ranking'.*tie"):
        register_dataset.fn(str(pairs), None, SPLIT, home, None, None, None, "editreward-bench")
    out = register_dataset.fn(str(pairs), None, SPLIT, home, None, None, None, "editreward-bench", True)
    assert out["n_records"] == 4 and out["n_tied_labels"] == 1
    kept = [p for ids in out["pair_ids"].values() for p in ids]
    assert len(kept) == 3 and sum(out["splits"].values()) == 3
    from arr_core.store.store import Store

    stored = Store(home).get_dataset_records(out["dataset_id"])
    (tie,) = [r for r in stored if r.label_rank == [1, 1]]  # the store keeps it (lineage names the file)
    assert tie.pair_id not in kept


def test_the_judge_stage_runs_the_paper_protocol(home: Path, tmp_path: Path) -> None:
    """judge.protocol: paper (with zeroshot_ks) in the pipeline's judge task: per-condition metrics, the
    evaluation stored with its HTML report."""
    from arr_core.bench.results import load_eval_row
    from arr_core.prompts.templates import PROMPT_VERSION
    from arr_core.rubrics.rubric_set import RubricSet
    from arr_core.sim.world.pairs import make_pairs
    from arr_core.store.store import Store
    from arr_core.vlm.config import VLMConfig
    from flows.config import JudgeStage
    from tasks.judge import judge_heldout

    pairs = make_pairs("t2i", 6, 2, tmp_path / "w", size=48)
    ds = register_dataset.fn(str(pairs), None, SPLIT, str(home), None, None, None, "arr")
    rs = RubricSet(task="t2i", criteria=["Every object named in the caption is present in the image.",
                                         "Each object appears exactly the number of times the caption states."])
    Store(home).put_rubric_set(rs)
    judge_cfg = JudgeStage(protocol="paper", zeroshot_ks=[1, 5]).model_dump(mode="json")
    ids = [p for split in ds["pair_ids"].values() for p in split]
    out = judge_heldout.fn(ds["dataset_id"], ds["digest"], ids, rs.id, judge_cfg, VLMConfig(backend="scene"),
                           PROMPT_VERSION, "arr-test", None, str(home))
    m = out["metrics"]
    for cond in ("no_rubrics", "rubrics", "zeroshot_k1", "zeroshot_k5"):
        assert 0.0 <= m[f"{cond}.accuracy"] <= 1.0 and m[f"{cond}.n"] == 6
        assert m[f"{cond}.forward_minus_reversed"] == pytest.approx(m[f"{cond}.forward_accuracy"]
                                                                    - m[f"{cond}.reversed_accuracy"])
        assert m[f"{cond}.vlm_calls"] == 12  # single order, forward + reversed
    assert "gain" not in {k.split(".")[1] for k in m if k.startswith("no_rubrics.")}
    report = json.loads(Path(out["artifacts"]["judge_report"]).read_text())
    assert report["protocol"] == "paper" and Path(report["html_report"]).stat().st_size > 1000
    assert load_eval_row(Store(home), report["eval_id"])["kind"] == "preference-paper"
