"""Shared CLI pieces: the ``--home`` option, console output and error handling."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from arr_core.home import resolve_home

# Options of every command that reads a dataset (arr data validate/import, arr induce, arr judge):
# defined once so the flags mean the same everywhere.
AllowOutside = Annotated[bool, typer.Option("--allow-outside", help="Allow image paths outside the dataset "
                                            "file's folder (or --root).")]
AllowRemote = Annotated[bool, typer.Option("--allow-remote", help="Fetch http(s) image URLs named in the "
                                           "dataset (off: no request leaves the machine; size and time "
                                           "are capped when on).")]
Root = Annotated[Optional[Path], typer.Option("--root", help="Folder that relative image paths are relative "
                                            "to (default: the dataset file's folder; the ARR reference's "
                                            "example files name images relative to the repository root).")]
Format = Annotated[Optional[str], typer.Option("--format", help="Dataset format: arr (reference / project), "
                                               "hpdv3, mmrb2, editreward-bench, pickapic, hpdv2, imagereward, "
                                               "imagerewarddb (default: detected from the fields; printed).")]


def _json_mode(ctx: typer.Context, value: bool) -> bool:
    """With --json, everything the command prints for people (format lines, notes, progress) goes to
    stderr until the command ends, so stdout carries the JSON document alone."""
    if value:
        import sys

        saved = console._file  # None: follow sys.stdout (pytest swaps it per test)
        console.file = sys.stderr
        _json_output.append(True)  # no progress drawn while the JSON command runs
        ctx.call_on_close(lambda: (setattr(console, "_file", saved), _json_output.pop()))
    return value


_json_output: list[bool] = []


# --json on every read command: one JSON document on stdout (for scripts), nothing else there.
Json = Annotated[bool, typer.Option("--json", callback=_json_mode, help="Print JSON (for scripts) instead "
                                    "of tables; other output goes to stderr.")]


def print_json(obj: object) -> None:
    import json
    import sys

    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

Home = Annotated[
    Optional[Path],
    typer.Option("--home", envvar="ARR_HOME", show_envvar=True,
                 help="State folder for the store, MLflow and Prefect results (default ./.arr)."),
]


@contextlib.contextmanager
def progress(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A progress bar (``total`` known) or a spinner with the elapsed time, on stdout only when it is
    a terminal and the command prints no JSON (scripts and pipes get the plain output, unchanged).
    Yields ``update(completed, total)``, the shape of the core's ``on_progress(done, total)``
    callbacks (judge_many, load_dataset, the generation recipe); the bar disappears when the block ends."""
    if _json_output or not console.is_terminal:
        yield lambda completed=None, total=None: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda completed=None, total=None: bar.update(task, completed=completed, total=total)


def deprecated_alias(old_flag: str, old_value: Any, new_flag: str, new_value: Any) -> Any:
    """One name per flag across commands: an old spelling still works for now, with a warning on
    stderr; giving both is an error."""
    if old_value is None:
        return new_value
    if new_value is not None:
        from arr_core.errors import InputError

        raise InputError(f"give {new_flag} only ({old_flag} is its deprecated spelling)", field=old_flag)
    err_console.print(f"[yellow]warning:[/] {old_flag} is deprecated: use {new_flag}")
    return old_value


def stored_dataset(ref: Path | str, home: Optional[Path]) -> Any:
    """The dataset a ``ds-…`` id names (what ``arr data import`` prints), read back from the store,
    when no file of that name exists; ``None`` for a path. Commands that take PAIRS accept either."""
    s = str(ref)
    if not s.startswith("ds-") or Path(s).exists():
        return None
    from arr_core.data.dataset import Dataset
    from arr_core.store.store import Store

    store = Store(resolve_home(home), read_only=True)
    info = store.get_dataset(s)  # NotFoundError naming the id and the store
    return Dataset(records=store.get_dataset_records(s), name=info["name"], source_uri=info["source_uri"] or s,
                   task=info["task"])


def home_dir(home: Optional[Path]) -> Path:
    return resolve_home(home)


def resolve_rubrics(store: Any, rubrics: str) -> Any:
    """``--rubrics`` as given on the command line: ``none`` → None; a reference-format text file →
    that rubric set (stored, so later runs can name its id); otherwise a store id or unique prefix."""
    from arr_core.errors import InputError
    from arr_core.rubrics.rubric_set import RubricSet

    if rubrics.lower() == "none":
        return None
    path = Path(rubrics)
    if not path.is_file():
        return store.get_rubric_set(rubrics)
    try:
        rs = RubricSet.from_text(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise InputError(str(e), file=str(path)) from None
    store.put_rubric_set(rs)
    return rs


def set_project_dir(variable: str = "ARR_PROJECT_DIR") -> dict[str, str]:
    """The deployments' Prefect pull step (prefect.yaml): change into the arr-pipeline checkout named by
    ``$variable`` in the environment of the flow run the worker starts, read when that run starts. (A
    ``{{ $VAR }}`` template in prefect.yaml would be filled by `prefect deploy` on the deploying
    machine and stored as that path.) Importable on the worker before any code is pulled: arr_cli is
    installed."""
    import os

    value = os.environ.get(variable)
    if not value:
        raise RuntimeError(f"{variable} is not set in this worker's environment: set it to the arr-pipeline "
                           "checkout on this host (e.g. ARR_PROJECT_DIR=/opt/arr-pipeline prefect worker start ...)")
    path = Path(value).expanduser().resolve()
    if not (path / "flows" / "pipeline.py").is_file():
        raise RuntimeError(f"{variable}={value} is not an arr-pipeline checkout on this host (no flows/pipeline.py)")
    os.chdir(path)
    return {"directory": str(path)}


def require_prefect_code() -> None:
    """Make the Prefect code (``flows/``, ``tasks/``) importable, or fail with what to do.

    The wheel installs ``arr_core`` and ``arr_cli`` only: top-level ``flows``/``tasks`` packages in
    site-packages would collide with other projects' modules of those names. The pipeline commands run
    them from a checkout of this repository, as Prefect deployments do: an editable install
    (``bash scripts/setup.sh``) or the current folder or ``ARR_PROJECT_DIR`` naming the checkout."""
    import importlib.util
    import os
    import sys

    if importlib.util.find_spec("flows.pipeline") is not None and importlib.util.find_spec("tasks._env"):
        return
    for root in (os.environ.get("ARR_PROJECT_DIR"), os.getcwd()):
        if root and (Path(root) / "flows" / "pipeline.py").is_file() and (Path(root) / "tasks").is_dir():
            sys.path.insert(0, str(Path(root).resolve()))
            return
    from arr_core.errors import ArrError

    raise ArrError("the pipeline commands run the Prefect flows and tasks from a checkout of arr-pipeline "
                   "(they are not installed into site-packages): run from the checkout's root, install it "
                   "editable (bash scripts/setup.sh), or set ARR_PROJECT_DIR to the checkout")
