"""The torchrun entry of the pipeline's training task: it tears the group down with a barrier only
after a successful run, and ends the process early (``exit_after_distributed_run``) only then.

The distributed pieces are replaced by recorders here: the real two-process path runs in
tests/rpo/test_ddp.py; this file pins the control flow around it, which that test cannot see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import arr_core.rpo.distributed as distributed
import tasks.train as train_task
from arr_core.rpo.config import TrainConfig
from arr_core.rpo.distributed import DistContext
from tasks import train_entry


class _Exited(Exception):
    pass


def _setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, train_result) -> tuple[list, list[str]]:
    calls: list = []
    monkeypatch.setattr(distributed, "init_from_env", lambda backend=None: DistContext(rank=0, world_size=2))
    monkeypatch.setattr(distributed, "cleanup", lambda ctx, synchronize=True: calls.append(("cleanup", synchronize)))

    def fake_exit(code: int = 0) -> None:
        calls.append(("exit", code))
        raise _Exited

    monkeypatch.setattr(distributed, "exit_after_distributed_run", fake_exit)

    def fake_train_local(cfg, rs, vlm, out, dist_ctx=None):
        calls.append(("train", dist_ctx.world_size))
        if isinstance(train_result, Exception):
            raise train_result
        return train_result

    monkeypatch.setattr(train_task, "train_local", fake_train_local)
    cfg = TrainConfig.model_validate({"policy": {"kind": "toy"}, "prompts": {"source": "world"},
                                      "reward": {"kind": "checker"}})
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json(), encoding="utf-8")
    return calls, ["--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "out")]


def test_success_writes_the_result_then_synchronises_then_exits(monkeypatch, tmp_path) -> None:
    calls, argv = _setup(monkeypatch, tmp_path, {"steps": 2})
    (tmp_path / "out").mkdir()
    with pytest.raises(_Exited):
        train_entry.main(argv)
    assert calls == [("train", 2), ("cleanup", True), ("exit", 0)]
    assert json.loads((tmp_path / "out" / "rank0_result.json").read_text()) == {"steps": 2}


def test_failure_skips_the_barrier_and_the_early_exit(monkeypatch, tmp_path) -> None:
    calls, argv = _setup(monkeypatch, tmp_path, RuntimeError("judge endpoint down"))
    with pytest.raises(RuntimeError, match="judge endpoint down"):
        train_entry.main(argv)
    assert calls == [("train", 2), ("cleanup", False)]  # no barrier (it could hang), no exit(0)
