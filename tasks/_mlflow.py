"""MLflow lineage helpers used by the tasks: explicit run ids, batched logging, no secrets.

Prefect runs tasks in worker threads and MLflow's active-run stack is per thread, so nothing here
relies on the fluent "active run": every call takes a ``run_id`` and goes through ``MlflowClient``.
A child run is linked to its pipeline run by the ``mlflow.parentRunId`` tag, set explicitly.

Parameters are the flattened stage config after :func:`tasks._cache.redact` (secret-named keys
removed); tags and metrics are plain values the stage computed. Dataset and prompt-set inputs are
logged with the project's own content digests (MLflow's own digest covers only the first 10,000
rows and needs pandas): a ``MetaDataset`` entity, as ``mlflow.log_input`` would log it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks._cache import is_secret_key, redact

PARENT_TAG = "mlflow.parentRunId"
# Set on every experiment this project creates: `arr runs compare` lists only those.
PROJECT_TAG, PROJECT = "arr.project", "arr-pipeline"
MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
MAX_TAG_LEN = 8000


def client() -> Any:
    """A client for the current tracking URI (one per URI: building one re-resolves the store)."""
    return _client_for(os.environ.get("MLFLOW_TRACKING_URI"))


@functools.lru_cache(maxsize=8)
def _client_for(uri: str | None) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


_EXPERIMENTS: dict[tuple[str | None, str], str] = {}


def _uses_local_store(home: Path) -> bool:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    return uri.startswith("sqlite:///") and str(home) in uri


def experiment_id(name: str, home: Path | None = None) -> str:
    """Get or create the experiment. With the local SQLite store, artifacts go under
    ``ARR_HOME/mlflow/artifacts`` (MLflow would otherwise use ``./mlruns`` of the current folder)."""
    key = (os.environ.get("MLFLOW_TRACKING_URI"), name)
    if key in _EXPERIMENTS:
        return _EXPERIMENTS[key]
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(PROJECT_TAG) != PROJECT:  # made before the tag existed, or by hand
            c.set_experiment_tag(exp.experiment_id, PROJECT_TAG, PROJECT)
        _EXPERIMENTS[key] = exp.experiment_id
        return exp.experiment_id
    location = None
    if home is not None and _uses_local_store(home):
        location = (home / "mlflow" / "artifacts").resolve().as_uri()
    try:
        return c.create_experiment(name, artifact_location=location, tags={PROJECT_TAG: PROJECT})
    except Exception:  # created concurrently by another task or process
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` → ``{"a.b": "1"}`` after removing secrets; lists become JSON text."""
    import json

    out: dict[str, str] = {}
    obj = redact(obj)
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v if isinstance(v, str) else json.dumps(v, default=str)
    elif prefix:
        out[prefix] = obj if isinstance(obj, str) else json.dumps(obj, default=str)
    return {k: v[:MAX_PARAM_LEN] for k, v in out.items()}


def _clean_tags(tags: dict[str, Any]) -> dict[str, str]:
    return {k: str(v)[:MAX_TAG_LEN] for k, v in tags.items()
            if v is not None and not is_secret_key(k)}


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the project checkout, with ``-dirty`` when it has local changes; 'unknown'
    outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def prefect_flow_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id) if flow_run.id else None
    except Exception:
        return None


def start_run(experiment: str, run_name: str, *, home: Path | None = None,
              parent_run_id: str | None = None, tags: dict[str, Any] | None = None) -> str:
    """Create a run (a child of ``parent_run_id`` when given) and return its id."""
    all_tags = {"arr.git_commit": git_commit(), "arr.prefect_flow_run_id": prefect_flow_run_id(),
                "arr.host": socket.gethostname(), "arr.pid": os.getpid(), "mlflow.runName": run_name,
                **(tags or {})}
    if parent_run_id:
        all_tags[PARENT_TAG] = parent_run_id
    run = client().create_run(experiment_id(experiment, home), run_name=run_name,
                              tags=_clean_tags(all_tags))
    return run.info.run_id


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def mark_orphaned_runs(experiment: str, home: Path | None = None) -> list[str]:
    """Runs of ``experiment`` still RUNNING although the process that started them on this host is
    gone (killed with -9, the machine rebooted) are ended as KILLED, so the UI and ``arr runs compare``
    do not show them as live. Runs of other hosts, and of live processes, are left alone."""
    host = socket.gethostname()
    c = client()
    runs = c.search_runs([experiment_id(experiment, home)], filter_string="attributes.status = 'RUNNING'",
                         max_results=500)
    killed = []
    for r in runs:
        tags = r.data.tags
        pid = tags.get("arr.pid")
        if tags.get("arr.host") != host or not (pid or "").isdigit() or _alive(int(pid)):
            continue
        c.set_tag(r.info.run_id, "arr.end_reason", f"process {pid} on {host} ended without closing the run")
        c.set_terminated(r.info.run_id, "KILLED")
        killed.append(r.info.run_id)
    return killed


def log_params(run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    flat = flatten(params)
    items = [Param(k, v) for k, v in flat.items()]
    for i in range(0, len(items), 100):  # MLflow's batch limit for params
        client().log_batch(run_id, params=items[i:i + 100])


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, v) for k, v in _clean_tags(tags).items()]
    if items:
        client().log_batch(run_id, tags=items)


def log_metrics(run_id: str, metrics: dict[str, Any], step: int = 0) -> None:
    """One batched call for all finite numeric metrics (``log_metric`` costs ~7 ms per call)."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    items = [Metric(k, float(v), ts, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
    for i in range(0, len(items), 1000):
        client().log_batch(run_id, metrics=items[i:i + 1000])


def log_metric_history(run_id: str, rows: list[dict[str, Any]], step_key: str = "step") -> None:
    """Per-step metrics (e.g. a training curve) as batches of up to 1000 values."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    items = [Metric(k, float(v), ts, int(r[step_key])) for r in rows for k, v in r.items()
             if k != step_key and isinstance(v, (int, float)) and not isinstance(v, bool)
             and math.isfinite(float(v))]
    for i in range(0, len(items), 1000):
        client().log_batch(run_id, metrics=items[i:i + 1000])


def log_input(run_id: str, *, name: str, digest: str, source_uri: str, context: str) -> None:
    """Record a dataset or prompt set by its content digest (what ``mlflow.log_input`` logs, with our
    digest instead of MLflow's partial one)."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():  # MLflow warns that it guessed the source type ("local")
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(source_uri or name)
    ds = MetaDataset(source, name=name, digest=digest[:36])
    client().log_inputs(run_id, datasets=[DatasetInput(
        dataset=ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])])


def log_artifact(run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    p = Path(path)
    if p.is_dir():
        client().log_artifacts(run_id, str(p), artifact_path)
    elif p.exists():
        client().log_artifact(run_id, str(p), artifact_path)
    else:
        raise FileNotFoundError(f"artifact {p} does not exist")


def log_step_images(run_id: str, images: dict[int, str | Path], key: str = "samples") -> int:
    """Images as MLflow step-indexed images (``log_image(key=, step=)``: the run's Images tab shows
    them on a step slider); ``images`` maps step → PNG path. Returns how many were logged."""
    from PIL import Image

    for step, path in sorted(images.items()):
        with Image.open(path) as im:
            client().log_image(run_id, im.convert("RGB"), key=key, step=int(step))
    return len(images)


def register_model_version(name: str, source: str, run_id: str, tags: dict[str, Any],
                           alias: str | None = None) -> str:
    """Register ``source`` (the run's artifact URI of a LoRA folder) as a new version of the
    registered model ``name`` (created when missing), with ``tags``; point ``alias`` at it. Returns
    the version number. Works with the local SQLite store as with a tracking server."""
    c = client()
    try:
        c.get_registered_model(name)
    except Exception:  # missing (RESOURCE_DOES_NOT_EXIST); a concurrent creator wins the race below
        with contextlib.suppress(Exception):
            c.create_registered_model(name, tags={PROJECT_TAG: PROJECT})
    mv = c.create_model_version(name, source=source, run_id=run_id, tags=_clean_tags(tags))
    if alias:
        c.set_registered_model_alias(name, alias, mv.version)
    return str(mv.version)


def artifact_uri(run_id: str) -> str:
    return client().get_run(run_id).info.artifact_uri


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status=status)


@contextlib.contextmanager
def stage_run(experiment: str, stage: str, *, home: Path | None, parent_run_id: str | None,
              params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None) -> Iterator[str]:
    """A child run for one stage: created with params and tags, ended FINISHED, or FAILED when the
    body raises (the exception propagates)."""
    run_id = start_run(experiment, stage, home=home, parent_run_id=parent_run_id,
                       tags={"arr.stage": stage, **(tags or {})})
    try:
        if params:
            log_params(run_id, params)
        yield run_id
    except BaseException:
        end_run(run_id, "FAILED")
        raise
    end_run(run_id, "FINISHED")
