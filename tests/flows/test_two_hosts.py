"""Two hosts on one machine (issue 25 item 4): a Prefect server and an MLflow tracking server on
127.0.0.1, two process workers with their own state folders and their own ``ARR_PROJECT_DIR`` paths to
the checkout, the ``arr-pipeline`` deployment dispatching training from one worker to the other
through the shared exchange folder, everything recorded on the tracking server (no SQLite file).

Marked slow (several minutes on a 2-core CPU). Deployed with ``ARR_PROJECT_DIR`` naming a folder
that does not exist: the pull step must be resolved by each worker when its run starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.flows.test_deployments import ROOT, _free_port, _stop, _wait_healthy

pytestmark = pytest.mark.slow


def test_two_workers_share_a_tracking_server_and_the_exchange_folder(tmp_path: Path, toy_policy_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    from tests.flows.conftest import tiny_config

    p_port, m_port = _free_port(), _free_port()
    api, tracking = f"http://127.0.0.1:{p_port}/api", f"http://127.0.0.1:{m_port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "ARR_"))}
    base.update(PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="true",
                MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_TRACKING_URI=tracking,
                PYTHONPATH=str(ROOT) + os.pathsep + base.get("PYTHONPATH", ""))
    # Two checkouts as two hosts would have them: two paths (links) to this repository.
    checkout = {h: tmp_path / f"checkout-{h}" for h in "ab"}
    for link in checkout.values():
        link.symlink_to(ROOT, target_is_directory=True)
    home = {h: tmp_path / f"home-{h}" for h in "ab"}
    shared = tmp_path / "shared"
    prefect = [sys.executable, "-m", "prefect"]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(prefect + ["server", "start", "--host", "127.0.0.1", "--port", str(p_port)],
                                      env={**base, "PREFECT_HOME": str(tmp_path / "prefect-server")},
                                      cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(m_port), "--workers",
             "1", "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow-server/mlflow.db",
             "--artifacts-destination", str(tmp_path / "mlflow-server" / "artifacts")],
            env=base, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        (tmp_path / "mlflow-server").mkdir()
        _wait_healthy(api, procs[0])
        _wait_healthy(tracking, procs[1])  # MLflow answers GET /health too
        for pool in ("gpu-h100", "arr-process"):
            subprocess.run(prefect + ["work-pool", "create", pool, "--type", "process"], env=base, cwd=ROOT,
                           check=True, capture_output=True)
        dep = subprocess.run(prefect + ["--no-prompt", "deploy", "--all"], cwd=ROOT, capture_output=True, text=True,
                             env={**base, "ARR_PROJECT_DIR": str(tmp_path / "not-there-at-deploy-time")})
        assert dep.returncode == 0, dep.stdout + dep.stderr
        deployments = {d["name"]: d for d in httpx.post(f"{api}/deployments/filter", json={}).json()}
        # The pull step names the variable, not the deploying machine's value of it: each worker reads its own.
        assert deployments["arr-pipeline"]["pull_steps"] == [{"arr_cli.common.set_project_dir":
                                                              {"variable": "ARR_PROJECT_DIR"}}]
        reinduction = deployments["rubric-reinduction"]
        assert (reinduction.get("global_concurrency_limit") or {}).get("limit", reinduction.get("concurrency_limit")) == 1
        assert reinduction["concurrency_options"]["collision_strategy"] == "ENQUEUE"
        assert deployments["arr-pipeline"].get("global_concurrency_limit") is None

        for h, pool in (("a", "arr-process"), ("b", "gpu-h100")):
            env = {**base, "ARR_HOME": str(home[h]), "ARR_PROJECT_DIR": str(checkout[h]),
                   "PREFECT_HOME": str(tmp_path / f"prefect-{h}")}
            procs.append(subprocess.Popen(prefect + ["worker", "start", "--pool", pool, "--type", "process"],
                                          env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))

        cfg = tiny_config(toy_policy_dir, **{"training.dispatch": "work-pool", "training.worker_wait_s": 300,
                                             "training.shared_dir": str(shared), "training.gpus": 1,
                                             "evaluate.enabled": False, "mlflow.experiment": "two-hosts"})
        cfg_file = tmp_path / "pipeline.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"vlm": {"api_key"}})))
        run = subprocess.run(prefect + ["deployment", "run", "arr-pipeline/arr-pipeline", "-p",
                                        f"config_path={cfg_file}", "--watch", "--watch-timeout", "1200"],
                             env=base, cwd=tmp_path, capture_output=True, text=True, timeout=1300)
        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]

        c = MlflowClient(tracking_uri=tracking)
        exp = c.get_experiment_by_name("two-hosts")
        parents = c.search_runs([exp.experiment_id], filter_string="tags.`arr.kind` = 'pipeline'")
        assert [r.info.status for r in parents] == ["FINISHED"]
        kids = {r.data.tags["arr.stage"]: r for r in c.search_runs(
            [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")}
        assert set(kids) == {"induce", "judge", "train"}
        train_run = c.get_run(kids["train"].data.tags.get("arr.source_run_id") or kids["train"].info.run_id)
        assert "lora" in {a.path for a in c.list_artifacts(train_run.info.run_id)}  # uploaded via the server
        assert train_run.data.tags["arr.prefect_flow_run_id"] != parents[0].data.tags["arr.prefect_flow_run_id"]
        # The training ran on worker b from the shared folder; only worker a has a store; no SQLite MLflow.
        assert list(shared.glob("tr-*/run/lora/pytorch_lora_weights.safetensors"))
        assert (home["a"] / "store").exists() and not (home["b"] / "store").exists()
        assert not list(tmp_path.glob("home-*/mlflow/*.db"))
        links = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"key": {"any_": ["arr-train-mlflow"]}}}).json()
        assert links and f"({tracking}/#/experiments/{exp.experiment_id}/runs/" in links[0]["data"]  # [text](url)
    finally:
        for p in reversed(procs):
            _stop(p)
