"""The induction recipe's pieces that both `arr induce` and the pipeline tasks use."""

from __future__ import annotations

from pathlib import Path

from arr_core.data.dataset import load_dataset
from arr_core.recipes.induce import induce_rubrics, latest_in_lineage
from arr_core.rubrics.config import InduceConfig
from arr_core.sim.world.pairs import make_pairs
from arr_core.store import Store


def test_latest_parent_stays_within_the_lineage(tmp_path: Path) -> None:
    """`parent: latest` of a scheduled re-induction picks the newest rubric set made under the same
    config name, not a newer one of an unrelated experiment in the same store."""
    store = Store(tmp_path / "home")
    cfg = InduceConfig(max_epochs=2, max_rubrics=6)
    ours = load_dataset(make_pairs("t2i", 6, 1, tmp_path / "ours"))
    theirs = load_dataset(make_pairs("t2i", 6, 2, tmp_path / "theirs"))
    mine = induce_rubrics(ours, cfg, store, lineage_name="nightly")
    other = induce_rubrics(theirs, cfg, store, lineage_name="someone-elses")  # newer, another experiment
    assert mine.id != other.id and mine.metadata["lineage_name"] == "nightly"
    assert latest_in_lineage(store, "t2i", "nightly") == mine.id
    assert latest_in_lineage(store, "t2i", "someone-elses") == other.id
    assert latest_in_lineage(store, "t2i", None) == other.id  # no lineage given: the newest of the task
    assert latest_in_lineage(store, "edit", "nightly") is None
    assert latest_in_lineage(store, "t2i", "unknown") is None
    # the lineage name is not part of the id: equal content and lineage give equal ids
    again = induce_rubrics(ours, cfg, Store(tmp_path / "other"), lineage_name="elsewhere")
    assert again.id == mine.id
