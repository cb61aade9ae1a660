"""Finding the project's SQL files, installed (``arr_core/_sql``) or from a checkout (``sql/``)."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=1)
def sql_root() -> Path:
    installed = Path(__file__).resolve().parents[1] / "_sql"
    if installed.is_dir():
        return installed
    checkout = Path(__file__).resolve().parents[2] / "sql"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"SQL files not found in {installed} or {checkout}; reinstall arr-pipeline")


@functools.cache
def query(name: str) -> str:
    """The text of ``sql/queries/NAME.sql``."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"invalid query name {name!r}")
    path = sql_root() / "queries" / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no SQL query named {name!r} (looked for {path})")
    return path.read_text(encoding="utf-8")


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every ``sql/migrations/NNN_name.sql``, in order."""
    out = []
    for p in sorted((sql_root() / "migrations").glob("*.sql")):
        num, _, name = p.stem.partition("_")
        if not num.isdigit():
            raise ValueError(f"migration file {p.name} must be named NNN_name.sql")
        out.append((int(num), name, p.read_text(encoding="utf-8")))
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration numbers in {sql_root() / 'migrations'}")
    return out
