"""`arr store …`: list, show, export, import, diff and trace rubric sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from arr_cli.common import Home, Json, console, home_dir, print_json

store_app = typer.Typer(help="Inspect and exchange versioned rubric sets in the DuckDB store.",
                        no_args_is_help=True)


def _store(home, read_only: bool = True):
    from arr_core.store import Store

    store = Store(home_dir(home), read_only=read_only)
    if read_only and not store.path.exists():
        # Nothing written yet: create the (empty, migrated) store rather than failing.
        store = Store(home_dir(home))
    return store


@store_app.command("ls")
def ls(home: Home = None, as_json: Json = False) -> int:
    """List rubric sets (newest first) and datasets. Ids are printed whole (a narrow terminal wraps
    them instead of cutting them), so they can be copied."""
    store = _store(home)
    if as_json:
        print_json({"rubric_sets": store.list_rubric_sets(), "datasets": store.list_datasets()})
        return 0
    t = Table(title="rubric sets")
    for col in ("id", "task", "themes", "criteria", "parent", "generator", "created"):
        t.add_column(col, overflow="fold", no_wrap=col in ("task", "themes", "criteria"))
    for r in store.list_rubric_sets():
        t.add_row(r["rubric_set_id"], r["task"], str(r["n_themes"]), str(r["n_criteria"]),
                  r["parent_id"] or "-", r["generator_model"] or "-", str(r["created_at"])[:19])
    console.print(t)
    d = Table(title="datasets")
    for col in ("id", "name", "task", "records", "created"):
        d.add_column(col, overflow="fold")
    for r in store.list_datasets():
        d.add_row(r["dataset_id"], r["name"], r["task"], str(r["n_records"]), str(r["created_at"])[:19])
    console.print(d)
    return 0


@store_app.command("show")
def show(rubric_set_id: Annotated[str, typer.Argument(metavar="ID", help="Rubric set id or unique prefix.")],
         home: Home = None, as_json: Json = False) -> int:
    """Print a rubric set: its rubrics as text, then its metadata and statistics."""
    store = _store(home)
    rs = store.get_rubric_set(rubric_set_id)
    if as_json:
        print_json(json.loads(rs.to_json()))
        return 0
    console.print(f"[bold]{rs.id}[/] ({rs.task}, {len(rs.themes)} themes, {len(rs.criteria)} criteria)")
    console.print(rs.to_text(), markup=False)
    console.print(json.dumps(rs.metadata, indent=2, sort_keys=True, default=str), markup=False)
    return 0


@store_app.command("export")
def export(rubric_set_id: Annotated[str, typer.Argument(metavar="ID")],
           out: Annotated[Path, typer.Option("--out", help="Output file (text/json) or folder (parquet).")],
           fmt: Annotated[str, typer.Option("--format", help="text | json | parquet")] = "json",
           home: Home = None) -> int:
    """Export a rubric set as the reference plain text, JSON, or hive-partitioned Parquet."""
    from arr_core.store.exchange import export_rubric_set

    rs = _store(home).get_rubric_set(rubric_set_id)
    path = export_rubric_set(rs, out, fmt)
    console.print(f"exported {rs.id} as {fmt} to {path}")
    return 0


def sniff_rubric_file(path: Path) -> str:
    """``json``, ``text`` or ``parquet`` from the file's content (its name may say otherwise): a folder
    is a Parquet export; a file starting with ``PAR1`` is one Parquet file; ``{``/``[`` first is JSON."""
    from arr_core.errors import InputError

    if path.is_dir():
        return "parquet"
    if not path.is_file():
        raise InputError("file or folder not found", file=str(path))
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return "json" if first in (b"{", b"[") else "text"


def _read_sniffed(path: Path, task: str) -> tuple[str, list]:
    """Read rubric sets as the content says: the reader picks by suffix, so it is handed a link with
    the right one; errors name the file as given."""
    import tempfile

    from arr_core.errors import InputError
    from arr_core.store.exchange import read_rubric_sets

    kind = sniff_rubric_file(path)
    if kind == "parquet" and path.is_file():
        raise InputError("a single Parquet file: import the export folder (the one with rubric_sets/ inside, "
                         "as `arr store export --format parquet` writes it)", file=str(path))
    if path.is_dir() or path.suffix.lower() == (".json" if kind == "json" else ".txt"):
        return kind, read_rubric_sets(path, task=task)
    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / ("rubrics.json" if kind == "json" else "rubrics.txt")
        link.symlink_to(path.resolve())
        try:
            return kind, read_rubric_sets(link, task=task)
        except InputError as e:
            raise InputError(f"{e.reason} (read as {kind} from its content)", file=str(path), record=e.record,
                             field=e.field) from None


@store_app.command("import")
def import_(path: Path, task: Annotated[str, typer.Option("--task", help="Task for plain-text rubrics.")] = "t2i",
            home: Home = None) -> int:
    """Import rubric sets from reference text, JSON, or a Parquet export folder (the format is read
    from the content, not the file name)."""
    kind, sets = _read_sniffed(path, task)
    console.print(f"format: {kind} (from the content)")
    store = _store(home, read_only=False)
    for rs in sets:
        console.print(f"imported {store.put_rubric_set(rs)}")
    return 0


def summarize_change(va: object, vb: object, limit: int = 5) -> str:
    """A changed metadata value as one line: short values in full, long lists (the induction's
    per-pair lists run to thousands of entries) as counts of what was added and removed."""
    def items(v: object) -> list[str] | None:
        return [json.dumps(x, sort_keys=True, default=str) for x in v] if isinstance(v, list) else None

    la, lb = items(va), items(vb)
    if (la is None and lb is None) or max(len(la or []), len(lb or [])) <= limit:
        return f"{json.dumps(va, default=str)} → {json.dumps(vb, default=str)}"
    sa, sb = set(la or []), set(lb or [])
    return (f"{len(la) if la is not None else json.dumps(va)} → {len(lb) if lb is not None else json.dumps(vb)} "
            f"items (+{len(sb - sa)} added, −{len(sa - sb)} removed; --json lists them)")


@store_app.command("diff")
def diff(id1: str, id2: str, home: Home = None, as_json: Json = False) -> int:
    """Show what changed between two rubric sets (themes, tips, criteria, metadata). Long lists in the
    metadata (per-pair records) are summarised as counts; ``--json`` gives everything."""
    from arr_core.store.exchange import diff_rubric_sets

    store = _store(home)
    a, b = store.get_rubric_set(id1), store.get_rubric_set(id2)
    d = diff_rubric_sets(a, b)
    if as_json:
        print_json({"from": a.id, "to": b.id, **d})
        return 0
    console.print(f"{a.id} → {b.id}")
    for key, label in (("themes_added", "+ theme"), ("themes_removed", "- theme"),
                       ("criteria_added", "+ criterion"), ("criteria_removed", "- criterion")):
        for item in d[key]:
            console.print(f"{label}: {item}", markup=False)
    for theme, ch in d["tips_changed"].items():
        for tip in ch["added"]:
            console.print(f"+ tip [{theme}]: {tip}", markup=False)
        for tip in ch["removed"]:
            console.print(f"- tip [{theme}]: {tip}", markup=False)
    for k, (va, vb) in d["metadata_changed"].items():
        console.print(f"~ {k}: {summarize_change(va, vb)}", markup=False)
    if not any(d.values()):
        console.print("no differences")
    return 0


@store_app.command("lineage")
def lineage(rubric_set_id: Annotated[str, typer.Argument(metavar="ID")], home: Home = None,
            as_json: Json = False) -> int:
    """Trace a rubric set back to its root: parents, datasets, MLflow runs, training and evaluations."""
    chain = _store(home).lineage(rubric_set_id)
    if as_json:
        print_json(chain)
        return 0
    for depth, node in enumerate(chain):
        pad = "  " * depth
        console.print(f"{pad}[bold]{node['rubric_set_id']}[/] dataset={node.get('dataset_digest') or '-'} "
                      f"generator={node.get('generator_model') or '-'} prompts={node.get('prompt_version') or '-'}")
        for r in node.get("mlflow_runs", []):
            console.print(f"{pad}  mlflow {r['stage']}: run {r['mlflow_run_id']} (parent {r['parent_run_id'] or '-'})")
        for r in node.get("training_runs", []):
            console.print(f"{pad}  training {r['run_id']}: {r['status']} lora={r['lora_uri'] or '-'}")
        for r in node.get("evaluations", []):
            console.print(f"{pad}  evaluation {r['eval_id']} ({r['kind']}) report={r['report_uri'] or '-'}")
    return 0


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")
