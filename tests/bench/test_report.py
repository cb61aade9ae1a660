"""HTML report: structure, self-containment, round trip, and a real render in headless Chromium."""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from arr_core.bench import browser
from arr_core.bench.report import (
    GridRow,
    ImageGrid,
    JudgedPair,
    Report,
    Section,
    Table,
    interval,
    render_html,
    write_html,
)
from arr_core.bench.svg import Plot, Series, render_svg

REPO = Path(__file__).resolve().parents[2]


def _shape_image(path: Path, color: str, shape: str) -> Path:
    im = Image.new("RGB", (64, 64), (160, 160, 160))
    d = ImageDraw.Draw(im)
    (d.ellipse if shape == "circle" else d.rectangle)((16, 16, 48, 48), fill=color)
    im.save(path)
    return path


def _report(tmp_path: Path) -> Report:
    red = _shape_image(tmp_path / "red.png", "red", "circle")
    blue = _shape_image(tmp_path / "blue.png", "blue", "square")
    acc = Table("Preference accuracy", ["judge", "order mode", "accuracy", "n"],
                [["plain", "single", interval(0.61, 0.52, 0.70), 100],
                 ["rubric", "swap", interval(0.83, 0.76, 0.90), 100]])
    bars = Plot("Accuracy by order mode", "bar",
                [Series("plain", ["single", "swap"], [0.61, 0.58], [0.52, 0.49], [0.70, 0.67]),
                 Series("rubric", ["single", "swap"], [0.83, 0.80], [0.76, 0.72], [0.90, 0.87])],
                y_label="accuracy", y_range=(0.0, 1.0), hlines=[(0.5, "chance")])
    curve = Plot("Rubric-count ablation", "line",
                 [Series("rubric", [1, 5, 10, 20], [0.6, 0.7, 0.78, 0.8], [0.5, 0.6, 0.7, 0.72],
                         [0.7, 0.8, 0.86, 0.88])], x_label="criteria", y_label="accuracy")
    grid = ImageGrid("Base vs trained", ["base", "trained"],
                     [GridRow("a photo of a red circle", [str(red), str(blue)], ["fail", "pass"])])
    pair = JudgedPair("a photo of a red circle", [str(red), str(blue)], human_preferred=0,
                      rubric_text="Rubric 1:\nTheme: colour\n- Tip: the circle must be red",
                      judgments=[{"mode": "forward", "rank": [1, 2], "reason": "Image 1 shows the red circle"},
                                 {"mode": "reversed", "rank": [2, 1], "reason": "position bias at work"}],
                      pair_id="abc123")
    return Report("Scene-world evaluation", [Section("metrics", "Metrics", tables=[acc]),
                                             Section("plots", "Plots", plots=[bars, curve]),
                                             Section("images", "Base vs trained", grids=[grid]),
                                             Section("pairs", "Judged pairs", pairs=[pair])],
                  subtitle="test", notes=["Offline scene VLM: accuracies say nothing about real VLMs."],
                  meta={"eval_id": "ev-1"})


def test_html_self_contained_and_complete(tmp_path: Path) -> None:
    html = render_html(_report(tmp_path))
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "a report must not reference the network"
    assert html.count('src="data:image/png;base64,') == 4  # 2 grid images + 2 pair images
    assert "0.830 <span class=\"ci\">[0.760, 0.900]</span>" in html
    for sec in ("metrics", "plots", "images", "pairs", "run"):
        assert f'<section id="{sec}">' in html
    assert "Image 1 first <span class='ok'>✓ agrees</span>" in html
    assert "Image 2 first <span class='bad'>✗ disagrees</span>" in html


def test_round_trip_renders_identically(tmp_path: Path) -> None:
    r = _report(tmp_path)
    assert render_html(Report.from_dict(r.to_dict())) == render_html(r)


def test_missing_image_is_a_placeholder_not_a_crash(tmp_path: Path) -> None:
    r = Report("x", [Section("images", "Images", grids=[ImageGrid("g", ["a"], [GridRow("r", [str(tmp_path / "gone.png")])])])])
    assert "image unavailable" in render_html(r)
    r2 = Report("x", [Section("images", "Images", grids=[ImageGrid("g", ["a"], [GridRow("r", ["https://example.com/x.png"])])])])
    assert "example.com" not in render_html(r2)


def test_svg_is_well_formed_and_scales_bars() -> None:
    p = Plot("acc", "bar", [Series("s", ["a", "b"], [0.25, 0.5])], y_range=(0.0, 1.0))
    root = ET.fromstring(render_svg(p, width=400, height=200))
    ns = "{http://www.w3.org/2000/svg}"
    bars = [g for g in root.iter(f"{ns}g") if (g.get("id") or "").startswith("bar-")]
    h = []
    for g in bars:  # matplotlib draws each bar as a closed rectangle path "M x y L x y L x y L x y z"
        ys = [float(v) for v in re.findall(r"[-\d.]+", g.find(f"{ns}path").get("d"))[1::2]]
        h.append(max(ys) - min(ys))
    assert len(h) == 2 and h[1] == pytest.approx(2 * h[0], rel=0.02)
    with pytest.raises(ValueError, match="field 'lo'"):
        Series("s", [1, 2], [0.1, 0.2], lo=[0.1])


def test_table_row_length_checked() -> None:
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        Table("t", ["a", "b"], [[1]])


@pytest.fixture(scope="session")
def chromium() -> str:
    """Chromium for the browser test; installed by scripts/ensure_chromium.sh when missing.

    Skipped only when ARR_SKIP_BROWSER=1 is set explicitly; otherwise a missing browser FAILS.
    """
    if os.environ.get("ARR_SKIP_BROWSER") == "1":
        pytest.skip("ARR_SKIP_BROWSER=1: browser rendering test switched off explicitly")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "ensure_chromium.sh")], capture_output=True, text=True,
                          timeout=900, check=False)
    if proc.returncode != 0:
        pytest.fail("headless Chromium is required for the report test and could not be installed:\n"
                    f"{proc.stderr[-1500:]}\nInstall Debian's 'chromium' or set ARR_SKIP_BROWSER=1 to skip.")
    path = proc.stdout.strip().splitlines()[-1]
    os.environ.setdefault("ARR_CHROMIUM", path)
    return path


def test_report_renders_in_chromium(tmp_path: Path, chromium: str) -> None:
    html = write_html(_report(tmp_path), tmp_path / "report.html")
    png = browser.screenshot(html, tmp_path / "report.png", width=1100, height=1400)
    stats = browser.pixel_stats(png)
    assert stats["variance"] > 200.0, f"screenshot looks blank: {stats}"
    assert stats["non_background"] > 0.05, f"screenshot looks blank: {stats}"
    dom = browser.dump_dom(html)
    for text in ("Scene-world evaluation", "Metrics", "Preference accuracy", "Accuracy by order mode",
                 "Rubric-count ablation", "Base vs trained", "Judged pairs", "Theme: colour",
                 "Image 1 shows the red circle", "Offline scene VLM"):
        assert text in dom, f"{text!r} missing from the rendered DOM"
    assert dom.count("<svg") == 2


def test_training_curves_from_trainer_metrics(tmp_path: Path) -> None:
    import json

    from arr_core.bench.report import find_training_metrics, training_curves

    run = tmp_path / "run"
    (run / "lora").mkdir(parents=True)
    rows = [{"step": s, "reward_mean": 0.1 * s, "loss": 1.0 / s, "lr": 5e-5} for s in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{partial")
    found = find_training_metrics(run / "lora")
    assert found == (run / "metrics.jsonl").resolve()
    plots = training_curves(found)
    assert [p.title for p in plots] == ["Training: reward_mean", "Training: loss"]
    assert plots[0].series[0].y == pytest.approx([0.1, 0.2, 0.3])
    assert find_training_metrics(tmp_path / "nowhere") is None


def test_constant_series_up_to_rounding_renders_quickly() -> None:
    # Regression: a training curve constant up to 1e-16 (reward_mean = 0.45 ± rounding) made the tick
    # loop add a step below the float resolution forever (the process grew to 23 GB).
    ys = [0.45, 0.45 + 1e-16, 0.45 - 1e-16, 0.45]
    svg = render_svg(Plot("flat", "line", [Series("r", [1, 2, 3, 4], ys)]))
    ET.fromstring(svg)
    assert svg.count("<text") < 40
    assert ET.fromstring(render_svg(Plot("zeros", "line", [Series("z", [1, 2], [0.0, 0.0])]))) is not None
