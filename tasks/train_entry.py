"""Entry point of one training process under ``torchrun`` (``python -m tasks.train_entry``).

Every rank loads the same exported inputs, trains its own prompt shard with DDP gradient all-reduce
(``arr_core.rpo.distributed``), and rank 0 writes ``rank0_result.json`` for the launching task.
No Prefect or MLflow calls here: the launching task logs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from arr_core.rpo.config import TrainConfig
    from arr_core.rpo.distributed import cleanup, exit_after_distributed_run, init_from_env
    from arr_core.rubrics.rubric_set import RubricSet
    from tasks.train import _vlm_from_env, train_local

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--vlm", default="{}")
    ap.add_argument("--rubrics", default=None)
    args = ap.parse_args(argv)
    cfg = TrainConfig.model_validate_json(Path(args.config).read_text(encoding="utf-8"))
    rs = RubricSet.from_json(Path(args.rubrics).read_text(encoding="utf-8")) if args.rubrics else None
    ctx = init_from_env()
    finished = False
    try:
        result = train_local(cfg, rs, _vlm_from_env(json.loads(args.vlm)), Path(args.out), dist_ctx=ctx)
        if ctx.rank == 0:
            (Path(args.out) / "rank0_result.json").write_text(json.dumps(result), encoding="utf-8")
        finished = True
    finally:
        cleanup(ctx, synchronize=finished)  # no barrier after a failure: torchrun stops the job
    if ctx.active:  # outputs written and the group torn down: end before finalization can abort gloo
        exit_after_distributed_run(0)


if __name__ == "__main__":
    main()
