"""Shared CLI pieces: the ``--home`` option, console output and error handling."""

from __future__ import annotations

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


console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

Home = Annotated[
    Optional[Path],
    typer.Option("--home", envvar="ARR_HOME", show_envvar=True,
                 help="State folder for the store, MLflow and Prefect results (default ./.arr)."),
]


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
