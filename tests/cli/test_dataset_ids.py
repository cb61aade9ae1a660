"""Issue 25 item 5: the ``ds-…`` id that ``arr data import`` prints is accepted wherever a command takes
pairs: arr eval preference / zeroshot --pairs and arr data validate (induce/judge: test_cli_scripting.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arr_cli import main


@pytest.fixture()
def imported(tmp_path: Path, capsys) -> tuple[str, str, Path]:
    from arr_core.sim.world.pairs import make_pairs

    home = str(tmp_path / "home")
    path = make_pairs("t2i", 6, 0, tmp_path / "pairs", size=32)
    assert main(["data", "import", str(path), "--name", "six", "--home", home]) == 0
    dataset_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert dataset_id.startswith("ds-")
    return home, dataset_id, path


def test_eval_preference_and_zeroshot_take_a_dataset_id(imported, capsys) -> None:
    home, dataset_id, path = imported
    by_file: dict[str, object] = {}
    for ref in (str(path), dataset_id):  # the same records whether named by file or by id
        assert main(["eval", "preference", "--pairs", ref, "--modes", "single", "--n-boot", "50",
                     "--home", home, "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        by_file[ref] = doc["summary"]
    assert by_file[dataset_id] == by_file[str(path)]
    # One name per metric: the order gap is named as `arr judge` names it (its position gap is another one).
    (bias,) = [t for t in doc["tables"] if t["title"].startswith("Position bias")]
    assert "order gap (as given − reversed, 95% CI)" in bias["columns"]
    assert not any(c.startswith("gap") or "position gap" in c for c in bias["columns"])
    assert main(["eval", "zeroshot", "--pairs", dataset_id, "--ks", "1", "--n-boot", "50", "--home", home,
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    assert main(["eval", "preference", "--pairs", "ds-not-there", "--home", home]) == 2
    assert "ds-not-there" in capsys.readouterr().err


def test_data_validate_takes_a_dataset_id(imported, capsys) -> None:
    home, dataset_id, path = imported
    assert main(["data", "validate", dataset_id, "--home", home, "--json"]) == 0
    by_id = json.loads(capsys.readouterr().out)
    assert main(["data", "validate", str(path), "--json"]) == 0
    by_path = json.loads(capsys.readouterr().out)
    assert by_id["format"] == "store" and by_id["ok"] and by_id["valid_records"] == 6
    assert by_id["digest"] == by_path["digest"] and by_id["splits"] == by_path["splits"]
    assert main(["data", "validate", "ds-not-there", "--home", home]) == 2
    assert "ds-not-there" in capsys.readouterr().err
