"""Shared CLI pieces: the ``--home`` option, console output and error handling."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from arr_core.home import resolve_home

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
