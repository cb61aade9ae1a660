"""`arr eval …` / `arr report …` end to end on the scene world (offline scene VLM, tiny toy policy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from arr_cli import main
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.sim.world import make_pairs
from arr_core.store.store import Store

# A 1-layer, 32-wide toy policy: same classes as the shipped one, a fraction of the cost.
TINY = {"layers": 1, "width": 32, "head_dim": 16, "text_layers": 1, "text_width": 32}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evalcli")
    pairs = make_pairs("t2i", 8, 0, root / "pairs")
    home = root / "home"
    rs = RubricSet(task="t2i", criteria=["All objects named in the caption are present.",
                                         "Each object has the colour the caption asks for.",
                                         "The number of objects matches the caption.",
                                         "Objects are in the spatial relation the caption states.",
                                         "The image is sharp, without blur or noise."],
                   metadata={"generator_model": "hand-written"})
    rid = Store(home).put_rubric_set(rs)
    return {"pairs": pairs, "home": home, "root": root, "rid": Path(rid)}


def _ids(capsys) -> list[str]:
    return [ln.strip() for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("ev-")]


def test_eval_preference_and_report(world, capsys) -> None:
    out = world["root"] / "pref.html"
    rc = main(["eval", "preference", "--pairs", str(world["pairs"]), "--rubrics", str(world["rid"])[:10],
               "--modes", "single,swap", "--n-boot", "100", "--report", str(out), "--home", str(world["home"])])
    assert rc == 0
    eid = _ids(capsys)[-1]
    html = out.read_text()
    assert "Accuracy vs human labels" in html and "offline scene VLM" in html
    again = world["root"] / "again.html"
    assert main(["report", eid[:9], "--out", str(again), "--home", str(world["home"])]) == 0
    assert again.read_text() == html
    rows = Store(world["home"]).fetchall("eval_result_get", [eid])
    assert rows[0]["report_uri"] == str(again.resolve())
    assert main(["report", "--list", "--home", str(world["home"])]) == 0


def test_eval_cardinality_and_transfer(world, capsys) -> None:
    rc = main(["eval", "preference", "--pairs", str(world["pairs"]), "--rubrics", str(world["rid"]),
               "--ablation", "cardinality", "--ks", "1,5,10", "--n-boot", "100", "--home", str(world["home"])])
    assert rc == 0
    from arr_core.bench.results import load_eval_row

    row = load_eval_row(Store(world["home"]), _ids(capsys)[-1])
    rows = {r[0]: r for r in row["metrics"]["tables"][0]["rows"]}
    assert set(rows) == {0, 1, 5, 10} and rows[10][4] == "unavailable: the set has 5 criteria"
    assert rows[5][1]["lo"] <= rows[5][1]["point"] <= rows[5][1]["hi"]
    rc = main(["eval", "preference", "--pairs", str(world["pairs"]), "--rubrics", str(world["rid"]),
               "--ablation", "transfer", "--judge", "scene:0", "--judge", "scene:3", "--n-boot", "100",
               "--home", str(world["home"])])
    assert rc == 0
    assert "Cross-model transfer" in capsys.readouterr().out


def test_eval_generate_geneval_with_a_tiny_toy_policy(world, capsys) -> None:
    from arr_core.sim.toy_policy import ToyPolicy

    folder = ToyPolicy.random(seed=0, **TINY).save(world["root"] / "toy")
    rc = main(["eval", "generate", "--policy", str(folder), "--benchmark", "geneval", "--prompts",
               str(world["pairs"].parent / "geneval_metadata.jsonl"), "--limit", "3", "--n-per-prompt", "2",
               "--steps", "2", "--n-boot", "100", "--home", str(world["home"])])
    assert rc == 0
    eid = _ids(capsys)[-1]
    row = Store(world["home"]).fetchall("eval_result_get", [eid])[0]
    assert row["kind"] == "geneval" and row["policy_id"].startswith("pol-")


@pytest.mark.parametrize("args, msg", [
    (["eval", "preference", "--ablation", "nonsense"], "--ablation must be"),
    (["eval", "generate", "--policy", "toy", "--benchmark", "winrate"], "pass --lora"),
    (["eval", "generate", "--policy", "toy", "--benchmark", "dpg"], "--benchmark must be"),
    (["report", "ev-doesnotexist", "--out", "x.html"], "no evaluation"),
])
def test_bad_input_exits_2_with_a_message(world, capsys, args, msg) -> None:
    extra = ["--pairs", str(world["pairs"]), "--rubrics", str(world["rid"])] if args[:2] == ["eval", "preference"] else []
    extra += ["--prompts", str(world["pairs"].parent / "geneval_metadata.jsonl")] if args[:2] == ["eval", "generate"] else []
    assert main([*args, *extra, "--home", str(world["home"])]) == 2
    assert msg in capsys.readouterr().err
