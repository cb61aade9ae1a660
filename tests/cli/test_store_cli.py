"""`arr store …` end to end through the CLI entry point."""

from __future__ import annotations

from arr_cli import main
from arr_core.rubrics import RubricSet, Theme
from arr_core.store import Store

REFERENCE_TEXT = """Rubric 1:
Theme: Faithful object counts
- Tip: The number of each object matches the prompt.
- Tip: No extra objects appear.

Rubric 2:
Theme: Visual quality
- Tip: Edges are sharp and the image is free of noise.
"""


def test_store_cli_cycle(tmp_path, capsys):
    home = str(tmp_path / "home")
    ref = tmp_path / "rubrics.txt"
    ref.write_text(REFERENCE_TEXT)
    assert main(["store", "import", str(ref), "--home", home]) == 0
    (rid,) = [r["rubric_set_id"] for r in Store(home).list_rubric_sets()]
    assert main(["store", "ls", "--home", home]) == 0
    assert main(["store", "show", rid[:7], "--home", home]) == 0
    out = capsys.readouterr().out
    assert "Faithful object counts" in out and rid in out
    for fmt, name in (("text", "o.txt"), ("json", "o.json"), ("parquet", "o_pq")):
        assert main(["store", "export", rid, "--format", fmt, "--out", str(tmp_path / name), "--home", home]) == 0
    assert (tmp_path / "o.txt").read_text() == REFERENCE_TEXT
    # A second rubric set derived from the first, then diff and lineage.
    child = RubricSet(task="t2i", themes=[Theme(theme="Faithful object counts",
                                                tips=["The number of each object matches the prompt."])],
                      criteria=["The number of each object matches the prompt."], metadata={"parent_id": rid})
    Store(home).put_rubric_set(child)
    capsys.readouterr()
    assert main(["store", "diff", rid, child.id, "--home", home]) == 0
    out = capsys.readouterr().out
    assert "- theme: Visual quality" in out and "- tip [Faithful object counts]: No extra objects appear." in out
    assert main(["store", "lineage", child.id, "--home", home]) == 0
    out = capsys.readouterr().out
    assert out.index(rid) < out.index(child.id)
    # Importing the Parquet export into a fresh home gives the same id.
    home2 = str(tmp_path / "home2")
    assert main(["store", "import", str(tmp_path / "o_pq"), "--home", home2]) == 0
    assert [r["rubric_set_id"] for r in Store(home2).list_rubric_sets()] == [rid]


def test_bad_rubric_text_is_an_input_error(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("Rubric 1:\n- Tip: a tip with no theme\n")
    assert main(["store", "import", str(bad)]) == 2
    assert "without a 'Theme:' line" in capsys.readouterr().err


def test_help_for_every_store_and_data_command(capsys):
    for cmd in (["store", "ls"], ["store", "show"], ["store", "export"], ["store", "import"], ["store", "diff"],
                ["store", "lineage"], ["data", "validate"], ["data", "import"]):
        assert main([*cmd, "--help"]) == 0
        assert "--home" in capsys.readouterr().out or cmd == ["data", "validate"]


def test_read_commands_script_with_json_and_print_whole_ids(tmp_path, capsys, monkeypatch):
    import json

    home = str(tmp_path / "home")
    ref = tmp_path / "rubrics.txt"
    ref.write_text(REFERENCE_TEXT)
    assert main(["store", "import", str(ref), "--home", home]) == 0
    capsys.readouterr()
    assert main(["store", "ls", "--home", home, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    (rid,) = [r["rubric_set_id"] for r in listing["rubric_sets"]]
    assert main(["store", "show", rid, "--home", home, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["criteria"] and shown["themes"][0]["theme"] == "Faithful object counts"
    assert main(["store", "lineage", rid, "--home", home, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["rubric_set_id"] == rid
    # a narrow terminal wraps the id column instead of cutting it with an ellipsis
    monkeypatch.setenv("COLUMNS", "60")
    from arr_cli import common

    monkeypatch.setattr(common.console, "_width", 60, raising=False)
    assert main(["store", "ls", "--home", home]) == 0
    out = capsys.readouterr().out
    rubric_table = out.split("datasets")[0]
    first_cells = [ln.split("│")[1].strip() for ln in rubric_table.splitlines() if ln.startswith("│")]
    assert "…" not in out and "".join(first_cells) == rid  # folded over lines, never cut


def test_version(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"arr-pipeline {version('arr-pipeline')}"
