"""Research pretraining of the toy policy (scene world): every option of
``arr_core.sim.toy_pretrain.run_pretrain``, including the ones the product command ``arr toy
pretrain`` leaves out (architecture, noise-level sampling, loss floor, schedule, condition dropout).

The shipped checkpoints were made with these options; their commands are in docs/toy.md and the
experiment notes (docs/experiments/). Example (the 64 px benchmark toy):

    python benchmarks/toy_pretrain.py --out toy64 --image-size 64 --patch-size 4 --cond-dropout 0.1 \\
        --sigma-sampling logit-normal --steps 20000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from arr_core.errors import InputError
    from arr_core.sim.toy_pretrain import SCHEDULES, SIGMA_SAMPLINGS, run_pretrain

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5000, help="AdamW steps")
    ap.add_argument("--out", type=Path, required=True, help="folder for the policy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--defect-rate", type=float, default=0.3, help="share of training images with a defect")
    ap.add_argument("--eval-per-tag", type=int, default=20, help="held-out prompts per tag (0 = skip)")
    ap.add_argument("--loss-floor", type=float, default=0.5, help="floor f of the loss weight 1/max(σ, f)²")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--init", type=Path, default=None, help="continue from this toy policy folder")
    ap.add_argument("--schedule", choices=SCHEDULES, default="constant")
    ap.add_argument("--cond-dropout", type=float, default=0.0, help="share of prompts replaced by the empty one")
    ap.add_argument("--sigma-sampling", choices=SIGMA_SAMPLINGS, default="uniform")
    ap.add_argument("--logit-mean", type=float, default=0.0)
    ap.add_argument("--logit-std", type=float, default=1.0)
    ap.add_argument("--width", type=int, default=None, help="transformer width of a fresh policy")
    ap.add_argument("--layers", type=int, default=None, help="transformer blocks of a fresh policy")
    ap.add_argument("--image-size", type=int, default=None, help="pixels per side of a fresh policy")
    ap.add_argument("--patch-size", type=int, default=None, help="pixels per side of a patch")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        summary = run_pretrain(**{k: v for k, v in vars(args).items()})
    except InputError as e:
        ap.error(str(e))
    print(json.dumps({k: v for k, v in summary.items() if isinstance(v, (int, float, str))}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
