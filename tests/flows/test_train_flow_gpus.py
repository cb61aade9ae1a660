"""The rpo-train deployment's process count (issue 25 item 4): ``training.gpus``, else the work pool's
``ARR_GPUS`` job variable, checked on the worker against its visible CUDA devices before any step."""

from __future__ import annotations

from pathlib import Path

import pytest

from arr_core.errors import InputError


def _params(tmp_path: Path, device: str, gpus: int | None = None):
    from arr_core.rpo.config import TrainConfig
    from flows.train import TrainFlowParams

    cfg = TrainConfig.model_validate({"policy": {"kind": "toy", "device": device},
                                      "prompts": {"source": "world", "count": 4, "seed": 1}})
    uri = tmp_path / "train_config.json"
    uri.write_text(cfg.model_dump_json(), encoding="utf-8")
    return TrainFlowParams(train_key="tr-test", train_config_uri=str(uri), out_dir=str(tmp_path / "run"), gpus=gpus)


def test_gpus_come_from_params_then_arr_gpus_then_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.train import worker_gpus

    monkeypatch.delenv("ARR_GPUS", raising=False)
    assert worker_gpus(_params(tmp_path, "cpu")) == 1
    monkeypatch.setenv("ARR_GPUS", "2")
    assert worker_gpus(_params(tmp_path, "cpu")) == 2  # gloo processes on the CPU are allowed
    assert worker_gpus(_params(tmp_path, "cpu", gpus=1)) == 1  # the pipeline's training.gpus wins
    for bad in ("eight", "0"):
        monkeypatch.setenv("ARR_GPUS", bad)
        with pytest.raises(InputError) as e:
            worker_gpus(_params(tmp_path, "cpu"))
        assert e.value.field.startswith("ARR_GPUS")


def test_more_processes_than_visible_cuda_devices_is_refused(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The deployment's default ARR_GPUS=8 on a worker with fewer GPUs fails before training, naming the
    job variable (on a CPU-only machine: naming the device that is not there)."""
    import torch

    from flows.train import worker_gpus

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    monkeypatch.setenv("ARR_GPUS", str(n + 1))
    with pytest.raises(InputError) as e:
        worker_gpus(_params(tmp_path, "cuda"))
    if n == 0:
        assert e.value.field == "training.config.policy.device" and "no CUDA device is visible" in str(e.value)
    else:
        assert e.value.field.startswith("ARR_GPUS") and f"{n} CUDA device(s) are visible" in str(e.value)
        assert worker_gpus(_params(tmp_path, "cuda", gpus=n)) == n
