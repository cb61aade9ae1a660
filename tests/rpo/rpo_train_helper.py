"""``train`` over a stage config, for the trainer tests: the recipe turns a ``TrainConfig`` into the
trainer's plain ``RPOArgs`` (``arr_core.recipes.rpo.trainer_args``), as every real caller does; and
``torchrun`` to start a test file as a 2-process worker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from arr_core.recipes.rpo import trainer_args
from arr_core.rpo.trainer import train as _train


def train(policy: Any, rewarder: Any, prompts: list[str], cfg: Any, out_dir: Any, **kw: Any) -> Any:
    return _train(policy, rewarder, prompts, trainer_args(cfg), out_dir, **kw)


def torchrun(script: Path, *args: str, nproc: int = 2, timeout: int = 240) -> None:
    """``python -m torch.distributed.run --nproc_per_node NPROC SCRIPT ARGS`` from the checkout, on a
    free local port; fails the test with the end of the output when a worker fails."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    with socket.socket() as sock:  # a free port (torchrun's static rendezvous hangs on port 0)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(port), str(script), *args]
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
