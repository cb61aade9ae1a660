"""Scheduled re-induction: only new pairs are induced, a version is made only when content changes."""

from __future__ import annotations

import json
from pathlib import Path


def _subset(src: Path, n: int, name: str) -> Path:
    """The first ``n`` records, next to the source (image paths stay relative to it)."""
    dst = src.parent / name
    dst.write_text(json.dumps(json.loads(src.read_text())[:n]))
    return dst


def test_reinduction_induces_only_new_pairs(prefect_api, home: Path, tmp_path: Path) -> None:
    from arr_core.sim.world.pairs import make_pairs
    from arr_core.store.store import Store
    from flows.config import ReinductionConfig
    from flows.reinduction import run_reinduction

    full = make_pairs("t2i", 20, 0, tmp_path / "world", size=32)

    def cfg(pairs: Path) -> ReinductionConfig:
        return ReinductionConfig.model_validate({
            "data": {"pairs": str(pairs), "seed_fraction": 0.8, "validation_fraction": 0.2},
            "parent": "latest", "induce": {"max_epochs": 2, "max_rubrics": 8},
            "mlflow": {"experiment": "arr-test-reinduction"}})

    first = run_reinduction(cfg(_subset(full, 12, "a.json")), home)
    rs1 = first["rubric_set_id"]
    assert first["parent_rubric_set_id"] is None and first["metrics"]["new_pairs"] > 0

    same = run_reinduction(cfg(full.parent / "a.json"), home)
    assert same["unchanged"] is True and same["rubric_set_id"] == rs1
    assert same["metrics"]["new_pairs"] == 0 and same["metrics"]["vlm_calls_this_run"] == 0

    more = run_reinduction(cfg(_subset(full, 20, "b.json")), home)
    seed_a = {r["pair_id"] for r in _seed_pairs(home, first)}
    seed_b = {r["pair_id"] for r in _seed_pairs(home, more)}
    assert more["parent_rubric_set_id"] == rs1
    assert more["metrics"]["new_pairs"] == len(seed_b - seed_a) > 0
    if not more["unchanged"]:
        assert Store(home).get_rubric_set(more["rubric_set_id"]).metadata["parent_id"] == rs1


def _seed_pairs(home: Path, summary: dict) -> list[dict]:
    from arr_core.data.dataset import split_of
    from arr_core.store.store import Store

    data = summary["stages"]["data"]
    recs = Store(home).get_dataset_records(data["dataset_id"])
    return [{"pair_id": r.pair_id} for r in recs
            if split_of(r.pair_id, seed_fraction=0.8, validation_fraction=0.2) == "seed"]
