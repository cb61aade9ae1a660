"""Shared CLI pieces: the ``--home`` option, console output and error handling."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

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
