"""The state folder: everything arr-pipeline writes locally (store, MLflow, Prefect results).

Resolution order: an explicit ``--home DIR``, then ``ARR_HOME``, then ``./.arr``.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = ".arr"


def resolve_home(home: str | os.PathLike[str] | None = None, *, create: bool = True) -> Path:
    """Return the absolute state folder, creating it when ``create`` is set."""
    raw = home if home is not None else os.environ.get("ARR_HOME") or DEFAULT_HOME
    path = Path(raw).expanduser().resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def store_path(home: Path) -> Path:
    return home / "store" / "arr.duckdb"


def parquet_root(home: Path) -> Path:
    return home / "store" / "parquet"
