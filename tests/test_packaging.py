"""A non-editable install carries the SQL files (and prefect.yaml) inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_sql_and_packages(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = tmp_path.glob("arr_pipeline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "arr_core/_sql/migrations/001_core.sql" in names
    for sql in (ROOT / "sql" / "queries").glob("*.sql"):
        assert f"arr_core/_sql/queries/{sql.name}" in names
    assert "arr_core/_deploy/prefect.yaml" in names
    assert any(n.startswith("arr_cli/") for n in names)
    # flows/ and tasks/ run from a checkout: no bare top-level packages of those names in site-packages.
    assert not any(n.startswith(("flows/", "tasks/")) for n in names)


def test_sql_root_prefers_installed_copy(tmp_path, monkeypatch):
    from arr_core.store import sqlfiles

    assert sqlfiles.sql_root() == ROOT / "sql"  # from a checkout
    assert "CREATE TABLE IF NOT EXISTS rubric_sets" in sqlfiles.migrations()[0][2]


def test_pipeline_commands_name_the_checkout_when_the_prefect_code_is_missing(tmp_path, monkeypatch):
    import importlib.util

    from arr_cli import common
    from arr_core.errors import ArrError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ARR_PROJECT_DIR", raising=False)
    with pytest.raises(ArrError, match="ARR_PROJECT_DIR"):
        common.require_prefect_code()
    monkeypatch.setenv("ARR_PROJECT_DIR", str(ROOT))
    before = list(sys.path)
    try:
        common.require_prefect_code()
        assert sys.path[0] == str(ROOT)
    finally:
        sys.path[:] = before
