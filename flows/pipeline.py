"""The ``arr-pipeline`` flow: the whole DAG.

    data → induce (generate → verify/refine → select → categorize → store) → judge check
         → RPO training (in-process subflow, or run_deployment onto the gpu-h100 pool)
         → evaluation (GenEval-format base vs trained, win rates, HTML report)

One MLflow parent run per pipeline run, one child run per stage. Every stage is keyed by content
digests, so rerunning the same config after a failure re-executes only the failed stage and the
ones after it; the earlier ones are cache hits (no VLM calls, no training steps). The same holds for
``prefect flow-run retry``: the stage subflows do not persist their return values, so Prefect runs
them again in the retried flow run (their tasks are cache hits, reported as such) instead of handing
back the earlier attempt's summary, which would count that attempt's work as new.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow

from arr_core.home import resolve_home
from flows._wiring import call, in_prefect, linked, rerun_from_cache, run_task, subflow
from flows.config import PipelineConfig, load_pipeline_config
from flows.evaluate import EvaluateFlowParams, evaluate_flow
from flows.induce import InduceFlowParams, induce_flow
from flows.train import TrainFlowParams, train_flow
from tasks._cache import redact
from tasks._env import apply_defaults, results_dir
from tasks.data import make_world_pairs, register_dataset, register_world_dataset
from tasks.induce import prompt_version
from tasks.judge import judge_heldout
from tasks.lineage import finish_pipeline_run, start_pipeline_run
from tasks.preflight import preflight
from tasks.train import dispatch_training, plan_training


# Loaded from its entrypoint (`prefect flow-run retry ID --entrypoint …`, a deployment's worker) the
# flow gets no with_options and Prefect read its settings before `import tasks` filled
# PREFECT_RESULTS_LOCAL_STORAGE_PATH: default the results (the cache) to $ARR_HOME's, as run_pipeline does.
@flow(name="arr-pipeline", persist_result=True, result_storage=results_dir(resolve_home(create=False)))
def pipeline_flow(config: PipelineConfig | None = None, config_path: str | None = None,
                  home: str | None = None) -> dict[str, Any]:
    """Run every enabled stage; returns the summary (ids, URIs, per-stage cached flags, metrics).

    Give ``config`` or ``config_path`` (a YAML file; handy for ``prefect deployment run -p``).
    """
    if (config is None) == (config_path is None):
        raise ValueError("give exactly one of config or config_path")
    t0 = time.perf_counter()
    home = str(apply_defaults(home))  # the entry point a worker runs: offline defaults here
    cfg = config if config is not None else load_pipeline_config(config_path)
    exp = cfg.mlflow.experiment
    parent = call(start_pipeline_run, exp, cfg.name, redact(cfg), cfg.digest(), home)
    stages: dict[str, dict[str, Any]] = {}
    status = "FAILED"
    try:
        run_task(preflight, cfg.vlm, cfg.training, home)  # fail in seconds, naming the field
        # --- data -------------------------------------------------------------------------------
        if cfg.data.world is not None:
            made, _ = run_task(make_world_pairs, cfg.data.world.model_dump(), home)
            ds, _ = run_task(register_world_dataset, made["pairs_uri"], cfg.data.task, cfg.data.split_kw(), home,
                             cfg.data.max_seed_pairs, made["content_key"])
        else:
            ds, _ = run_task(register_dataset, str(cfg.data.pairs), cfg.data.task, cfg.data.split_kw(), home,
                             cfg.data.max_seed_pairs, None,
                             str(cfg.data.root) if cfg.data.root else None, cfg.data.format,
                             cfg.data.allow_ties)
        stages["data"] = {k: v for k, v in ds.items() if k != "pair_ids"}

        # --- induce -----------------------------------------------------------------------------
        ind = subflow(induce_flow, InduceFlowParams(dataset=ds, induce=cfg.induce, experiment=exp,
                                                    lineage_name=cfg.name, parent_run_id=parent, home=home))
        stages["induce"] = linked(ind, ind["cached"], parent, exp, home)
        rubric_set_id, rubric_json = ind["rubric_set_id"], ind["artifacts"]["rubric_set_json"]

        # --- judge check ------------------------------------------------------------------------
        if cfg.judge.enabled:
            jr, cached = run_task(judge_heldout, ds["dataset_id"], ds["digest"],
                                  ds["pair_ids"][cfg.judge.split][: cfg.judge.max_pairs], rubric_set_id,
                                  cfg.judge.model_dump(mode="json"), cfg.vlm, prompt_version(), exp, parent,
                                  home)
            stages["judge"] = linked(jr, cached, parent, exp, home)

        # --- training ---------------------------------------------------------------------------
        if cfg.training.enabled:
            tcfg = cfg.training
            exchange = str(tcfg.shared_dir or Path(home) / "exchange")
            plan, _ = run_task(plan_training, tcfg.config, rubric_json, cfg.vlm, exchange)
            params = TrainFlowParams(train_key=plan["train_key"], train_config_uri=plan["train_config_uri"],
                                     rubric_set_uri=plan["rubric_set_uri"], vlm=plan["vlm"],
                                     out_dir=plan["out_dir"], experiment=exp, parent_run_id=parent,
                                     gpus=tcfg.gpus)
            if tcfg.dispatch == "work-pool":
                tr, cached = run_task(dispatch_training, plan["train_key"], tcfg.deployment,
                                      {"params": params.model_dump(mode="json")}, tcfg.worker_wait_s,
                                      tcfg.timeout_s, plan["out_dir"])
                # A cache hit here, or one inside the remote flow run: either way no steps ran now.
                cached = cached or bool(tr.get("cached"))
            else:
                tr = subflow(train_flow, params)
                cached = tr["cached"]
            stages["train"] = linked(tr, cached, parent, exp, home, rubric_set_id)

            # --- evaluation ---------------------------------------------------------------------
            if cfg.evaluate.enabled:
                ev = subflow(evaluate_flow, EvaluateFlowParams(
                    train=stages["train"], train_config=tcfg.config, evaluate=cfg.evaluate,
                    rubric_set_id=rubric_set_id, rubric_set_json=rubric_json, vlm=cfg.vlm, experiment=exp,
                    parent_run_id=parent, home=home))
                stages["evaluate"] = linked(ev, ev["cached"], parent, exp, home, rubric_set_id)
        status = "FINISHED"
    finally:
        summary = summarize(cfg, stages, parent, home, time.perf_counter() - t0)
        if not in_prefect():  # every stage was a cache hit: no Prefect run was started (run_pipeline)
            summary["tags"]["arr.fast_rerun"] = "true"
        call(finish_pipeline_run, parent, summary, status, home)
    return summary


def summarize(cfg: PipelineConfig, stages: dict[str, dict[str, Any]], parent_run_id: str, home: str,
              wall_s: float) -> dict[str, Any]:
    """The small summary the flow returns and logs on the parent run (what ``arr runs compare`` reads)."""
    metrics: dict[str, Any] = {"wall_s": round(wall_s, 3)}
    tags: dict[str, Any] = {"arr.kind": "pipeline"}
    calls = 0
    steps = 0
    if "data" in stages:
        tags["arr.dataset_digest"] = stages["data"]["digest"]
    if "induce" in stages:
        s = stages["induce"]
        tags["arr.rubric_set_id"] = s["rubric_set_id"]
        calls += s.get("vlm_calls_this_run", 0)
        metrics["induce.vlm_calls_total"] = s["metrics"].get("vlm_calls", 0)
        metrics["induce.prompt_tokens"] = s["metrics"].get("prompt_tokens", 0)
        metrics["induce.completion_tokens"] = s["metrics"].get("completion_tokens", 0)
    if "judge" in stages:
        s = stages["judge"]
        tags["arr.judge_model"] = s["tags"].get("arr.judge_model")
        for k in ("rubrics.accuracy", "no_rubrics.accuracy", "rubrics.forward_minus_reversed"):
            if k in s["metrics"]:
                metrics[f"judge.{k}"] = s["metrics"][k]
        calls += 0 if s["cached"] else s["metrics"].get("vlm_calls", 0)
    if "train" in stages:
        s = stages["train"]
        tags.update({"arr.policy_id": s.get("policy_id"), "arr.lora_uri": s.get("lora_artifact_uri"),
                     "arr.train_key": s["entity_id"]})
        steps += 0 if s["cached"] else s.get("steps", 0)
        metrics["train.steps"] = s.get("steps", 0)
        metrics["train.final_reward_mean"] = s["metrics"].get("final.reward_mean", float("nan"))
    if "evaluate" in stages:
        s = stages["evaluate"]
        for k in ("geneval.base", "geneval.trained", "geneval.delta", "winrate.judge", "winrate.checker"):
            if k in s["metrics"]:
                metrics[k] = s["metrics"][k]
        calls += 0 if s["cached"] else s["metrics"].get("vlm_calls", 0)
    metrics["vlm_calls_this_run"] = calls
    metrics["train_steps_this_run"] = steps
    metrics["stages_cached"] = sum(bool(s.get("cached")) for n, s in stages.items() if n != "data")
    return {"name": cfg.name, "home": home, "mlflow_run_id": parent_run_id,
            "mlflow_experiment": cfg.mlflow.experiment, "stages": stages, "metrics": metrics, "tags": tags,
            "inputs": stages.get("data")}


def run_pipeline(config: PipelineConfig, home: str | Path | None = None, *,
                 fast_rerun: bool | None = None) -> dict[str, Any]:
    """Run the pipeline flow with its results (the cache) persisted under ``home``.

    ``fast_rerun`` (default: only when no Prefect server is configured): when every stage is a cache
    hit, skip Prefect altogether (its temporary local API takes 5–30 s to start and would dominate a
    run that does no work) and record the run in MLflow and the store from the cached results
    (``flows._wiring.rerun_from_cache``; the parent run carries ``arr.fast_rerun=true``). Any stage to
    run, or any error, and the flow runs under Prefect as usual.
    """
    h = resolve_home(home)
    if fast_rerun is None:
        fast_rerun = not _prefect_server_configured()
    if fast_rerun:
        summary = rerun_from_cache(pipeline_flow, config, home=str(h), results=results_dir(h))
        if summary is not None:
            return summary
    with local_run_settings():
        return pipeline_flow.with_options(result_storage=results_dir(h), persist_result=True)(config, home=str(h))


def _prefect_server_configured() -> bool:
    from prefect.settings import PREFECT_API_URL

    return bool(os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value())


@contextlib.contextmanager
def local_run_settings() -> Iterator[None]:
    """Without a Prefect server (the temporary local API), turn flow-run heartbeats off: they exist
    so a server can mark crashed deployment runs, nobody acts on them here, and joining the heartbeat
    thread costs each flow run up to a second at exit (Prefect 3.8 sleeps in 1 s steps)."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        _start_local_api_while_mlflow_loads()
        yield


def _start_local_api_while_mlflow_loads() -> None:
    """Start Prefect's temporary local server (a subprocess, 5–30 s here) while this thread opens the
    MLflow tracking store (~3–6 s): the two waits overlap instead of adding up."""
    from prefect.settings import PREFECT_API_URL

    from tasks._env import start_local_api_early, wait_local_api
    from tasks._mlflow import client

    if not PREFECT_API_URL.value():  # e.g. a test harness sets it in Prefect's settings, not the env
        start_local_api_early()
    client().search_experiments(max_results=1)
    wait_local_api()
