"""Rubric-reward DPO on the scene world: do judge-labelled pairs move the toy policy's held-out
GenEval-format accuracy, against a shuffled-label control?

Steps (all offline, CPU; the offline scene VLM is a simulator, so these figures test the pipeline, not
any real VLM):
1. Load the toy policy (``--policy``, default the 64 px toy of ``benchmarks/assets/``).
2. Held-out set and evaluation exactly as ``benchmarks/rpo_toy.py``: ``heldout_specs(--heldout-per-tag)``
   × ``--seeds``, deterministic ODE, scene detector + GenEval-format check (``geneval_accuracy``).
3. Judge: the rubric-conditioned offline scene VLM judge with rubrics induced on ``--seed-pairs``
   scene-world preference pairs (``rpo_toy.build_rewarder``: rank mode, both orders; or
   ``--judge-mode checklist`` with ``--hard-theme``/``--hard-only``).
4. Pairs: the base policy samples two images for each of ``--pairs`` world prompts (training prompt
   seed, not the held-out one; ODE, ``--sample-steps``); the judge labels them in both orders
   (``arr_core.recipes.rpo.label_pairs``); ties and disagreeing orders are dropped and counted. The
   label accuracy against the detector's ground truth (share of kept pairs whose winner passes more
   of its prompt's clauses than the loser, among pairs where the two differ) is reported.
5. DPO (``arr_core.recipes.rpo.run`` with ``algorithm: dpo`` and these pairs) for ``--steps`` steps;
   control: the same pairs, each pair's label flipped with probability 1/2 (seeded), the same seed
   (LoRA init, noise levels, noise, pair order). Then the held-out accuracy of both.

Prints per-tag and overall accuracy with 95 % intervals, each run's change from the base with the RPO
benchmark's paired interval (``paired_delta``) and a paired bootstrap interval over prompts
(``arr_core.stats.bootstrap_ci`` of per-prompt differences), and DPO − control the same way; writes
``--out`` JSON.

Run: ``python benchmarks/dpo_toy.py [--pairs 384] [--steps 60] [--out F.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]


def per_prompt(res: dict) -> list[float]:
    return [sum(p) / len(p) for p in res["passed"]]


def paired_bootstrap(before: dict, after: dict, seed: int = 0) -> dict:
    """Mean per-prompt change after − before with a percentile bootstrap 95 % interval over prompts."""
    from arr_core.stats import bootstrap_ci

    diffs = [a - b for a, b in zip(per_prompt(after), per_prompt(before), strict=True)]
    point, lo, hi = bootstrap_ci(diffs, seed=seed)
    return {"delta": point, "ci95": [lo, hi], "n_prompts": len(diffs)}


def label_accuracy(pairs: list) -> dict:
    """Kept pairs vs the detector's clause share: agree / disagree / equal (ground truth ties)."""
    from arr_core.sim.rewards import checker_score

    agree = disagree = equal = 0
    for p in pairs:
        w, lo = checker_score(p.prompt, p.winner), checker_score(p.prompt, p.loser)
        agree += w > lo
        disagree += w < lo
        equal += w == lo
    decided = agree + disagree
    return {"agree": agree, "disagree": disagree, "equal": equal,
            "accuracy_where_truth_differs": agree / decided if decided else None}


def flipped(pairs: list, seed: int) -> list:
    """The shuffled-label control: the same pairs, each label flipped with probability 1/2."""
    from arr_core.rpo.dpo import DPOPair

    rng = random.Random(seed)
    out = []
    for p in pairs:
        if rng.random() < 0.5:
            p = DPOPair(p.prompt, p.loser, p.winner, p.source, -p.margin if p.margin is not None else None, p.weight)
        out.append(p)
    return out


def dpo_config(args: argparse.Namespace) -> object:
    from arr_core.rpo.config import TrainConfig

    return TrainConfig.model_validate({
        "algorithm": "dpo",
        "policy": {"kind": "toy", "folder": str(args.policy) if args.policy else None, "device": "cpu"},
        "prompts": {"source": "world", "count": args.pairs, "seed": args.train_seed},
        "dpo": {"pairs": {"source": "generated", "count": args.pairs, "sample_steps": args.sample_steps,
                          "seed": args.seed},
                "beta": args.beta, "pairs_per_step": args.pairs_per_step, "micro_batch": args.micro_batch,
                "sigma_sampling": args.sigma_sampling},
        "lora": {"rank": args.rank, "alpha": 2.0 * args.rank},
        "seed": args.seed, "steps": args.steps, "lr": args.lr, "checkpoint_every": 0,
    })


def train(cfg: object, pairs: list, out_dir: Path, args: argparse.Namespace) -> tuple[object, dict]:
    from arr_core.recipes import rpo as recipe
    from arr_core.sim.toy_policy import ToyPolicy

    policy = ToyPolicy.load(args.policy)
    t0 = time.perf_counter()
    recipe.run(cfg, out_dir, policy=policy, pairs=pairs, progress=print if args.verbose else None)
    metrics = [json.loads(ln) for ln in (out_dir / "metrics.jsonl").read_text().splitlines() if ln]
    k = max(1, len(metrics) // 4)
    mean = lambda key, ms: sum(m[key] for m in ms) / len(ms)  # noqa: E731
    facts = {"train_s": round(time.perf_counter() - t0, 1),
             "loss_first_quarter": mean("loss", metrics[:k]), "loss_last_quarter": mean("loss", metrics[-k:]),
             "implicit_acc_first_quarter": mean("implicit_acc", metrics[:k]),
             "implicit_acc_last_quarter": mean("implicit_acc", metrics[-k:])}
    return policy, facts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", type=Path, default=ROOT / "benchmarks" / "assets" / "toy_policy_64px",
                    help="toy policy folder (default: the 64 px toy)")
    ap.add_argument("--judge-mode", choices=["rank", "checklist"], default="rank")
    ap.add_argument("--hard-theme", action="append", default=None, metavar="THEME")
    ap.add_argument("--hard-only", action="store_true")
    ap.add_argument("--pairs", type=int, default=384, help="prompts sampled for a candidate pair")
    ap.add_argument("--sample-steps", type=int, default=8, help="ODE steps of the base policy's candidates")
    ap.add_argument("--steps", type=int, default=60, help="DPO optimizer steps per run")
    ap.add_argument("--pairs-per-step", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--beta", type=float, default=2500.0)
    ap.add_argument("--sigma-sampling", choices=["uniform", "logit_normal"], default="uniform")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--heldout-per-tag", type=int, default=34)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--eval-steps", type=int, default=8)
    ap.add_argument("--seed-pairs", type=int, default=48, help="preference pairs for rubric induction")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-seed", type=int, default=1, help="seed of the training prompt sample")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from rpo_toy import TAGS, build_rewarder, deltas, evaluate, fmt, world_prompts

    from arr_core.recipes.rpo import label_pairs
    from arr_core.rpo.dpo import sample_candidates
    from arr_core.sim.toy_eval import heldout_specs
    from arr_core.sim.toy_policy import ToyPolicy

    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="dpo_toy_"))
    eval_args = argparse.Namespace(seeds=args.seeds, eval_steps=args.eval_steps, sde_eval=False)
    specs = heldout_specs(args.heldout_per_tag)
    rewarder, desc, reward_facts = build_rewarder("judge", work, args.seed_pairs, args.seed, None, args.judge_mode,
                                                  args.hard_theme, args.hard_only)
    base_policy = ToyPolicy.load(args.policy)
    base, t_eval = evaluate(base_policy, specs, eval_args)
    print(f"base: {100 * base['overall']:.1f} % over {base['n']} images ({t_eval:.0f} s)", flush=True)

    t0 = time.perf_counter()
    prompts = world_prompts(args.pairs, args.train_seed)
    groups = sample_candidates(base_policy, prompts, None, steps=args.sample_steps, seed=args.seed)
    t_sample = time.perf_counter() - t0
    pairs, counts = label_pairs(rewarder, prompts, groups, None)
    t_label = time.perf_counter() - t0 - t_sample
    acc = label_accuracy(pairs)
    print(f"pairs: {counts} (sampling {t_sample:.0f} s, judging {t_label:.0f} s); judge vs detector on kept pairs: "
          f"{acc}", flush=True)
    control_pairs = flipped(pairs, args.seed)
    flips = sum(c.winner is not p.winner for c, p in zip(control_pairs, pairs, strict=True))

    cfg = dpo_config(args)
    dpo_policy, dpo_facts = train(cfg, pairs, work / "dpo", args)
    after, _ = evaluate(dpo_policy, specs, eval_args)
    print(f"DPO: {100 * after['overall']:.1f} % ({dpo_facts})", flush=True)
    ctl_policy, ctl_facts = train(cfg, control_pairs, work / "control", args)
    control, _ = evaluate(ctl_policy, specs, eval_args)
    print(f"control: {100 * control['overall']:.1f} % ({ctl_facts})", flush=True)
    total = time.perf_counter() - t_all

    changes = deltas(base, after, control, False)
    boot = {"dpo": paired_bootstrap(base, after, args.seed), "control": paired_bootstrap(base, control, args.seed),
            "dpo_minus_control": paired_bootstrap(control, after, args.seed)}
    print(f"\nDPO on judge-labelled pairs, toy policy {args.policy}; judge: {desc}")
    print(f"{counts['kept']} pairs kept of {counts['candidates']} ({counts['tie']} ties, {counts['abstain']} "
          f"abstentions); control flips {flips} labels; {args.steps} steps x {args.pairs_per_step} pairs, beta "
          f"{args.beta:g}, lr {args.lr:g}, LoRA rank {args.rank}; held-out {base['n']} images, ODE {args.eval_steps} steps")
    print(f"{'tag':<14} {'base':>22} {'DPO':>22} {'control':>22}")
    for tag in TAGS:
        print(f"{tag:<14} " + " ".join(f"{fmt(r['per_tag'][tag], r['per_tag_ci95'][tag]):>22}"
                                       for r in (base, after, control)))
    print(f"{'overall':<14} " + " ".join(f"{fmt(r['overall'], r['ci95']):>22}" for r in (base, after, control)))
    for name, key in (("DPO", "rpo"), ("control", "control")):
        d, b = changes[key]["ode"], boot[key if key == "control" else "dpo"]
        print(f"delta {name}: {100 * d['delta']:+.1f} points, paired 95 % interval [{100 * d['ci95'][0]:+.1f}, "
              f"{100 * d['ci95'][1]:+.1f}], paired bootstrap [{100 * b['ci95'][0]:+.1f}, {100 * b['ci95'][1]:+.1f}]")
    dc = boot["dpo_minus_control"]
    print(f"DPO - control: {100 * dc['delta']:+.1f} points, paired bootstrap 95 % interval "
          f"[{100 * dc['ci95'][0]:+.1f}, {100 * dc['ci95'][1]:+.1f}] over {dc['n_prompts']} prompts")
    load = os.getloadavg()
    print(f"total wall time {total:.0f} s on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
          f"load average {load[0]:.1f}, torch threads {args.threads}")
    if args.out:
        args.out.write_text(json.dumps({
            "judge_desc": desc, "reward_facts": reward_facts,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "pairs": counts, "label_accuracy": acc, "control_flips": flips,
            "time_sample_s": round(t_sample, 1), "time_label_s": round(t_label, 1),
            "base": base, "dpo": after, "control": control, "deltas": changes, "bootstrap": boot,
            "dpo_train": dpo_facts, "control_train": ctl_facts, "total_s": round(total, 1),
            "cpu_count": os.cpu_count(), "loadavg": load}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
