"""Store: migrations, rubric-set round trips, atomic writes, the lock error across processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from arr_core.data import load_dataset
from arr_core.errors import NotFoundError, StoreLockedError
from arr_core.rubrics import RubricSet, Theme
from arr_core.store import Store
from arr_core.store.exchange import diff_rubric_sets, export_rubric_set, read_rubric_sets


def _rs(**meta) -> RubricSet:
    return RubricSet(task="t2i", themes=[Theme(theme="Object fidelity", tips=["Count matches the prompt",
                                                                               "Colours match the prompt"]),
                                         Theme(theme="Image quality", tips=["Sharp, not blurry"])],
                     criteria=["Count matches the prompt", "Colours match the prompt", "Sharp, not blurry"],
                     metadata={"generator_model": "scene-vlm-1", "prompt_version": "v1",
                               "dataset_digest": "abc", "statistics": {"pairs_used": 3}, **meta})


def test_migrations_recorded_once(tmp_path):
    s = Store(tmp_path)
    s.list_rubric_sets()
    versions = [r["version"] for r in s.schema_versions()]
    assert versions[0] == 1 and versions == sorted(set(versions))
    assert [r["version"] for r in Store(tmp_path).schema_versions()] == versions


def test_rubric_set_round_trips(tmp_path):
    s = Store(tmp_path / "home")
    rs = _rs()
    rid = s.put_rubric_set(rs)
    assert rid == rs.id and s.put_rubric_set(rs) == rid  # idempotent
    assert s.get_rubric_set(rid[:8]) == rs
    for fmt, name in (("text", "r.txt"), ("json", "r.json"), ("parquet", "pq")):
        out = export_rubric_set(rs, tmp_path / name, fmt)
        (back,) = read_rubric_sets(out)
        assert back.themes == rs.themes
        if fmt != "text":  # text carries no metadata, so only content survives
            assert back.id == rid
        else:
            assert back.content_digest() == rs.content_digest()
    # The Parquet export is hive-partitioned and readable by DuckDB directly.
    import duckdb

    rows = duckdb.sql(f"SELECT rubric_set_id, count(*) AS n FROM read_parquet('{tmp_path}/pq/rubrics/*/*.parquet', "
                      "hive_partitioning = true) GROUP BY 1").fetchall()
    assert rows == [(rid, len(rs.to_rows()))]


def test_statistics_do_not_change_the_id_but_lineage_does():
    assert _rs(statistics={"pairs_used": 9}).id == _rs().id
    assert _rs(parent_id="rs-x").id != _rs().id
    assert _rs(dataset_digest="other").id != _rs().id


def test_ambiguous_and_missing_ids(tmp_path):
    s = Store(tmp_path)
    with pytest.raises(NotFoundError, match="no rubric set"):
        s.get_rubric_set("rs-nope")


def test_diff():
    a = _rs()
    b = RubricSet(task="t2i", themes=[Theme(theme="Object fidelity", tips=["Count matches the prompt"]),
                                      Theme(theme="Layout", tips=["Relations hold"])],
                  criteria=["Count matches the prompt", "Relations hold"], metadata=dict(a.metadata))
    d = diff_rubric_sets(a, b)
    assert d["themes_added"] == ["Layout"] and d["themes_removed"] == ["Image quality"]
    assert d["tips_changed"]["Object fidelity"]["removed"] == ["Colours match the prompt"]
    assert d["criteria_added"] == ["Relations hold"]


def test_write_is_atomic_on_failure_mid_write(tmp_path, monkeypatch):
    s = Store(tmp_path)
    rs = _rs()
    real = Store.sql

    def failing_sql(name):
        if name == "rubric_insert":  # the set row is written, then the rubric rows fail
            raise RuntimeError("injected failure mid-write")
        return real(name)

    monkeypatch.setattr(Store, "sql", staticmethod(failing_sql))
    with pytest.raises(RuntimeError, match="injected"):
        s.put_rubric_set(rs)
    monkeypatch.setattr(Store, "sql", staticmethod(real))
    assert s.list_rubric_sets() == []
    assert s.fetchall("rubrics_by_set", [rs.id]) == []
    assert s.put_rubric_set(rs) == rs.id  # and a later write succeeds


def test_process_crash_mid_write_leaves_nothing(tmp_path):
    code = textwrap.dedent(f"""
        import json, os
        from arr_core.store import Store
        s = Store({str(tmp_path)!r})
        with s.transaction() as con:
            con.execute(s.sql("rubric_set_insert"), dict(rubric_set_id="rs-crash", task="t2i", parent_id=None,
                        dataset_digest=None, n_themes=0, n_criteria=0, metadata="{{}}", body="{{}}"))
            os._exit(17)  # the process dies inside the transaction
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 17, r.stderr
    assert Store(tmp_path).list_rubric_sets() == []


def test_second_process_gets_a_clear_lock_error(tmp_path):
    holder = textwrap.dedent(f"""
        import sys, time
        from arr_core.store import Store
        s = Store({str(tmp_path)!r})
        with s.connect():
            print("locked", flush=True)
            time.sleep(30)
    """)
    p = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(StoreLockedError, match="store is locked by another process") as ei:
            Store(tmp_path, lock_timeout_s=1.0).list_rubric_sets()
        waited = time.monotonic() - t0
        assert 0.9 <= waited < 15, waited  # bounded wait, not a hang
        assert f"PID {p.pid}" in str(ei.value)
    finally:
        p.kill()
        p.wait()
    # Once the holder is gone, writing works.
    assert Store(tmp_path).put_rubric_set(_rs()) == _rs().id


def test_datasets_and_pairs(tmp_path, t2i_dataset):
    s = Store(tmp_path / "h")
    ds = load_dataset(t2i_dataset)
    did = s.put_dataset(ds)
    assert did == "ds-" + ds.digest and s.put_dataset(ds) == did
    back = s.get_dataset_records(did)
    assert [r.pair_id for r in back] == [r.pair_id for r in ds.records]
    assert back[0].images[0].load().size == (16, 16)
    assert s.get_dataset(did)["n_records"] == 4


def test_lineage_walks_parents(tmp_path):
    s = Store(tmp_path)
    root = _rs()
    child = _rs(parent_id=root.id)
    s.put_rubric_set(root)
    s.put_rubric_set(child)
    s.record_mlflow_run("rubric_set", child.id, "induce", "run-123", "parent-9", "arr")
    chain = s.lineage(child.id)
    assert [n["rubric_set_id"] for n in chain] == [root.id, child.id]
    assert chain[1]["mlflow_runs"][0]["mlflow_run_id"] == "run-123"


def test_training_runs_show_in_lineage(tmp_path):
    s = Store(tmp_path)
    rs = _rs()
    s.put_rubric_set(rs)
    s.put_training_run("tr-1", rubric_set_id=rs.id, policy_id="toy", config={"steps": 2}, status="finished",
                       lora_uri="file:///x/lora", metrics={"train_steps": 2})
    s.put_training_run("tr-1", rubric_set_id=rs.id, policy_id="toy", config={"steps": 2}, status="finished",
                       lora_uri="file:///y/lora", metrics={"train_steps": 2})  # upsert, not a duplicate
    (node,) = s.lineage(rs.id)
    assert [(r["run_id"], r["lora_uri"]) for r in node["training_runs"]] == [("tr-1", "file:///y/lora")]
