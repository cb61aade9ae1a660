"""Preference benchmarks: hand-checked numbers with scripted judges, intervals, store round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from arr_core.bench import preference as pf
from arr_core.bench.report import render_html
from arr_core.bench.results import load_eval_row, report_from_row, save_eval_result
from arr_core.data.records import ImageRef, PreferenceRecord
from arr_core.judge.judge import presentation_orders
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.vlm.client import VLMClient

from .scripted import FirstBackend, RedBackend


def _img(path: Path, color: str) -> ImageRef:
    im = Image.new("RGB", (32, 32), (160, 160, 160))
    ImageDraw.Draw(im).ellipse((8, 8, 24, 24), fill=color)
    im.save(path)
    return ImageRef.from_uri(str(path))


@pytest.fixture()
def records(tmp_path: Path) -> list[PreferenceRecord]:
    """6 pairs; people prefer the red image. Red is first in pairs 0, 1, 2, 4 and second in 3, 5.
    Pair 6 has a tied label and must be skipped."""
    red_first = [True, True, True, False, True, False]
    recs = []
    for i, rf in enumerate(red_first):
        red, blue = _img(tmp_path / f"r{i}.png", "red"), _img(tmp_path / f"b{i}.png", (40, 80, 220 - i))
        images = [red, blue] if rf else [blue, red]
        recs.append(PreferenceRecord("t2i", f"a photo of a red circle {i}", images,
                                     label_rank=[1, 2] if rf else [2, 1], idx=i))
    recs.append(PreferenceRecord("t2i", "tie", [recs[0].images[0], recs[0].images[1]], label_rank=[1, 1], idx=6))
    return recs


def _rubrics(n: int) -> RubricSet:
    return RubricSet(task="t2i", criteria=[f"criterion {i}: the circle is red" for i in range(n)],
                     metadata={"generator_model": "red-gen"})


def _client(backend) -> VLMClient:
    return VLMClient(backend, cache_mode="off")


def test_position_bias_hand_checked(records) -> None:
    res = pf.run_preference(_client(FirstBackend()), records, None, n_boot=500)
    acc = {(r[1], r[2]): r[3]["point"] for r in res.table("Accuracy vs human labels").rows}
    # single: the first image always wins. Red (preferred) is first in 4 of 6 pairs forward,
    # and in 2 of 6 when reversed.
    assert acc[("single", "forward")] == pytest.approx(4 / 6)
    assert acc[("single", "reversed")] == pytest.approx(2 / 6)
    # swap: the two orders always disagree → every pair is a tie → accuracy 0.
    assert acc[("swap", "forward")] == acc[("swap", "reversed")] == 0.0
    ties = {(r[1], r[2]): r[4] for r in res.table("Accuracy vs human labels").rows}
    assert ties[("swap", "forward")] == 1.0
    # random: forward is correct iff the shown-first image is the preferred one; reversed shows the
    # mirrored image first, so exactly one direction is right per pair → balanced accuracy 1/2.
    expected_fw = sum(presentation_orders(2, "random", key=r.pair_id)[0][0] == r.label_rank.index(1)
                      for r in records[:6]) / 6
    assert acc[("random", "forward")] == pytest.approx(expected_fw)
    assert acc[("random", "reversed")] == pytest.approx(1 - expected_fw)
    bias = {r[1]: r[4] for r in res.table("Position bias (forward − reversed)").rows}
    assert bias["single"]["point"] == pytest.approx(2 / 6)
    assert bias["swap"]["point"] == 0.0
    assert res.summary["n_skipped"] == 1.0 and res.summary["n_pairs"] == 6.0
    # The image shown first wins every valid order, in every mode; single flips every pair.
    assert all(res.summary[f"bias/plain/{m}/first_rate"] == 1.0 for m in ("single", "swap", "random"))
    assert res.summary["bias/plain/single/flip_rate"] == 1.0
    for row in res.table("Accuracy vs human labels").rows:
        ci = row[3]
        assert ci["lo"] <= ci["point"] <= ci["hi"]


def test_rubrics_fix_the_judge_hand_checked(records) -> None:
    res = pf.run_preference(_client(RedBackend(needs_rubrics=1)), records, _rubrics(3), n_boot=500)
    rows = res.table("Accuracy vs human labels").rows
    with_r = [r for r in rows if r[0].startswith("rubrics")]
    plain = [r for r in rows if r[0] == "no rubrics"]
    assert len(with_r) == len(plain) == 6
    # With rubrics the scripted judge ranks by redness: always right, in every mode and direction.
    assert all(r[3]["point"] == 1.0 and r[3]["lo"] == 1.0 for r in with_r)
    assert {(r[1], r[2]): r[3]["point"] for r in plain}[("single", "forward")] == pytest.approx(4 / 6)
    assert res.summary["bias/rubric/single"] == 0.0
    assert res.summary["bias/plain/single"] == pytest.approx(2 / 6)
    # Ranking by redness: red is shown first in 4 of 6 forward and 2 of 6 reversed orders → 6/12.
    assert res.summary["bias/rubric/single/first_rate"] == pytest.approx(0.5)
    assert res.summary["bias/rubric/single/flip_rate"] == 0.0
    html = render_html(res.report)
    assert "criterion 0: the circle is red" in html and "red pixels" in html


def test_cardinality_hand_checked(records) -> None:
    # The scripted judge needs >= 5 rubric lines; the set has 12 criteria, so k = 20 is unavailable.
    res = pf.run_cardinality(_client(RedBackend(needs_rubrics=5)), records, _rubrics(12), n_boot=300)
    rows = {r[0]: r for r in res.table("Rubric-count ablation").rows}
    assert rows[0][1]["point"] == 0.0  # no rubrics, swap: first-position answers always disagree → ties
    assert rows[1][1]["point"] == 0.0
    assert rows[5][1]["point"] == rows[10][1]["point"] == 1.0
    assert rows[20][1] is None and "unavailable" in rows[20][4]


def test_transfer_matrix_hand_checked(records) -> None:
    judges = {"red": _client(RedBackend(needs_rubrics=1)), "first": _client(FirstBackend())}
    res = pf.run_transfer(judges, {"gen-A": _rubrics(3)}, records, mode="single", n_boot=300)
    t = res.table("Cross-model transfer")
    cell = {(r[0], j): r[2 + k]["point"] for r in t.rows for k, j in enumerate(judges)}
    assert cell[("none", "red")] == pytest.approx(4 / 6)  # no rubrics → first-position answers
    assert cell[("gen-A", "red")] == 1.0
    assert cell[("none", "first")] == cell[("gen-A", "first")] == pytest.approx(4 / 6)
    assert t.rows[1][1] == "red-gen"


def test_store_round_trip(records, tmp_path: Path) -> None:
    from arr_core.store.store import Store

    store = Store(tmp_path / "home")
    res = pf.run_preference(_client(FirstBackend()), records, None, modes=["single"], n_boot=200)
    eid = save_eval_result(store, res)
    assert eid == res.eval_id and eid.startswith("ev-")
    row = load_eval_row(store, eid[:8])
    assert row["kind"] == "preference"
    assert row["metrics"]["summary"]["acc/plain/single/forward"] == pytest.approx(4 / 6)
    assert render_html(report_from_row(row)) == render_html(res.report)
    # equal inputs → equal id → one row
    save_eval_result(store, pf.run_preference(_client(FirstBackend()), records, None, modes=["single"], n_boot=200))
    assert len(store.fetchall("eval_results_list")) == 1


def test_no_usable_records_is_a_clear_error(records) -> None:
    with pytest.raises(ValueError, match="no usable records"):
        pf.run_preference(_client(FirstBackend()), records[6:], None)
