"""Training tasks (RPO): run training from exported inputs, or dispatch it to a work pool.

The training side never opens the local DuckDB store (one writer per file, and the GPU machine may
be another host): it reads the rubric set and the training config from exported JSON files (URIs),
writes the LoRA, metrics and sample grids to its output folder, and returns their URIs. The
pipeline records the result in the store afterwards.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import _mlflow as mlf
from tasks._artifacts import publish_stage
from tasks._cache import keyed_by
from tasks.common import fail_point, home_path

RESULT_FILE = "train_result.json"
# Set on a LoRA's registered model version once its training finished: `models:/<name>@trained`
# is the newest successfully trained LoRA of that name.
LORA_ALIAS = "trained"


def registered_model_name(experiment: str, policy_kind: str) -> str:
    """The registered model of a pipeline's LoRAs: the MLflow experiment (the config's
    ``mlflow.experiment``) and the base policy kind, so LoRAs of different bases never share a name."""
    return f"{experiment}-{policy_kind}-lora"


def step_samples(samples_dir: str | Path) -> dict[int, Path]:
    """The trainer's per-step sample grids (``samples/step_000010.png``) by step."""
    d = Path(samples_dir)
    return {int(p.stem.removeprefix("step_")): p for p in sorted(d.glob("step_*.png"))
            if p.stem.removeprefix("step_").isdigit()} if d.is_dir() else {}


def _vlm_from_env(vlm: dict[str, Any]) -> Any:
    """The VLM config as sent (no key); the key, if any, comes from this process's environment."""
    from arr_core.vlm.config import VLMConfig

    return VLMConfig.model_validate({k: v for k, v in vlm.items() if k != "api_key"})


@task(cache_key_fn=keyed_by("train_key"), persist_result=True, result_serializer="json")
def run_rpo(train_key: str, train_config_uri: str, rubric_set_uri: str | None, vlm: dict[str, Any],
            out_dir: str, experiment: str, parent_run_id: str | None, gpus: int = 1) -> dict[str, Any]:
    """Train the LoRA (in this process, or under ``torchrun`` when ``gpus > 1``), log the ``train``
    child run (params, per-step metrics batched, LoRA weights and sample grids), and return URIs.

    ``train_key`` is the content key the caller computed (config digest, rubric-set id, policy
    fingerprint, code version): an equal key is a cache hit with 0 training steps.
    """
    from arr_core.recipes import rpo as recipe
    from arr_core.rpo.checkpoint import is_complete
    from arr_core.rpo.config import TrainConfig
    from arr_core.rubrics.rubric_set import RubricSet

    cfg = TrainConfig.model_validate_json(Path(train_config_uri).read_text(encoding="utf-8"))
    rs = RubricSet.from_json(Path(rubric_set_uri).read_text(encoding="utf-8")) if rubric_set_uri else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy_id = recipe.policy_fingerprint(cfg.policy.model_dump(mode="json"))
    tags = {"arr.rubric_set_id": rs.id if rs else None, "arr.policy_id": policy_id,
            "arr.train_key": train_key, "arr.dispatch_gpus": gpus}
    t0 = time.perf_counter()
    with mlf.stage_run(experiment, "train", home=home_path(None), parent_run_id=parent_run_id,
                       params=cfg.model_dump(mode="json"), tags=tags) as run_id:
        fail_point("train")  # inside the run, so a failed training shows as a FAILED child run
        # A rerun after a failure mid-training (same train_key, hence same folder) resumes exactly from
        # the newest checkpoint the failed attempt left instead of starting again at step 0.
        resume = out if any(is_complete(d) for d in (out / "checkpoints").glob("step_*")) else None
        if resume is not None:
            _progress(f"resuming training {train_key} from its newest checkpoint in {out}")
        mlf.set_tags(run_id, {"arr.resumed": str(resume is not None).lower()})
        if gpus > 1:
            result = _torchrun(gpus, train_config_uri, rubric_set_uri, vlm, out, resume)
        else:
            res = recipe.run(cfg, out, rubric_set=rs, vlm=_vlm_from_env(vlm), progress=_progress, resume=resume)
            result = {"lora_dir": str(res.lora_dir), "metrics_uri": str(res.metrics_path), "steps": res.steps,
                      "samples_dir": str(out / "samples")}
        history = [json.loads(line) for line in Path(result["metrics_uri"]).read_text().splitlines()
                   if line.strip()] if Path(result["metrics_uri"]).exists() else []
        mlf.log_metric_history(run_id, history)
        final = {f"final.{k}": v for k, v in (history[-1] if history else {}).items() if k != "step"}
        metrics = {**final, "train_steps": result["steps"], "wall_s": round(time.perf_counter() - t0, 3)}
        mlf.log_metrics(run_id, metrics)
        mlf.log_artifact(run_id, result["lora_dir"], "lora")
        if Path(result["samples_dir"]).is_dir():
            mlf.log_artifact(run_id, result["samples_dir"], "samples")
        lora_artifact = mlf.artifact_uri(run_id).rstrip("/") + "/lora"
        mlf.set_tags(run_id, {"arr.lora_uri": lora_artifact})
        mlf.log_step_images(run_id, step_samples(result["samples_dir"]))
        model = {"name": registered_model_name(experiment, cfg.policy.kind), "alias": LORA_ALIAS}
        model["version"] = mlf.register_model_version(
            model["name"], lora_artifact, run_id, {**tags, "arr.dataset_digest": rs.metadata.get("dataset_digest")
                                                    if rs else None}, alias=LORA_ALIAS)
        mlf.set_tags(run_id, {"arr.registered_model": f"{model['name']}/{model['version']}"})
    tags["arr.lora_uri"] = lora_artifact
    metrics["registered_version"] = int(model["version"])
    summary = {"stage": "train", "entity_kind": "training_run", "entity_id": train_key,
               "mlflow_run_id": run_id, "policy_id": policy_id, "lora_uri": result["lora_dir"],
               "lora_artifact_uri": lora_artifact, "steps": result["steps"], "tags": tags,
               "registered_model": model, "metrics": metrics, "artifacts": {"lora": result["lora_dir"],
                                                 "metrics": result["metrics_uri"]}}
    (out / RESULT_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    publish_stage("train", f"training {train_key}", {**tags, **metrics}, mlflow_run_id=run_id)
    return summary


def _progress(line: str) -> None:
    try:
        from prefect.logging import get_run_logger

        get_run_logger().info(line)
    except Exception:
        print(line, flush=True)


def _torchrun(gpus: int, train_config_uri: str, rubric_set_uri: str | None, vlm: dict[str, Any],
              out: Path, resume: Path | None = None) -> dict[str, Any]:
    """Run the recipe's torchrun entry (``python -m arr_core.recipes.rpo``, one process per GPU);
    rank 0 writes the result file this reads back. A rank's project error is raised here as itself
    (same class and exit code), so the retry rule treats it as in one process."""
    from arr_core.recipes import rpo as recipe

    cmd = recipe.torchrun_command(gpus, train_config_uri, out, rubrics_json=rubric_set_uri, vlm=vlm, resume=resume)
    return recipe.run_torchrun(cmd, out, gpus, cwd=Path(__file__).resolve().parent.parent, env=os.environ.copy())


@task(cache_policy=NO_CACHE)
def plan_training(train_cfg: Any, rubric_set_json: str, vlm: Any, exchange: str) -> dict[str, Any]:
    """Compute the training's content key and export its inputs where the training side can read them.

    Key = trajectory-relevant config (without output paths and logging cadence), step count, the
    content of the prompt/pair files it names, rubric set id, base-policy fingerprint, the VLM config
    without secrets, and the training code version.
    """
    from arr_core.digest import digest_obj
    from arr_core.recipes.rpo import input_files_digest, policy_fingerprint
    from arr_core.rubrics.rubric_set import RubricSet
    from tasks._cache import code_version, redact

    rs = RubricSet.from_json(Path(rubric_set_json).read_text(encoding="utf-8"))
    cfg_json = train_cfg.model_dump(mode="json", exclude={"output_dir", "checkpoint_every", "sample_grid_every"})
    policy_id = policy_fingerprint(train_cfg.policy.model_dump(mode="json"))
    vlm_safe = redact(vlm)
    train_key = "tr-" + digest_obj({"config": cfg_json, "rubric_set_id": rs.id, "policy_id": policy_id,
                                    "inputs": input_files_digest(train_cfg),
                                    "vlm": vlm_safe, "code": code_version(__file__)}, 24)
    folder = Path(exchange) / train_key
    folder.mkdir(parents=True, exist_ok=True)
    cfg_path, rs_path = folder / "train_config.json", folder / "rubric_set.json"
    cfg_path.write_text(train_cfg.model_dump_json(indent=2), encoding="utf-8")
    rs_path.write_text(rs.to_json(), encoding="utf-8")
    return {"train_key": train_key, "policy_id": policy_id, "train_config_uri": str(cfg_path),
            "rubric_set_uri": str(rs_path), "out_dir": str(folder / "run"),
            "vlm": json.loads(json.dumps(vlm_safe, default=str))}


@task(cache_key_fn=keyed_by("train_key"), persist_result=True, result_serializer="json")
def dispatch_training(train_key: str, deployment: str, parameters: dict[str, Any], worker_wait_s: float,
                      timeout_s: float, out_dir: str, poll_s: float = 2.0) -> dict[str, Any]:
    """Start the ``rpo-train`` deployment with ``run_deployment`` and wait for it.

    Fails with a clear message when no worker has picked the run up within ``worker_wait_s`` (the
    run is cancelled rather than left "Scheduled" forever), and when the run does not complete.
    Cached by ``train_key`` like the in-process path: a rerun after a later failure does not train
    again.
    """
    from prefect import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.states import Cancelled

    if not os.environ.get("PREFECT_API_URL"):
        raise RuntimeError("training.dispatch 'work-pool' needs a Prefect server that the worker also "
                           "uses: start one (`prefect server start --host 127.0.0.1`), set PREFECT_API_URL, "
                           "deploy (`prefect deploy --all`) and start a worker "
                           "(`prefect worker start --pool gpu-h100`); or use training.dispatch 'in-process'")
    fr = run_deployment(name=deployment, parameters=parameters, timeout=0, as_subflow=True,
                        tags=["arr", "rpo-train"])
    started = time.monotonic()
    picked = False
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(fr.id)
            state = run.state
            if state is not None and state.type != StateType.SCHEDULED:
                picked = True
            if state is not None and state.is_final():
                break
            waited = time.monotonic() - started
            if not picked and waited > worker_wait_s:
                pool = run.work_pool_name or "?"
                workers = client.read_workers_for_work_pool(pool) if pool != "?" else []
                online = [w.name for w in workers if str(getattr(w, "status", "")).upper().endswith("ONLINE")]
                client.set_flow_run_state(fr.id, Cancelled(message="no worker picked the run up"), force=True)
                raise RuntimeError(
                    f"training run {fr.id} of deployment '{deployment}' was not picked up by any worker on "
                    f"work pool '{pool}' within {worker_wait_s:.0f} s (online workers: {online or 'none'}); "
                    f"start one with `prefect worker start --pool {pool}` or raise training.worker_wait_s. "
                    "The run was cancelled.")
            if waited > timeout_s:
                raise RuntimeError(f"training run {fr.id} did not finish within {timeout_s:.0f} s "
                                   f"(state {state.name if state else '?'})")
            time.sleep(poll_s)
    if not state.is_completed():
        raise RuntimeError(f"training run {fr.id} of deployment '{deployment}' ended {state.name}: "
                           f"{state.message or 'see the Prefect UI / worker log'}")
    result_file = Path(out_dir) / RESULT_FILE
    if not result_file.is_file():
        raise RuntimeError(f"training run {fr.id} completed but {result_file} is missing: the worker and "
                           "the pipeline must share training.shared_dir")
    summary = json.loads(result_file.read_text(encoding="utf-8"))
    summary["tags"] = {**summary.get("tags", {}), "arr.training_flow_run_id": str(fr.id)}
    return summary
