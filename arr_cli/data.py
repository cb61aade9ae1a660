"""`arr data …`: validate and import preference datasets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from arr_cli.common import (
    AllowOutside,
    AllowRemote,
    Format,
    Home,
    Json,
    Root,
    console,
    home_dir,
    print_json,
    progress,
    stored_dataset,
)
from arr_core.data.images import DEFAULT_MAX_IMAGE_SIDE
from arr_core.errors import InputError

data_app = typer.Typer(help="Validate and import preference datasets: ARR reference JSON/JSONL/YAML, the "
                       "project's own JSONL/Parquet, or a published benchmark format (HPDv3, MM-RewardBench2, "
                       "EditReward-Bench, Pick-a-Pic, HPDv2, ImageReward; see docs/data.md).", no_args_is_help=True)

Task = Annotated[Optional[str], typer.Option("--task", help="Expected task: t2i | edit (default: inferred "
                                             "per record).")]
AllowTies = Annotated[bool, typer.Option("--allow-ties", help="Accept tied label_rank values.")]
MaxSide = Annotated[int, typer.Option("--max-image-side", help="Refuse images larger than this many pixels "
                                      "per side.")]
DataPath = Annotated[Path, typer.Argument(help="A dataset file, a folder (its dataset files) or a quoted glob "
                                          "such as `'bench/*/train-*.parquet'` (arr data validate: also a "
                                          "dataset id from arr data import).")]


def describe_format(path: Path, fmt: str | None, quiet: bool = False) -> str:
    """Resolve the dataset's format (named, or detected from its fields), print it, return its name."""
    from rich.markup import escape

    from arr_core.data.formats import FORMATS, resolve_format

    name, how = resolve_format(path, fmt)
    if not quiet:
        console.print(f"format: [bold]{name}[/] ({escape(how)}: {escape(FORMATS[name].title)})", soft_wrap=True)
    return name


@data_app.command("validate")
def validate(path: DataPath, task: Task = None, allow_outside: AllowOutside = False,
             allow_ties: AllowTies = False, max_image_side: MaxSide = DEFAULT_MAX_IMAGE_SIDE,
             allow_remote: AllowRemote = False, root: Root = None, fmt: Format = None,
             as_json: Json = False, home: Home = None) -> int:
    """Check a dataset (or a ``ds-…`` id from ``arr data import``: its stored records) and print its
    format, record counts and every problem found (exit 2 if any record is invalid). Writes nothing."""
    from arr_core.data.dataset import Dataset, scan_dataset

    stored = stored_dataset(path, home)
    if stored is not None:  # validated when imported: the counts of what the store holds
        name, records, problems = "store", stored.records, []
    else:
        name = describe_format(path, fmt, quiet=as_json)
        records, problems = scan_dataset(path, task=task, allow_outside=allow_outside, allow_ties=allow_ties,
                                         max_image_side=max_image_side, allow_remote=allow_remote, root=root,
                                         format=name)
    fatal = [p for p in problems if p.fatal]
    notes = [p for p in problems if not p.fatal]
    ds = Dataset(records=records, name=path.stem, source_uri=str(path), task=task or "mixed")
    tasks = Counter(r.task for r in records)
    n_cands = Counter(len(r.images) for r in records)
    splits = {k: len(v) for k, v in ds.split().items()}
    if as_json:
        print_json({"path": str(path), "format": name, "valid_records": len(records),
                    "invalid_records": len({p.record for p in fatal}), "tasks": dict(tasks),
                    "candidates_per_record": {str(k): v for k, v in n_cands.items()}, "splits": splits,
                    "digest": ds.digest if records else None, "ok": not fatal,
                    "errors": [str(p) for p in fatal], "notes": [str(p) for p in notes]})
        if fatal:
            raise typer.Exit(2)
        return 0
    table = Table(title=f"{path}", show_header=False)
    table.add_row("valid records", str(len(records)))
    table.add_row("invalid records", str(len({p.record for p in fatal})))
    table.add_row("tasks", ", ".join(f"{k}: {v}" for k, v in sorted(tasks.items())) or "-")
    table.add_row("candidates per record", ", ".join(f"{k}: {v}" for k, v in sorted(n_cands.items())) or "-")
    table.add_row("splits (seed/validation/test)", "/".join(str(splits[s]) for s in ("seed", "validation", "test")))
    table.add_row("notes", str(len(notes)))
    if records:
        table.add_row("dataset digest", ds.digest)
    console.print(table)
    for p in fatal:
        console.print(f"[red]error[/] {path}: {p}")
    for p in notes:
        console.print(f"[yellow]note[/]  {path}: {p}")
    if fatal:
        console.print(f"[red]{len(fatal)} problem(s): the dataset would be refused[/]")
        raise typer.Exit(2)
    console.print("[green]ok[/]")
    return 0


@data_app.command("import")
def import_(path: DataPath, name: Annotated[str, typer.Option("--name", help="A name for the dataset.")],
            task: Task = None, allow_outside: AllowOutside = False, allow_ties: AllowTies = False,
            max_image_side: MaxSide = DEFAULT_MAX_IMAGE_SIDE, allow_remote: AllowRemote = False,
            root: Root = None, fmt: Format = None, home: Home = None) -> int:
    """Validate and store a dataset (all or nothing) and print its format and content-derived id."""
    from arr_core.data.dataset import load_dataset
    from arr_core.store import Store

    if not name.strip():
        raise InputError("--name must not be empty", field="name")
    fmt_name = describe_format(path, fmt)
    with progress(f"checking {path}", total=0) as bar:
        ds = load_dataset(path, task=task, name=name, allow_outside=allow_outside, allow_ties=allow_ties,
                          max_image_side=max_image_side, allow_remote=allow_remote, root=root, format=fmt_name,
                          on_progress=bar)
    with progress(f"storing {len(ds.records)} records"):
        dataset_id = Store(home_dir(home)).put_dataset(ds)
    for n in ds.notes:
        console.print(f"[yellow]note[/] {path}: {n}")
    console.print(f"imported {len(ds.records)} records as [bold]{dataset_id}[/] (task {ds.task}); use the id "
                  f"as the pairs of arr induce / judge / eval preference / eval zeroshot --pairs", soft_wrap=True)
    console.print(dataset_id)
    return 0


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
