"""The DuckDB rubric store.

One DuckDB file under the state folder holds datasets, pairs, rubric sets, per-pair induction
records, the VLM response cache, judgments, training runs, evaluation results and MLflow run ids.
All SQL is read from ``sql/`` (migrations and named queries) and every statement is
parameterized.

Concurrency: DuckDB allows one writing process per file, and a process that has the file open locks
out every other one, readers too. So the file is opened per unit of work (one query, one write
transaction; reentrant within a Store instance and thread) and closed right after it: a long command
(induction, judging, training) holds the lock only for its short reads and writes, and `arr store ls`
gets in between. Opening is cheap: the file is ATTACHed to one in-memory DuckDB per process (~1 ms)
instead of connected anew (~40 ms, a new database instance each time). A conflicting open is retried
with backoff up to ``lock_timeout_s``, after which :class:`StoreLockedError` says who holds the lock.
Writing a rubric set is one transaction: a crash leaves the whole version or nothing.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from arr_core.data.dataset import Dataset, split_of
from arr_core.data.records import PreferenceRecord
from arr_core.errors import NotFoundError, StoreLockedError
from arr_core.home import resolve_home, store_path
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.store import sqlfiles

_LOCK_RE = re.compile(r"(Could not set lock|Conflicting lock|database is locked)", re.I)


class _Attachments:
    """The process's one in-memory DuckDB that store files are ATTACHed to while any unit of work of
    this process uses them (a file can be attached once per process: units share it, counted), and
    DETACHed, releasing the file lock, when the last one ends. Each unit gets its own cursor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._host: duckdb.DuckDBPyConnection | None = None
        self._pid = 0
        self._files: dict[str, list[Any]] = {}  # path -> [alias, users, read_only]
        self._n = 0

    def open(self, path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
        key = os.path.realpath(path)  # one attachment per file, however it is named
        with self._lock:
            if self._host is None or self._pid != os.getpid():  # a forked child never uses its parent's
                self._host, self._pid, self._files = duckdb.connect(":memory:"), os.getpid(), {}
            entry = self._files.get(key)
            if entry is not None and entry[2] and not read_only:
                # Readers of this process have it open read-only: the writer waits like any other.
                raise duckdb.IOException(f"Could not set lock on {key}: open read-only in this process")
            if entry is None:
                self._n += 1
                alias = f"arr_store_{self._n}"
                quoted = "'" + key.replace("'", "''") + "'"
                self._host.execute(f"ATTACH {quoted} AS {alias}" + (" (READ_ONLY)" if read_only else ""))
                entry = self._files[key] = [alias, 0, read_only]
            entry[1] += 1
            try:
                cur = self._host.cursor()
                cur.execute(f"USE {entry[0]}")
            except BaseException:
                self._release(key)
                raise
        return cur

    def close(self, path: Path, con: duckdb.DuckDBPyConnection) -> None:
        con.close()
        with self._lock:
            if self._pid == os.getpid():
                self._release(os.path.realpath(path))

    def _release(self, key: str) -> None:
        entry = self._files[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self._files[key]
            assert self._host is not None
            self._host.execute(f"DETACH {entry[0]}")


_ATTACHED = _Attachments()


def _PAIRS_SCHEMA(pa: Any) -> Any:  # noqa: N802 (a schema, built where pyarrow is imported)
    return pa.schema([("dataset_id", pa.string()), ("pair_id", pa.string()), ("idx", pa.int32()),
                      ("split", pa.string()), ("record", pa.string())])
_MIGRATE_LOCK = threading.Lock()


class Store:
    def __init__(self, home: str | Path | None = None, *, read_only: bool = False,
                 lock_timeout_s: float = 30.0, path: str | Path | None = None) -> None:
        self.home = resolve_home(home)
        self.path = Path(path) if path is not None else store_path(self.home)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.read_only = read_only
        self.lock_timeout_s = lock_timeout_s
        self._local = threading.local()
        self._migrated = False

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, read_only={self.read_only})"

    # ---- connections ---------------------------------------------------------------------------
    def _open(self) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                if self.read_only and not self.path.exists():
                    raise NotFoundError(f"no store at {self.path} (nothing has been written yet)")
                return _ATTACHED.open(self.path, self.read_only)
            except duckdb.IOException as e:
                msg = str(e)
                if not _LOCK_RE.search(msg):
                    raise
                if time.monotonic() >= deadline:
                    pid = re.search(r"PID (\d+)", msg)
                    who = f" (PID {pid.group(1)})" if pid else ""
                    raise StoreLockedError(
                        f"store is locked by another process{who}: {self.path}; waited "
                        f"{self.lock_timeout_s:.0f} s. Wait for it to finish, or point --home / "
                        f"ARR_HOME at another state folder.") from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for a unit of work; nested calls in the same thread reuse it."""
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            self._local.con = self._open()
        self._local.depth = depth + 1
        try:
            if not self._migrated and not self.read_only:
                self._migrate(self._local.con)
            yield self._local.con
        finally:
            self._local.depth -= 1
            if self._local.depth == 0:
                con, self._local.con = self._local.con, None
                _ATTACHED.close(self.path, con)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN … COMMIT, rolled back on any exception (nested calls join the outer one)."""
        with self.connect() as con:
            if getattr(self._local, "in_tx", False):
                yield con
                return
            con.execute("BEGIN TRANSACTION")
            self._local.in_tx = True
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            finally:
                self._local.in_tx = False

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        with _MIGRATE_LOCK:  # one per process: two Store objects migrating at once conflict
            if self._migrated:
                return
            con.execute(sqlfiles.query("schema_version_create"))
            done = {r[0] for r in con.execute(sqlfiles.query("schema_version_list")).fetchall()}
            for version, name, sql in sqlfiles.migrations():
                if version in done:
                    continue
                con.execute("BEGIN TRANSACTION")
                try:
                    con.execute(sql)
                    con.execute(sqlfiles.query("schema_version_insert"), [version, name])
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            self._migrated = True

    def schema_versions(self) -> list[dict[str, Any]]:
        return self.fetchall("schema_version_list")

    # ---- named queries -------------------------------------------------------------------------
    @staticmethod
    def sql(name: str) -> str:
        return sqlfiles.query(name)

    def execute(self, name: str, params: Any = None) -> None:
        with self.connect() as con:
            con.execute(self.sql(name), params if params is not None else [])

    def executemany(self, name: str, rows: list[Any]) -> None:
        if not rows:
            return
        with self.transaction() as con:
            con.executemany(self.sql(name), rows)

    def fetchall(self, name: str, params: Any = None) -> list[dict[str, Any]]:
        with self.connect() as con:
            cur = con.execute(self.sql(name), params if params is not None else [])
            cols = [d[0] for d in cur.description] if cur.description else []
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    # ---- datasets ------------------------------------------------------------------------------
    def put_dataset(self, ds: Dataset, *, split_kw: dict[str, Any] | None = None) -> str:
        """Insert a dataset and its pairs (idempotent: an equal dataset keeps its id)."""
        import pyarrow as pa

        dataset_id = "ds-" + ds.digest
        cols: dict[str, list[Any]] = {"dataset_id": [], "pair_id": [], "idx": [], "split": [], "record": []}
        seen: set[str] = set()
        for r in ds.records:
            pid = r.pair_id
            if pid in seen:  # the first of equal records is kept (as ON CONFLICT DO NOTHING did row by row)
                continue
            seen.add(pid)
            for key, value in (("dataset_id", dataset_id), ("pair_id", pid), ("idx", r.idx),
                               ("split", split_of(pid, **(split_kw or {}))),
                               ("record", json.dumps(r.to_row(), ensure_ascii=False))):
                cols[key].append(value)
        with self.transaction() as con:
            con.execute(self.sql("dataset_insert"), {
                "dataset_id": dataset_id, "name": ds.name, "task": ds.task,
                "n_records": len(ds.records), "source_uri": ds.source_uri,
                "meta": json.dumps({"notes": [str(n) for n in ds.notes]}),
            })
            if seen:  # one INSERT … SELECT from an Arrow table, not one statement per row
                con.register("new_pairs", pa.table(cols, schema=_PAIRS_SCHEMA(pa)))
                try:
                    con.execute(self.sql("pair_insert"))
                finally:
                    con.unregister("new_pairs")
        return dataset_id

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        rows = self.fetchall("dataset_get", [dataset_id])
        if not rows:
            raise NotFoundError(f"no dataset {dataset_id} in {self.path}")
        return rows[0]

    def list_datasets(self) -> list[dict[str, Any]]:
        return self.fetchall("datasets_list")

    def get_dataset_records(self, dataset_id: str, split: str | None = None) -> list[PreferenceRecord]:
        self.get_dataset(dataset_id)
        rows = self.fetchall("pairs_by_dataset", [dataset_id])
        return [PreferenceRecord.from_row(json.loads(r["record"])) for r in rows
                if split is None or r["split"] == split]

    # ---- rubric sets ---------------------------------------------------------------------------
    def put_rubric_set(self, rs: RubricSet) -> str:
        """Write a rubric set and its rows in one transaction; an existing id is left as is."""
        rid = rs.id
        with self.transaction() as con:
            if con.execute(self.sql("rubric_set_exists"), [rid]).fetchone()[0]:
                return rid
            con.execute(self.sql("rubric_set_insert"), {
                "rubric_set_id": rid, "task": rs.task, "parent_id": rs.metadata.get("parent_id"),
                "dataset_digest": rs.metadata.get("dataset_digest"), "n_themes": len(rs.themes),
                "n_criteria": len(rs.criteria),
                "metadata": json.dumps(rs.metadata, sort_keys=True, default=str),
                "body": rs.to_json(indent=None),
            })
            rows = [dict(r, rubric_set_id=rid) for r in rs.to_rows()]
            if rows:
                con.executemany(self.sql("rubric_insert"), rows)
        return rid

    def resolve_rubric_set_id(self, id_or_prefix: str) -> str:
        rows = self.fetchall("rubric_set_find_prefix", [id_or_prefix])
        ids = [r["rubric_set_id"] for r in rows]
        if id_or_prefix in ids:
            return id_or_prefix
        if not ids:
            raise NotFoundError(f"no rubric set {id_or_prefix!r} in {self.path} (see `arr store ls`)")
        if len(ids) > 1:
            raise NotFoundError(f"rubric set prefix {id_or_prefix!r} is ambiguous: {', '.join(ids)}")
        return ids[0]

    def get_rubric_set(self, id_or_prefix: str) -> RubricSet:
        rid = self.resolve_rubric_set_id(id_or_prefix)
        row = self.fetchall("rubric_set_get", [rid])[0]
        rs = RubricSet.from_json(row["body"])
        return rs

    def rubric_set_info(self, id_or_prefix: str) -> dict[str, Any]:
        rid = self.resolve_rubric_set_id(id_or_prefix)
        row = self.fetchall("rubric_set_get", [rid])[0]
        row["metadata"] = json.loads(row["metadata"])
        row.pop("body")
        return row

    def list_rubric_sets(self) -> list[dict[str, Any]]:
        return self.fetchall("rubric_sets_list")

    def rubric_rows(self, rubric_set_id: str) -> list[dict[str, Any]]:
        return self.fetchall("rubrics_by_set", [rubric_set_id])

    # ---- lineage -------------------------------------------------------------------------------
    def record_mlflow_run(self, entity_kind: str, entity_id: str, stage: str, run_id: str,
                          parent_run_id: str | None = None, experiment: str | None = None) -> None:
        self.execute("mlflow_run_insert", {
            "entity_kind": entity_kind, "entity_id": entity_id, "stage": stage, "mlflow_run_id": run_id,
            "parent_run_id": parent_run_id, "experiment": experiment})

    def put_training_run(self, run_id: str, *, rubric_set_id: str | None, policy_id: str | None,
                         config: dict[str, Any], status: str, lora_uri: str | None,
                         metrics: dict[str, Any]) -> None:
        """Record (or update) a finished training run, keyed by its content-derived train key."""
        self.execute("training_run_upsert", {
            "run_id": run_id, "rubric_set_id": rubric_set_id, "policy_id": policy_id,
            "config": json.dumps(config, sort_keys=True, default=str), "status": status,
            "lora_uri": lora_uri, "metrics": json.dumps(metrics, sort_keys=True, default=str)})

    def lineage(self, id_or_prefix: str) -> list[dict[str, Any]]:
        """The chain root → … → this rubric set; each entry with its dataset, MLflow runs,
        training runs and evaluations."""
        rid = self.resolve_rubric_set_id(id_or_prefix)
        chain: list[dict[str, Any]] = []
        seen: set[str] = set()
        cur: str | None = rid
        while cur and cur not in seen:
            seen.add(cur)
            rows = self.fetchall("rubric_set_get", [cur])
            if not rows:
                chain.append({"rubric_set_id": cur, "missing": True})
                break
            row = rows[0]
            meta = json.loads(row["metadata"])
            chain.append({
                "rubric_set_id": cur,
                "parent_id": row["parent_id"],
                "dataset_digest": row["dataset_digest"],
                "created_at": row["created_at"],
                "generator_model": meta.get("generator_model"),
                "verifier_model": meta.get("verifier_model"),
                "prompt_version": meta.get("prompt_version"),
                "mlflow_runs": self.fetchall("mlflow_runs_by_entity", [cur]),
                "training_runs": self.fetchall("training_runs_by_rubric_set", [cur]),
                "evaluations": self.fetchall("eval_results_by_rubric_set", [cur]),
            })
            cur = row["parent_id"]
        return list(reversed(chain))
