"""The pipeline run's report (arr_core.bench.run_report): hand-checked paired Δ, disagreement-first
gallery, every section present, and the page rendered and screenshotted in headless Chromium."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from arr_core.bench import browser
from arr_core.bench import run_report as rr
from arr_core.bench.checkers import CheckResult
from arr_core.bench.prompt_sets import PromptItem
from arr_core.bench.report import Report, Section, Table, render_html, write_html
from arr_core.rubrics.rubric_set import RubricSet, Theme

REPO = Path(__file__).resolve().parents[2]


class _Order:
    def __init__(self, permutation: list[int], rank: list[int]) -> None:
        self.permutation, self.rank, self.reason = permutation, rank, f"order {permutation}: image {rank.index(1) + 1}"


class _Judgment:  # the two fields of arr_core.judge.judge.Judgment the gallery reads
    def __init__(self, winner: int | None) -> None:
        self.winner = winner
        self.orders = [_Order([0, 1], [1, 2] if winner == 0 else [2, 1])]


def _png(path: Path, color: str) -> str:
    im = Image.new("RGB", (48, 48), (150, 150, 150))
    ImageDraw.Draw(im).ellipse((10, 10, 38, 38), fill=color)
    im.save(path)
    return str(path)


def test_paired_delta_is_the_mean_difference_with_a_bootstrap_interval() -> None:
    d = rr.paired_delta({"a": 0.0, "b": 0.5, "c": 1.0}, {"a": 0.5, "b": 0.5, "c": 1.0})
    assert d["point"] == pytest.approx(0.5 / 3)
    assert d["lo"] == pytest.approx(0.0) and d["hi"] == pytest.approx(0.5)  # resamples of {0.5, 0, 0}
    with pytest.raises(ValueError, match="unpaired: \\['d'\\]"):
        rr.paired_delta({"a": 0.0}, {"a": 1.0, "d": 1.0})


def _inputs(tmp_path: Path) -> dict:
    items = [PromptItem(f"p{i}", f"prompt {i}", "single_object") for i in range(3)]
    base = {it.id: [_png(tmp_path / f"b{i}.png", "blue")] for i, it in enumerate(items)}
    trained = {it.id: [_png(tmp_path / f"t{i}.png", "red")] for i, it in enumerate(items)}
    # checker: p0 trained better, p1 base better, p2 equal; judge: trained on all three.
    res_t = {"p0": [CheckResult(True, 1.0)], "p1": [CheckResult(False, 0.0, "no red")], "p2": [CheckResult(True, 1.0)]}
    res_b = {"p0": [CheckResult(False, 0.0)], "p1": [CheckResult(True, 1.0)], "p2": [CheckResult(True, 1.0)]}
    gallery = rr.gallery_pairs(items, base, trained, res_b, res_t, [_Judgment(0), _Judgment(0), _Judgment(0)])
    rs = RubricSet(task="t2i", themes=[Theme(theme="Colour fidelity", tips=["The circle is red.", "No blue."])],
                   criteria=["The circle is red.", "No blue."])
    judge = {"conditions": {
        "rubrics": {"n": 40, "accuracy": 0.8, "accuracy_lo": 0.7, "accuracy_hi": 0.9, "tie_rate": 0.0,
                    "abstain_rate": 0.0, "forward_accuracy": 0.85, "forward_lo": 0.7, "forward_hi": 0.95,
                    "reversed_accuracy": 0.75, "reversed_lo": 0.6, "reversed_hi": 0.9,
                    "forward_minus_reversed": 0.1, "position_gap": 0.1, "first_position_rate": 0.55},
        "no_rubrics": {"n": 40, "accuracy": 0.6, "accuracy_lo": 0.45, "accuracy_hi": 0.75, "tie_rate": 0.1,
                       "abstain_rate": 0.0}}}
    rows = [{"step": s, "reward_mean": 0.45, "reward_spread": 0.9 - 0.1 * s, "reward_std": 0.45, "kl": 1e-4 * s,
             "ratio_mean": 1.0, "ratio_max": 1.0 + 0.01 * s, "clip_frac": 0.0, "win_rate": 1.0,
             "scene_pass_rate": 0.2 + 0.1 * s} for s in (1, 2, 3)]
    evaluation = Report("arr-pipeline evaluation", [Section("geneval", "GenEval-format accuracy (scene)", tables=[
        Table("accuracy", ["tag", "base", "trained"], [["overall", 0.4, 0.6]])])], subtitle="training run tr-1",
        notes=["Scene world with the offline simulated VLM."])
    return dict(evaluation=evaluation, data={"dataset": "ds-abc", "pairs": 80, "train pairs": 60}, rubric_set=rs,
                judge=judge, training_rows=rows, delta=rr.paired_delta({"p0": 0, "p1": 1, "p2": 1},
                                                                          {"p0": 1, "p1": 0, "p2": 1}),
                checker_name="scene", scores=(2 / 3, 2 / 3), gallery=gallery,
                links={"MLflow pipeline run": "http://127.0.0.1:5000/#/experiments/1/runs/abc",
                       "Prefect flow run": "http://127.0.0.1:4200/runs/flow-run/f-1"})


def test_gallery_puts_disagreements_first(tmp_path: Path) -> None:
    g = _inputs(tmp_path)["gallery"]
    assert [(p.judge, p.checker, p.disagreement) for p in g] == [(0, 0, 2), (0, 1, 0), (0, None, 1)]
    sec = rr.gallery_section(g)
    assert [p.prompt.split(" — ")[-1] for p in sec.pairs] == ["prompt 1", "prompt 2", "prompt 0"]
    assert sec.pairs[0].prompt.startswith("[DISAGREE] judge prefers trained, checker prefers base")
    with pytest.raises(ValueError, match="2 judgments for 3"):
        rr.gallery_pairs([PromptItem(f"p{i}", "x", "t") for i in range(3)], {f"p{i}": ["a"] for i in range(3)},
                         {f"p{i}": ["b"] for i in range(3)}, {f"p{i}": [CheckResult(True, 1.0)] for i in range(3)},
                         {f"p{i}": [CheckResult(True, 1.0)] for i in range(3)}, [_Judgment(0)] * 2)


def test_report_has_every_section(tmp_path: Path) -> None:
    report = rr.pipeline_run_report(**_inputs(tmp_path))
    assert [s.id for s in report.sections] == ["links", "data", "rubrics", "judge", "training", "paired",
                                               "geneval", "gallery"]
    html = render_html(report)
    for text in ("Colour fidelity", "• The circle is red.", "position bias", "0.800 <span class=\"ci\">[0.700, 0.900]",
                 "Reward spread within groups", "KL to the base policy", "Importance ratio", "Clip fraction",
                 "Absolute per-step score", "scene_pass_rate", "paired difference", "[DISAGREE]",
                 "http://127.0.0.1:4200/runs/flow-run/f-1", "checker&#x27;s choice"):
        assert text in html, text
    assert html.count("<svg") == 7  # judge accuracy + 5 training curves + the absolute score
    assert "<script" not in html
    # Stored with the evaluation, it renders the same again (`arr report ID`).
    assert render_html(Report.from_dict(report.to_dict())) == html


@pytest.fixture(scope="module")
def chromium() -> str:
    """As in test_report.py: a missing browser fails unless ARR_SKIP_BROWSER=1."""
    if os.environ.get("ARR_SKIP_BROWSER") == "1":
        pytest.skip("ARR_SKIP_BROWSER=1: browser rendering test switched off explicitly")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "ensure_chromium.sh")], capture_output=True, text=True,
                          timeout=900, check=False)
    if proc.returncode != 0:
        pytest.fail(f"headless Chromium is required and could not be installed:\n{proc.stderr[-1500:]}")
    path = proc.stdout.strip().splitlines()[-1]
    os.environ.setdefault("ARR_CHROMIUM", path)
    return path


def test_run_report_renders_in_chromium(tmp_path: Path, chromium: str) -> None:
    html = write_html(rr.pipeline_run_report(**_inputs(tmp_path)), tmp_path / "report.html")
    png = browser.screenshot(html, tmp_path / "report.png", width=1200, height=2400)
    stats = browser.pixel_stats(png)
    assert stats["variance"] > 200.0 and stats["non_background"] > 0.05, f"screenshot looks blank: {stats}"
    dom = browser.dump_dom(html)
    for text in ("arr-pipeline run", "Judge accuracy with and without rubrics", "Reward spread within groups",
                 "Base vs trained: paired Δ", "Judge vs checker: disagreements first", "Colour fidelity"):
        assert text in dom, f"{text!r} missing from the rendered DOM"
    assert dom.count("<svg") == 7


def test_absolute_scores_found_in_trainer_rows() -> None:
    rows = [{"step": 1, "reward_mean": 0.45, "score/red": 0.2, "score/round": 0.6, "reward/checker/mean": 0.3,
             "reward/checker/failed": 0.0, "tie_rate": 0.5},
            {"step": 2, "reward_mean": 0.45, "score/red": 0.4, "score/round": 0.8, "reward/checker/mean": 0.5,
             "reward/checker/failed": 0.0, "tie_rate": 0.5}]
    series = {s.name: (s.x, s.y) for s in rr.absolute_series(rows)}
    assert series == {"reward/checker/mean": ([1, 2], [0.3, 0.5]),
                      "rubric criteria score (mean over criteria)": ([1, 2], [pytest.approx(0.4), pytest.approx(0.6)])}
    assert rr.absolute_series([{"step": 1, "reward_mean": 0.45, "kl": 0.1}]) == []
