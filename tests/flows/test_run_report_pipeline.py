"""One report per pipeline run (issue 25 item 2): a real tiny pipeline run (scene world, toy policy,
2 training steps) writes it in the evaluation stage, logs it to the stage's MLflow run and as a
Prefect artifact, stores it with the evaluation, and it renders in headless Chromium."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.flows.conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_pipeline_run_writes_logs_and_publishes_one_full_report(prefect_api, home: Path, toy_policy_dir: Path,
                                                                 tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from arr_core.bench import browser
    from arr_core.bench.report import render_html
    from arr_core.bench.results import load_eval_row, report_from_row
    from arr_core.store import Store
    from flows.pipeline import run_pipeline
    from tasks._mlflow import client

    st = run_pipeline(tiny_config(toy_policy_dir), home)["stages"]
    report = Path(st["evaluate"]["artifacts"]["report"])
    html = report.read_text(encoding="utf-8")
    ids = re.findall(r'<section id="([^"]+)"', html)
    assert ids[:6] == ["links", "data", "rubrics", "judge", "training", "paired"]
    assert {"geneval", "winrate", "samples", "gallery"} <= set(ids)
    rs_id = st["induce"]["rubric_set_id"]
    for text in (rs_id, st["data"]["dataset_id"], "position bias", "no rubrics", "Reward spread within groups",
                 "KL to the base policy", "Clip fraction", "Δ trained − base", "disagreements first",
                 st["evaluate"]["mlflow_run_id"], "/runs/flow-run/", "models:/arr-test-toy-lora/"):
        assert text in html, (text, re.findall(r'<section id="judge">.*?</section>', html, re.S)[0][:3000])
    assert html.count("<svg") >= 5 and "<script" not in html

    # Logged to the evaluation's MLflow run, with the paired Δ as metrics.
    run = client().get_run(st["evaluate"]["mlflow_run_id"])
    assert "evaluation/report.html" in [f.path for f in client().list_artifacts(run.info.run_id, "evaluation")]
    m = run.data.metrics
    assert m["geneval.paired_delta_lo"] <= m["geneval.paired_delta"] <= m["geneval.paired_delta_hi"]
    # A Prefect artifact of this flow run points at it (the session's Prefect server also holds
    # other tests' pipeline runs, with artifacts of the same keys).
    flow_run_id = run.data.tags["arr.prefect_flow_run_id"]
    with get_client(sync_client=True) as pc:
        arts = pc.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["arr-report-summary", "arr-report-mlflow"]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert {a.key for a in arts} == {"arr-report-summary", "arr-report-mlflow"}
    md = next(a.data for a in arts if a.key == "arr-report-summary")
    assert str(report) in md and "paired, 95% CI" in md and "/runs/flow-run/" in md
    # Stored with the evaluation: `arr report ID` renders the same sections again.
    again = render_html(report_from_row(load_eval_row(Store(home), st["evaluate"]["entity_id"])))
    assert re.findall(r'<section id="([^"]+)"', again) == ids

    if os.environ.get("ARR_SKIP_BROWSER") != "1":
        proc = subprocess.run(["bash", str(REPO / "scripts" / "ensure_chromium.sh")], capture_output=True,
                              text=True, timeout=900, check=False)
        assert proc.returncode == 0, proc.stderr[-1500:]
        os.environ.setdefault("ARR_CHROMIUM", proc.stdout.strip().splitlines()[-1])
        png = browser.screenshot(report, tmp_path / "report.png", width=1280, height=3000)
        stats = browser.pixel_stats(png)
        assert stats["variance"] > 200.0 and stats["non_background"] > 0.05, stats
        dom = browser.dump_dom(report)
        assert "Judge accuracy with and without rubrics" in dom and "Reward spread within groups" in dom
