"""``arr induce`` and ``arr judge`` end to end on the scene world (offline scene VLM)."""

from __future__ import annotations

import re

import pytest

from arr_cli import main
from arr_core.sim.world.pairs import make_pairs


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Seed pairs (make_pairs seed=21, 8 pairs) and held-out pairs (seed=22, 16 pairs)."""
    base = tmp_path_factory.mktemp("cli")
    return make_pairs("t2i", 8, 21, base / "seed"), make_pairs("t2i", 16, 22, base / "test")


def test_induce_then_judge(files, tmp_path, capsys):
    seed, test = files
    home = str(tmp_path / "home")
    assert main(["induce", "--pairs", str(seed), "--home", home]) == 0
    out = capsys.readouterr().out
    rid = out.strip().splitlines()[-1]
    assert re.fullmatch(r"rs-[0-9a-f]{16}", rid)
    assert "Rubric 1:" in out and "pairs used / passed / discarded" in out
    # rerunning with the same pairs on top of it: the parent is unchanged
    assert main(["induce", "--pairs", str(seed), "--home", home, "--parent", rid[:8]]) == 0
    assert "parent unchanged" in " ".join(capsys.readouterr().out.split())
    jcfg = tmp_path / "judge.yaml"
    jcfg.write_text("order: random\nseed: 3\nvlm: {backend: scene, concurrency: 2}\n")
    for rubrics, extra in ((rid, ["--order", "swap"]), ("none", ["--order", "single"]),
                           (rid, ["--config", str(jcfg)])):
        assert main(["judge", "--rubrics", rubrics, "--pairs", str(test), "--home", home, *extra]) == 0
        out = capsys.readouterr().out
        assert re.search(r"accuracy \(95 % bootstrap\)\s*│\s*[01]\.\d{3} \[", out)
        assert "tie rate" in out and "abstain rate" in out and "images reversed" in out
        assert f"order {'random' if '--config' in extra else extra[1]}" in " ".join(out.split())


def test_judge_refuses_the_pairs_the_rubrics_were_induced_from(files, tmp_path, capsys):
    _, pairs = files  # 16 pairs: a non-empty test split
    home = str(tmp_path / "home")
    assert main(["induce", "--pairs", str(pairs), "--home", home, "--split", "seed"]) == 0
    rid = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["judge", "--rubrics", rid, "--pairs", str(pairs), "--home", home]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"were used to induce rubric set {rid}" in err and "--split test" in err
    assert main(["judge", "--rubrics", rid, "--pairs", str(pairs), "--home", home, "--split", "test"]) == 0
    assert "used to induce" not in capsys.readouterr().out
    assert main(["judge", "--rubrics", rid, "--pairs", str(pairs), "--home", home, "--allow-seed-pairs"]) == 0
    assert "used to induce the rubrics)" in capsys.readouterr().out


def test_judge_accepts_reference_rubrics_text(files, tmp_path, capsys):
    _, test = files
    text = tmp_path / "rubrics.txt"
    text.write_text("Rubric 1:\nTheme: Counts\n- Tip: Each object appears exactly the number of times the "
                    "caption states.\n\nRubric 2:\nTheme: Colour\n- Tip: Object colours match the colours "
                    "named in the caption.\n")
    assert main(["judge", "--rubrics", str(text), "--pairs", str(test), "--home", str(tmp_path / "h")]) == 0
    assert "rubrics rs-" in " ".join(capsys.readouterr().out.split())
    # --split judges only that deterministic split
    from arr_core.data.dataset import load_dataset

    n_test = len(load_dataset(test).split()["test"])
    assert main(["judge", "--rubrics", str(text), "--pairs", str(test), "--home", str(tmp_path / "h"),
                 "--split", "test"]) == 0
    assert re.search(rf"pairs\s*│\s*{n_test}\s*│", capsys.readouterr().out)


def test_cli_input_errors_exit_2(files, tmp_path, capsys):
    seed, test = files
    home = str(tmp_path / "home")
    assert main(["judge", "--rubrics", "none", "--pairs", str(test), "--home", home, "--order", "both"]) == 2
    assert main(["judge", "--rubrics", "rs-nothere", "--pairs", str(test), "--home", home]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_epochs: 0\n")
    assert main(["induce", "--pairs", str(seed), "--home", home, "--config", str(bad)]) == 2
    assert "max_epochs" in " ".join(capsys.readouterr().err.split())
    assert main(["induce", "--pairs", str(seed), "--home", home, "--backend", "gpt"]) == 2
    jbad = tmp_path / "judge.yaml"
    jbad.write_text("order: both\n")
    assert main(["judge", "--rubrics", "none", "--pairs", str(test), "--home", home, "--config", str(jbad)]) == 2
    assert "order" in " ".join(capsys.readouterr().err.split())
