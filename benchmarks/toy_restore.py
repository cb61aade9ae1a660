"""Where does the toy policy lose an object's shape? (SDEdit-style restoration, CPU.)

For each toy policy given, correct scene-world renders are noised to each level σ_k of the 8-step
sampling schedule and finished with the Euler ODE from σ_k to 0
(``arr_core.sim.toy_eval.restoration_accuracy``); the printed figure is the share of images that still
pass the detector's GenEval-format check. k = 0 is ordinary sampling from noise. A policy whose
denoiser keeps what is visible at σ_k passes about as often as the clean renders (the last row).
The shipped checkpoint keeps shapes only from σ ≈ 0.25 (docs/experiments/2026-11-22-toy-session6.md).

    python benchmarks/toy_restore.py                        # the shipped checkpoint
    python benchmarks/toy_restore.py --policy DIR --policy - --out restore.json   # '-' = shipped

Deterministic for a given policy (renders, noise and sampler are seeded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

TAGS = ("single_object", "two_object", "colors")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", action="append", default=None,
                    help="toy policy folder, or '-' for the shipped checkpoint (repeatable; default: shipped)")
    ap.add_argument("--per-tag", type=int, default=40, help="renders per tag")
    ap.add_argument("--tags", nargs="+", default=list(TAGS),
                    help="scene-world tags (default: the three whose failures are mostly shapes)")
    ap.add_argument("--steps", type=int, default=8, help="sampling schedule (the RPO benchmark's 8)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.per_tag < 1 or args.steps < 1:
        ap.error("--per-tag and --steps must be >= 1")

    import numpy as np
    import torch

    from arr_core.sim.toy_eval import restoration_accuracy
    from arr_core.sim.toy_policy import ToyPolicy
    from arr_core.sim.world import TAGS as WORLD_TAGS
    from arr_core.sim.world import sample_spec

    bad = [t for t in args.tags if t not in WORLD_TAGS]
    if bad:
        ap.error(f"--tags: unknown {bad}; known: {list(WORLD_TAGS)}")
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    specs = [sample_spec(rng, tag) for tag in args.tags for _ in range(args.per_tag)]
    results = {}
    for name in args.policy or ["-"]:
        t0 = time.perf_counter()
        policy = ToyPolicy.load(None if name == "-" else name)
        rows = restoration_accuracy(policy, specs, steps=args.steps, seed=args.seed)
        label = "shipped" if name == "-" else name
        results[label] = rows
        print(f"\n{label}: {len(specs)} renders ({args.per_tag} per tag), {args.steps}-step schedule, "
              f"{time.perf_counter() - t0:.0f} s")
        print(f"{'start σ':>8} {'passing':>8}  " + " ".join(f"{t:>14}" for t in args.tags) + "  failures")
        for r in rows:
            print(f"{r['sigma']:8.3f} {100 * r['overall']:7.1f}%  "
                  + " ".join(f"{100 * r['per_tag'][t]:13.1f}%" for t in args.tags)
                  + "  " + ", ".join(f"{k} {v}" for k, v in r["failures"].items()))
    load = os.getloadavg()
    print(f"\n{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), load average "
          f"{load[0]:.1f}, torch threads {args.threads}")
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args), "results": results, "cpu_count": os.cpu_count()},
                                       indent=1, default=str))  # default: the Path arguments
    return 0


if __name__ == "__main__":
    sys.exit(main())
