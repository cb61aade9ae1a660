"""The paper's preference protocol (issue 24 item 2) on a benchmark file in its published format
(EditReward-Bench Parquet, written by the loaders' own fixture writer): the bias-table maths against
hand-computed values, sane bootstrap bounds, the per-subset breakdown, the cost counters and the
cross-model transfer in one invocation."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from arr_core.bench import preference as pf
from arr_core.bench.results import load_eval_row
from arr_core.data.dataset import load_dataset
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.stats import paired_order_stats
from arr_core.store.store import Store
from arr_core.vlm.client import VLMClient

from .scripted import FirstBackend, RedBackend

_spec = importlib.util.spec_from_file_location("_format_writers", Path(__file__).parents[1] / "data" / "test_formats.py")
writers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(writers)

# candidate_1 is red, candidate_2 blue (the writer's images). People prefer red in rows 0-2 and blue in
# row 3; row 4 is a tie (A=B), which the protocol leaves out and counts.
ROWS = [("A>B", None, "2pair"), ("A>B", None, "2pair"), ("A>C", "AvsC", "3pair"), ("C>A", "AvsC", "3pair"),
        ("A=B", "AvsB", "2pair")]


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list:
    path = writers.write_editreward(tmp_path_factory.mktemp("erb") / "2pair" / "train-00000-of-00001.parquet", ROWS)
    return load_dataset(path, format="editreward-bench", allow_ties=True).records


def _rubrics() -> RubricSet:
    return RubricSet(task="edit", criteria=["the edited image is red"], metadata={"generator_model": "model-A"})


def _rows(res, title: str) -> list[list]:
    return res.table(title).rows


def test_paired_order_stats_hand_computed() -> None:
    st = paired_order_stats([1, 1, 0, 1], [0, 1, 0, 0], n_boot=500)
    assert st["forward"][0] == 0.75 and st["reverse"][0] == 0.25
    assert st["gap"][0] == 0.5 and st["balanced"][0] == 0.5
    for name, (p, lo, hi) in st.items():
        assert lo <= p <= hi, name
    # per-item gaps are 1, 0, 0, 1: every resampled mean lies in [0, 1], and the interval is not degenerate
    assert 0.0 <= st["gap"][1] < 0.5 < st["gap"][2] <= 1.0
    assert paired_order_stats([1.0], [0.0])["gap"] == (1.0, 1.0, 1.0)
    assert all(math.isnan(v) for v in paired_order_stats([], [])["gap"])
    with pytest.raises(ValueError, match="pair up"):
        paired_order_stats([1, 0], [1])


def test_bias_table_hand_computed_on_a_benchmark_file(records) -> None:
    first = FirstBackend()
    res = pf.run_paper({"first": VLMClient(first, cache_mode="off")}, records, n_boot=400)
    assert res.summary["n_pairs"] == 4 and res.summary["n_tied_labels"] == 1
    (row,) = [r for r in _rows(res, "Position bias") if r[1] == "no rubrics"]
    # The first-shown image always wins: forward picks candidate_1 (red: right in 3 of 4 pairs), reversed
    # picks candidate_2 (right in 1 of 4); gap 0.5; every pair is right in exactly one order.
    fw, rv, gap = row[3], row[4], row[5]
    assert (fw["point"], rv["point"], gap["point"]) == (0.75, 0.25, 0.5)
    assert row[6] == 1.0  # every winner flips
    (acc,) = _rows(res, "Accuracy vs human labels (paper protocol)")
    assert acc[5] == {"point": 0.5, "lo": 0.5, "hi": 0.5}  # order-balanced: 0.5 for every pair
    for cell in (fw, rv, gap):
        assert cell["lo"] <= cell["point"] <= cell["hi"] and -1.0 <= cell["lo"] and cell["hi"] <= 1.0
    assert 0.0 <= fw["lo"] < 0.75 and rv["hi"] > 0.25  # four pairs: wide, not degenerate


def test_subsets_cost_and_transfer_in_one_invocation(records) -> None:
    red, first = RedBackend(needs_rubrics=1), FirstBackend()
    judges = {"model-B": VLMClient(red, cache_mode="off"), "model-C": VLMClient(first, cache_mode="off")}
    res = pf.run_paper(judges, records, rubric_set=_rubrics(), n_boot=300)
    acc = {(r[0], r[1]): r for r in _rows(res, "Accuracy vs human labels (paper protocol)")}
    few = f"few-shot {_rubrics().id}"
    # model-B with A's rubrics ranks by redness in both orders: right on the 3 red-preferred pairs.
    b = acc[("model-B", few)]
    assert b[2] == "model-A" and b[3]["point"] == b[4]["point"] == b[5]["point"] == 0.75
    assert b[6]["point"] == pytest.approx(0.25)  # gain over its own no-rubric 0.5, paired
    assert acc[("model-B", "no rubrics")][5]["point"] == 0.5
    assert acc[("model-C", few)][5]["point"] == 0.5  # position-only judge: the rubrics do not help it
    assert res.summary["gain/model-B/fewshot/single"] == pytest.approx(0.25)
    # per subset (the records' meta 'subset'): 2pair = rows 0-1 (red preferred), 3pair = rows 2-3
    sub = {(r[0], r[1], r[2]): r for r in _rows(res, "Accuracy per subset (subset)")}
    assert sub[("2pair", "model-B", few)][3]["point"] == 1.0 and sub[("2pair", "model-B", few)][4] == 2
    assert sub[("3pair", "model-B", few)][3]["point"] == 0.5
    # cost: single mode, forward + reversed: 2 calls per pair per condition; the scripted backend reports
    # 1 prompt and 1 completion token per call
    cost = {(r[0], r[1]): r for r in _rows(res, "Cost")}
    (req, calls, hits, ptok, ctok, nbytes, per_pair) = cost[("model-B", f"judge · {few}")][2:]
    assert (req, calls, hits, ptok, ctok, per_pair) == (8, 8, 0, 8, 8, 2.0)
    assert nbytes > 3 * 8 * 50  # three PNGs per request (source + two candidates)
    assert red.calls == first.calls == 16  # two conditions each
    assert res.summary["cost/model-C/none/calls"] == 8.0


def test_cli_paper_protocol_with_judge_models(records, tmp_path: Path, capsys) -> None:
    from arr_cli import main

    path = writers.write_editreward(tmp_path / "erb.parquet", ROWS)
    rc = main(["eval", "preference", "--pairs", str(path), "--paper", "--judge-model", "scene-vlm-1",
               "--judge-model", "scene-vlm-2", "--n-boot", "50", "--home", str(tmp_path / "home"),
               "--report", str(tmp_path / "r.html")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "format: editreward-bench" in out
    row = load_eval_row(Store(tmp_path / "home"), out.strip().splitlines()[-1])
    assert row["kind"] == "preference-paper"  # apart from the plain preference benchmark in arr report --list
    titles = [t["title"] for t in row["metrics"]["tables"]]
    assert titles == ["Accuracy vs human labels (paper protocol)", "Position bias", "Accuracy per subset (subset)",
                      "Cost"]
    assert row["metrics"]["summary"]["n_tied_labels"] == 1
    for judge in ("scene:scene-vlm-1(seed 0)", "scene:scene-vlm-2(seed 0)"):
        assert f"cost/{judge}/none/calls" in row["metrics"]["summary"]
    assert (tmp_path / "r.html").stat().st_size > 1000
    # --ks belongs to the cardinality ablation and arr eval zeroshot: with --paper it is refused, not ignored
    assert main(["eval", "preference", "--pairs", str(path), "--paper", "--ks", "1,5", "--home",
                 str(tmp_path / "home")]) == 2
    assert "arr eval zeroshot --ks 1,5" in " ".join(capsys.readouterr().err.split())


def test_allow_ties_keeps_tied_pairs_for_induce_and_judge(tmp_path: Path, capsys) -> None:
    """Without --allow-ties a tied label refuses the file (exit 2); with it, induce sets the pair aside
    and counts it, and judge reports it apart from the accuracy."""
    import json

    from arr_cli import main
    from arr_core.sim.world.pairs import make_pairs

    pairs = make_pairs("t2i", 5, 5, tmp_path / "w", size=48)
    rows = json.loads(pairs.read_text())
    rows[1]["label_rank"] = [1, 1]
    pairs.write_text(json.dumps(rows))
    home = ["--home", str(tmp_path / "home")]
    assert main(["induce", "--pairs", str(pairs), "--backend", "scene", *home]) == 2
    assert "record 1, field 'label_rank'" in capsys.readouterr().err
    assert main(["induce", "--pairs", str(pairs), "--backend", "scene", "--allow-ties", *home]) == 0
    rid = capsys.readouterr().out.strip().splitlines()[-1]
    rs = Store(tmp_path / "home").get_rubric_set(rid)
    stats = rs.metadata["statistics"]
    assert stats["tied_pairs_skipped"] == 1 and stats["pairs_used"] == 4
    assert main(["judge", "--rubrics", "none", "--pairs", str(pairs), *home]) == 2
    capsys.readouterr()
    assert main(["judge", "--rubrics", "none", "--pairs", str(pairs), "--allow-ties", *home]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "pairs with a tied label" in out and "│ pairs │ 4 │" in out  # the accuracy counts 4 pairs


class _DeadBackend(FirstBackend):
    model = "dead-1"

    async def chat(self, messages, **kw):
        from arr_core.vlm.base import VLMTransportError

        self.calls += 1
        raise VLMTransportError("connection refused")


def test_a_dead_endpoint_is_an_error_not_an_accuracy(records) -> None:
    from arr_core.errors import EndpointError

    with pytest.raises(EndpointError, match="judge dead \\(no rubrics\\).*dead-1.*8 of 8 items"):
        pf.run_paper({"dead": VLMClient(_DeadBackend(), cache_mode="off")}, records, n_boot=50)
    with pytest.raises(EndpointError, match="zero-shot rubrics k=5"):
        pf.run_paper({"dead": VLMClient(_DeadBackend(), cache_mode="off")}, records, zeroshot_ks=[5], n_boot=50)
