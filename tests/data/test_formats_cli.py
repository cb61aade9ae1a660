"""Every benchmark format through the CLI (issue 24, done-when): `arr data validate` detects it and,
named with `--format`, loads the fixture written in its published layout (tests/data/test_formats.py's
writers); `arr data import` stores it. Image roots are passed with `--root` where the format's own
evaluation script takes an image prefix (HPDv2's image folder, ImageReward's --img_prefix)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from arr_cli import main

# The writers of test_formats.py (tests/data has no package: load the file by path, as tests/bench does).
_spec = importlib.util.spec_from_file_location("_format_writers_cli", Path(__file__).with_name("test_formats.py"))
w = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(w)

# name → (writer(tmp) → (dataset path, --root or None), records expected)
CASES = {
    "hpdv3": (lambda t: (w.write_hpdv3(t), None), 2),
    "mmrb2": (lambda t: (w.write_mmrb2_json(t, "edit"), None), 1),  # the 2-image response is skipped
    "editreward-bench": (lambda t: (w.write_editreward(t / "2pair" / "train-00000-of-00001.parquet"), None), 3),
    "pickapic": (lambda t: (w.write_pickapic(t / "test.parquet"), None), 3),  # has_label false is skipped
    "hpdv2": (lambda t: (w.write_hpdv2(t), t / "test"), 2),
    "imagereward": (lambda t: (w.write_imagereward(t), t / "test_images"), 1),
    "imagerewarddb": (lambda t: (w.write_imagerewarddb(t / "db.parquet"), None), 2),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_validate_detects_and_import_stores_each_format(name: str, tmp_path: Path, capsys) -> None:
    write, n = CASES[name]
    path, root = write(tmp_path / "d")
    extra = ["--root", str(root)] if root else []
    assert main(["data", "validate", str(path), "--allow-ties", *extra]) == 0
    out = capsys.readouterr().out
    assert f"format: {name} (detected" in out and out.rstrip().endswith("ok")
    home = ["--home", str(tmp_path / "home")]
    assert main(["data", "import", str(path), "--name", name, "--format", name, "--allow-ties", *extra, *home]) == 0
    assert f"imported {n} records" in capsys.readouterr().out


def test_mmrb2_hugging_face_parquet_through_the_cli(tmp_path: Path, capsys) -> None:
    path = w.write_mmrb2_hf(tmp_path / "edit.parquet")
    assert main(["data", "validate", str(path), "--format", "mm-rewardbench2"]) == 0
    assert "format: mmrb2 (named" in capsys.readouterr().out
