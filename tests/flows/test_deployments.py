"""End to end on a real Prefect server: deploy from prefect.yaml, dispatch training to `gpu-h100`.

Marked slow (about 3–5 minutes on a 2-core CPU); CI runs it. Everything talks to 127.0.0.1 only:
`prefect server start` on a free port, a process worker on the `gpu-h100` pool, `prefect deploy
--all`, then `arr pipeline run` with `training.dispatch: work-pool` — first with no worker (a clear
failure after `worker_wait_s`, not a run stuck in Scheduled), then with one (training runs on the
worker; the earlier stages are cache hits).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"server at {url} not healthy after {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_dispatch_training_to_gpu_pool(tmp_path: Path, toy_policy_dir: Path) -> None:
    from tests.flows.conftest import tiny_config

    home = tmp_path / "home"
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(ARR_HOME=str(home), ARR_PROJECT_DIR=str(ROOT), PREFECT_HOME=str(tmp_path / "prefect"),
               PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="true",
               MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_TRACKING_URI=f"sqlite:///{home}/mlflow/mlflow.db",
               PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(home / "prefect" / "results"),
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    (home / "mlflow").mkdir(parents=True)
    prefect = [sys.executable, "-m", "prefect"]
    server = subprocess.Popen(prefect + ["server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        _wait_healthy(api, server)
        for pool in ("gpu-h100", "arr-process"):
            subprocess.run(prefect + ["work-pool", "create", pool, "--type", "process"], env=env, cwd=ROOT,
                           check=True, capture_output=True)
        dep = subprocess.run(prefect + ["--no-prompt", "deploy", "--all"], env=env, cwd=ROOT,
                             capture_output=True, text=True)
        assert dep.returncode == 0, dep.stdout + dep.stderr
        listed = subprocess.run(prefect + ["deployment", "ls"], env=env, cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout
        for name in ("arr-pipeline", "rpo-train", "rubric-reinduction"):
            assert name in listed

        cfg = tiny_config(toy_policy_dir, **{"training.dispatch": "work-pool", "training.worker_wait_s": 5,
                                             "evaluate.enabled": False})
        cfg_file = tmp_path / "pipeline.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"vlm": {"api_key"}})))
        arr = [sys.executable, "-m", "arr_cli", "pipeline", "run", "--config", str(cfg_file), "--home", str(home)]

        no_worker = subprocess.run(arr, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert no_worker.returncode != 0
        assert "was not picked up by any worker on work pool 'gpu-h100'" in no_worker.stdout + no_worker.stderr

        worker = subprocess.Popen(prefect + ["worker", "start", "--pool", "gpu-h100", "--type", "process"],
                                  env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cfg_file.write_text(yaml.safe_dump(cfg.model_copy(update={"training": cfg.training.model_copy(
            update={"worker_wait_s": 120})}).model_dump(mode="json", exclude={"vlm": {"api_key"}})))
        ok = subprocess.run(arr, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        out = ok.stdout + ok.stderr
        assert ok.returncode == 0, out[-4000:]
        # Data, induce and judge are cache hits of the failed run; the 2 steps ran on the worker.
        assert "VLM calls this run: 0   training steps this run: 2" in out
        lora = list((home / "exchange").glob("tr-*/run/lora/pytorch_lora_weights.safetensors"))
        assert len(lora) == 1
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
