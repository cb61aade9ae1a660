"""Exchange formats for rubric sets: reference text, JSON and hive-partitioned Parquet.

Parquet layout (one folder per table, partitioned by rubric set, readable by DuckDB's
``read_parquet('…/*/*.parquet', hive_partitioning = true)``)::

    OUT/rubric_sets/rubric_set_id=rs-…/part-0.parquet   (task, parent_id, dataset_digest, metadata, body)
    OUT/rubrics/rubric_set_id=rs-…/part-0.parquet       (kind, theme_idx, theme, item_idx, text)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from arr_core.errors import InputError
from arr_core.rubrics.rubric_set import RubricSet


def export_rubric_set(rs: RubricSet, out: str | Path, fmt: str) -> Path:
    """Write ``rs`` as text, json or parquet; files appear atomically (temp + rename)."""
    out = Path(out)
    if fmt in ("text", "json"):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(rs.to_text() if fmt == "text" else rs.to_json() + "\n", encoding="utf-8")
        tmp.replace(out)
        return out
    if fmt != "parquet":
        raise InputError(f"unknown export format '{fmt}' (expected text, json or parquet)", field="format")
    out.mkdir(parents=True, exist_ok=True)
    rid = rs.id
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        sets = pa.Table.from_pylist([{
            "task": rs.task, "parent_id": rs.metadata.get("parent_id"),
            "dataset_digest": rs.metadata.get("dataset_digest"),
            "metadata": json.dumps(rs.metadata, sort_keys=True, default=str),
            "body": rs.to_json(indent=None)}])
        rows = pa.Table.from_pylist(rs.to_rows(), schema=pa.schema([
            ("kind", pa.string()), ("theme_idx", pa.int32()), ("theme", pa.string()),
            ("item_idx", pa.int32()), ("text", pa.string())]))
        for table, name in ((sets, "rubric_sets"), (rows, "rubrics")):
            part = staging / name / f"rubric_set_id={rid}"
            part.mkdir(parents=True)
            pq.write_table(table, part / "part-0.parquet")
        for name in ("rubric_sets", "rubrics"):
            dest = out / name / f"rubric_set_id={rid}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                shutil.rmtree(dest)
            (staging / name / f"rubric_set_id={rid}").replace(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def read_rubric_sets(path: str | Path, *, task: str = "t2i") -> list[RubricSet]:
    """Read rubric sets from a reference text file, a JSON file or a Parquet export folder."""
    path = Path(path)
    if not path.exists():
        raise InputError("file or folder not found", file=str(path))
    if path.is_dir():
        return _read_parquet_dir(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"invalid JSON at line {e.lineno}: {e.msg}", file=str(path)) from None
        items = data if isinstance(data, list) else [data]
        out = []
        for i, item in enumerate(items):
            try:
                out.append(RubricSet.from_json(item))
            except ValueError as e:
                raise InputError(str(e), file=str(path), record=i) from None
        return out
    try:
        return [RubricSet.from_text(text, task=task, metadata={"imported_from": "reference-text"})]
    except ValueError as e:
        raise InputError(str(e), file=str(path)) from None


def _read_parquet_dir(path: Path) -> list[RubricSet]:
    sets_dir = path / "rubric_sets"
    if not sets_dir.is_dir():
        raise InputError("not a Parquet rubric export (no rubric_sets/ folder)", file=str(path))
    out = []
    for part in sorted(sets_dir.glob("rubric_set_id=*")):
        rid = part.name.split("=", 1)[1]
        table = pq.read_table(part)
        for row in table.to_pylist():
            try:
                rs = RubricSet.from_json(row["body"])
            except ValueError as e:
                raise InputError(str(e), file=str(part)) from None
            if rs.id != rid:
                raise InputError(f"partition says {rid} but the body hashes to {rs.id}", file=str(part))
            rows_dir = path / "rubrics" / f"rubric_set_id={rid}"
            if rows_dir.is_dir():
                rows = pq.read_table(rows_dir).to_pylist()
                rebuilt = RubricSet.from_rows(rows, task=rs.task, metadata=rs.metadata)
                if rebuilt.id != rid:
                    raise InputError("rubric rows do not match the rubric set body", file=str(rows_dir))
            out.append(rs)
    return out


def diff_rubric_sets(a: RubricSet, b: RubricSet) -> dict[str, Any]:
    """Themes, tips and criteria added/removed from ``a`` to ``b``, and changed metadata keys."""
    ta = {t.theme: t.tips for t in a.themes}
    tb = {t.theme: t.tips for t in b.themes}
    changed_tips = {}
    for theme in sorted(set(ta) & set(tb)):
        added = [x for x in tb[theme] if x not in ta[theme]]
        removed = [x for x in ta[theme] if x not in tb[theme]]
        if added or removed:
            changed_tips[theme] = {"added": added, "removed": removed}
    skip = {"statistics"}
    meta_keys = sorted((set(a.metadata) | set(b.metadata)) - skip)
    return {
        "themes_added": [t for t in tb if t not in ta],
        "themes_removed": [t for t in ta if t not in tb],
        "tips_changed": changed_tips,
        "criteria_added": [c for c in b.criteria if c not in a.criteria],
        "criteria_removed": [c for c in a.criteria if c not in b.criteria],
        "metadata_changed": {k: [a.metadata.get(k), b.metadata.get(k)] for k in meta_keys
                             if a.metadata.get(k) != b.metadata.get(k)},
    }
