"""``train`` over a stage config, for the trainer tests: the recipe turns a ``TrainConfig`` into the
trainer's plain ``RPOArgs`` (``arr_core.recipes.rpo.trainer_args``), as every real caller does."""

from __future__ import annotations

from typing import Any

from arr_core.recipes.rpo import trainer_args
from arr_core.rpo.trainer import train as _train


def train(policy: Any, rewarder: Any, prompts: list[str], cfg: Any, out_dir: Any, **kw: Any) -> Any:
    return _train(policy, rewarder, prompts, trainer_args(cfg), out_dir, **kw)
