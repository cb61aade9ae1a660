"""Evaluation task: GenEval-format accuracy of the base and the trained policy (scene detector),
win rate of trained vs base under the rubric judge and under the independent detector checker, an
HTML report, and the ``evaluate`` child run in MLflow.

The generation benchmark logic lives in ``arr_core`` (``arr_core.sim.toy_eval``, ``arr_core.bench``);
this task only loads inputs, calls it and logs. Per-image results stay in the report, not in Prefect.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from prefect import task

from tasks import _mlflow as mlf
from tasks._cache import keyed_by
from tasks.common import fail_point, home_path, open_store


@task(cache_key_fn=keyed_by("train_key", "eval_cfg", "rubric_set_id", "vlm", "prompt_version"),
      persist_result=True, result_serializer="json", retries=1, retry_delay_seconds=5)
def evaluate_policy(train_key: str, train_summary: dict[str, Any], train_cfg: Any, eval_cfg: dict[str, Any],
                    rubric_set_id: str, rubric_set_json: str, vlm: Any, prompt_version: str, experiment: str,
                    parent_run_id: str | None, home: str) -> dict[str, Any]:
    """Base vs trained on held-out scene-world prompts; see the module docstring."""
    from arr_core.bench.generation import load_lora
    from arr_core.bench.report import GridRow, ImageGrid, Report, Section, Table, interval, write_html
    from arr_core.bench.results import EvalResult, save_eval_result
    from arr_core.judge.judge import JudgeItem, judge_many
    from arr_core.recipes.rpo import build_policy, resolve_device
    from arr_core.rubrics.rubric_set import RubricSet
    from arr_core.sim.toy_eval import geneval_accuracy
    from arr_core.sim.world.pairs import make_prompts
    from arr_core.vlm.config import build_client

    fail_point("evaluate")
    if train_cfg.policy.kind != "toy":
        raise NotImplementedError("the evaluate stage's GenEval-format runner with a VLM checker for real "
                                  "images needs arr_core.bench's generation runner (issue 7)")
    t0 = time.perf_counter()
    specs = make_prompts(int(eval_cfg["prompts"]), int(eval_cfg["prompt_seed"]))
    seeds = tuple(range(int(eval_cfg["images_per_prompt"])))
    steps = int(eval_cfg.get("num_steps") or train_cfg.num_steps)
    policy = build_policy(train_cfg, resolve_device(train_cfg.policy.device))
    base = geneval_accuracy(policy, specs, seeds=seeds, steps=steps, return_images=True)
    peft_model = load_lora(policy, train_summary["lora_uri"])
    trained = geneval_accuracy(policy, specs, seeds=seeds, steps=steps, lora=peft_model, return_images=True)

    metrics: dict[str, Any] = {
        "geneval.base": base["overall"], "geneval.trained": trained["overall"],
        "geneval.delta": trained["overall"] - base["overall"],
        "geneval.base_tag_mean": base["tag_mean"], "geneval.trained_tag_mean": trained["tag_mean"],
    }
    for tag, v in trained["per_tag"].items():
        metrics[f"geneval.trained.{tag}"] = v
        metrics[f"geneval.base.{tag}"] = base["per_tag"][tag]
    # Independent checker: which image of each (prompt, seed) passes the detector's checks.
    b_pass = [p for row in base["passed"] for p in row]
    t_pass = [p for row in trained["passed"] for p in row]
    decisive = [(t, b) for t, b in zip(t_pass, b_pass, strict=True) if t != b]
    metrics["winrate.checker"] = (sum(t for t, _ in decisive) / len(decisive)) if decisive else 0.5
    vlm_stats: dict[str, Any] = {}
    if eval_cfg.get("win_rate", True):
        rs = RubricSet.from_json(Path(rubric_set_json).read_text(encoding="utf-8"))
        client = build_client(vlm, None)
        jobs = [(i, s) for i in range(len(specs)) for s in seeds]
        items = [JudgeItem(task="t2i", prompt=specs[i].prompt, images=[ti, bi], key=f"{train_key}:{i}:{s}")
                 for (i, s), ti, bi in zip(jobs, trained["images"], base["images"], strict=True)]
        js = asyncio.run(judge_many(client, items, rubric_block=rs.prompt_block(), rubric_set_id=rs.id,
                                    order="swap"))
        wins = sum(j.winner == 0 for j in js)
        losses = sum(j.winner == 1 for j in js)
        metrics["winrate.judge"] = wins / (wins + losses) if wins + losses else 0.5
        metrics["winrate.judge_ties"] = sum(j.outcome != "win" for j in js) / len(js)
        metrics["winrate.gap"] = metrics["winrate.judge"] - metrics["winrate.checker"]
        vlm_stats = client.stats()
        metrics["vlm_calls"] = int(vlm_stats.get("calls", 0))
    metrics["wall_s"] = round(time.perf_counter() - t0, 3)

    out = home_path(home) / "reports" / f"eval-{train_key[:20]}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    report_path = out / "report.html"
    ci = {"base": base["ci95"], "trained": trained["ci95"]}
    rows = [["overall", interval(base["overall"], *ci["base"]), interval(trained["overall"], *ci["trained"])]]
    rows += [[tag, interval(base["per_tag"][tag], *base["per_tag_ci95"][tag]),
              interval(trained["per_tag"][tag], *trained["per_tag_ci95"][tag])] for tag in trained["per_tag"]]
    k = min(8, len(specs))
    # Grid images go to files: the stored report keeps paths, so `arr report ID` can re-render them.
    sample_dir = out / "samples"
    sample_dir.mkdir(exist_ok=True)

    def _png(im: Any, name: str) -> str:
        path = sample_dir / name
        im.save(path)
        return str(path)

    grid = ImageGrid("Base vs trained (seed 0)", ["base", "trained"],
                     [GridRow(specs[i].prompt, [_png(base["images"][i * len(seeds)], f"{i:02d}_base.png"),
                                                _png(trained["images"][i * len(seeds)], f"{i:02d}_trained.png")])
                      for i in range(k)])
    win_rows = [["detector checker", metrics["winrate.checker"]]]
    if "winrate.judge" in metrics:
        win_rows.insert(0, ["rubric judge (training reward)", metrics["winrate.judge"]])
    report = Report(
        title="arr-pipeline evaluation", subtitle=f"training run {train_key}",
        notes=["Scene world with the offline simulated VLM: these figures say nothing about real VLMs."]
        if getattr(vlm, "backend", "") == "scene" else [],
        meta={"rubric_set_id": rubric_set_id, "policy_id": train_summary.get("policy_id"),
              "lora_uri": train_summary.get("lora_artifact_uri")},
        sections=[Section("geneval", "GenEval-format accuracy (scene detector)",
                          tables=[Table("accuracy with 95 % intervals", ["tag", "base", "trained"], rows)]),
                  Section("winrate", "Win rate of trained vs base",
                          text="A large gap between the judge and the checker flags possible reward hacking.",
                          tables=[Table("win rate", ["judged by", "trained wins"], win_rows)]),
                  Section("samples", "Samples", grids=[grid])])
    if eval_cfg.get("report", True):
        write_html(report, report_path)
    # The store keeps the evaluation (``arr store lineage`` / ``arr report ID`` read it back).
    tables = [t for sec in report.sections for t in sec.tables]
    eval_id = save_eval_result(open_store(home), EvalResult(
        kind="geneval", config={**eval_cfg, "train_key": train_key}, summary=metrics, tables=tables,
        report=report, rubric_set_id=rubric_set_id, policy_id=train_summary.get("policy_id")),
        report_uri=str(report_path) if report_path.exists() else None)
    grid_path = out / "samples.png"
    _save_grid([im for pair in zip(base["images"][:8], trained["images"][:8], strict=True) for im in pair], grid_path)

    tags = {"arr.rubric_set_id": rubric_set_id, "arr.policy_id": train_summary.get("policy_id"),
            "arr.lora_uri": train_summary.get("lora_artifact_uri"), "arr.train_key": train_key}
    with mlf.stage_run(experiment, "evaluate", home=home_path(home), parent_run_id=parent_run_id,
                       params={"evaluate": eval_cfg}, tags=tags) as run_id:
        mlf.log_metrics(run_id, metrics)
        mlf.log_artifact(run_id, out / "metrics.json", "evaluation")
        if report_path.exists():
            mlf.log_artifact(run_id, report_path, "evaluation")
        mlf.log_artifact(run_id, grid_path, "evaluation")
    return {"stage": "evaluate", "entity_kind": "evaluation", "entity_id": eval_id,
            "mlflow_run_id": run_id, "tags": tags, "metrics": metrics,
            "artifacts": {"report": str(report_path), "samples": str(grid_path)}}


def _save_grid(images: list[Any], path: Path, cols: int = 2) -> None:
    from PIL import Image

    if not images:
        return
    w, h = images[0].size
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * w, (i // cols) * h))
    grid.save(path)
