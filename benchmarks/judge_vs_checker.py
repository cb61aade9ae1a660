"""Does the rubric judge reward what the ground-truth checker rewards? (groups of RPO rollouts, CPU.)

Samples groups of G training rollouts (Flow-GRPO SDE, shared initial noise per group, as in
``benchmarks/rpo_toy.py``) of one scene-world prompt from a toy policy, and scores every group with
the rubric judge (offline scene VLM, rubrics induced on ``--seed-pairs`` world pairs, swap order), with
the checklist judge on the same rubrics (``arr_core.judge.checklist``; ``--hard-theme`` gates credit)
and with the detector checker (share of clauses passed). All map to the paper's rank rewards. Printed per
reward:
- the mean reward of images that pass the detector's check and of those that fail;
- in groups holding both kinds, how far a passing image's reward lies above a failing one's;
- the mean within-group s.d. of the rewards. What the judge adds beyond the checker is variance
  that says nothing about passing.

    python benchmarks/judge_vs_checker.py --policy DIR --prompt "a photo of a circle and a square" --groups 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def separation(rewards: list[list[float]], passed: list[list[bool]]) -> dict:
    """Per-reward statistics of groups: ``pass_mean`` / ``fail_mean`` (mean reward of passing /
    failing images, None when there are none), ``gap`` (mean over groups with both kinds of the
    passing images' mean reward minus the failing images'; None without such groups), ``mixed_groups``,
    and ``within_sd`` (mean population s.d. of the rewards within a group)."""
    if len(rewards) != len(passed) or any(len(r) != len(p) for r, p in zip(rewards, passed, strict=True)):
        raise ValueError("rewards and passed must have the same groups and group sizes")
    if not rewards:
        raise ValueError("need at least one group")
    flat = [(r, p) for rs, ps in zip(rewards, passed, strict=True) for r, p in zip(rs, ps, strict=True)]
    good = [r for r, p in flat if p]
    bad = [r for r, p in flat if not p]
    gaps = [statistics.fmean(r for r, p in zip(rs, ps, strict=True) if p)
            - statistics.fmean(r for r, p in zip(rs, ps, strict=True) if not p)
            for rs, ps in zip(rewards, passed, strict=True) if any(ps) and not all(ps)]
    return {"pass_mean": statistics.fmean(good) if good else None,
            "fail_mean": statistics.fmean(bad) if bad else None,
            "gap": statistics.fmean(gaps) if gaps else None, "mixed_groups": len(gaps),
            "within_sd": statistics.fmean(statistics.pstdev(rs) for rs in rewards)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", default="-", help="toy policy folder, or '-' for the shipped checkpoint")
    ap.add_argument("--prompt", default="a photo of a circle and a square", help="a scene-world prompt")
    ap.add_argument("--groups", type=int, default=32)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--num-steps", type=int, default=8, help="SDE sampling steps")
    ap.add_argument("--a", type=float, default=0.7, help="Flow-GRPO noise level of the SDE sampler")
    ap.add_argument("--seed-pairs", type=int, default=48, help="preference pairs for rubric induction")
    ap.add_argument("--hard-theme", action="append", default=None, metavar="THEME",
                    help="hard theme of the checklist judge (repeatable; see arr_core/judge/checklist.py)")
    ap.add_argument("--hard-only", action="store_true",
                    help="checklist judge with --hard-theme: only the hard themes score")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.groups < 1 or args.group_size < 2 or args.num_steps < 1:
        ap.error("need --groups >= 1, --group-size >= 2 and --num-steps >= 1")
    from arr_core.sim.world.grammar import parse_prompt

    spec = parse_prompt(args.prompt)
    if spec is None:
        ap.error(f"--prompt: {args.prompt!r} is not a scene-world prompt")

    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from rpo_toy import build_rewarder

    from arr_core.judge.checklist import ChecklistRewarder
    from arr_core.rewards import CallableRewarder
    from arr_core.sim.rewards import checker_score
    from arr_core.sim.toy_eval import sample_sde, seeded_noise
    from arr_core.sim.toy_policy import ToyPolicy
    from arr_core.sim.world import check_spec, detect

    t0 = time.perf_counter()
    policy = ToyPolicy.load(None if args.policy == "-" else args.policy)
    G, prompt = args.group_size, args.prompt
    groups, passed = [], []
    with torch.no_grad():
        for g in range(args.groups):
            keys = [f"{prompt}|s{args.seed}|g{g}|{i}" for i in range(G)]
            noise = seeded_noise(policy, [f"{prompt}|s{args.seed}|g{g}"] * G)  # shared initial noise
            images = policy.decode(sample_sde(policy, [prompt] * G, noise, args.num_steps, keys, args.a))
            groups.append(images)
            passed.append([bool(check_spec(spec, detect(im))["passed"]) for im in images])
    t_sample = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as work:
        judge, desc, facts = build_rewarder("judge", Path(work), args.seed_pairs, args.seed)
        try:
            checklist = ChecklistRewarder(judge.client, judge.rubric_set, "t2i", hard_themes=args.hard_theme or [],
                                          hard_only=args.hard_only)
        except ValueError as e:  # a --hard-theme the induced set does not have, --hard-only without one
            ap.error(str(e))
        outcomes = {"judge": asyncio.run(judge.score([prompt] * args.groups, groups)),
                    "checklist": asyncio.run(checklist.score([prompt] * args.groups, groups)),
                    "checker": asyncio.run(CallableRewarder(checker_score).score([prompt] * args.groups, groups))}
    n_pass = sum(map(sum, passed))
    print(f"{args.policy}: {args.groups} groups x {G} rollouts of {prompt!r}, {n_pass} of {args.groups * G} pass "
          f"the detector's check ({t_sample:.0f} s sampling); judge: {desc}")
    result = {"args": vars(args),
              "passing": n_pass, "images": args.groups * G, "rubric_set_id": facts.get("rubric_set_id"),
              "passed": passed, "rewards": {}, "outcomes": {}}

    def show(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.3f}"

    for name, outs in outcomes.items():
        rewards = [list(o.rewards) for o in outs]
        stats = separation(rewards, passed)
        kinds = {k: sum(o.outcome == k for o in outs) for k in ("win", "tie", "abstain")}
        print(f"{name:>9}: mean reward passing {show(stats['pass_mean'])}, failing {show(stats['fail_mean'])}; "
              f"passing minus failing within {stats['mixed_groups']} mixed groups {show(stats['gap'])}; "
              f"within-group s.d. {stats['within_sd']:.3f}; outcomes {kinds}")
        result[name] = stats
        result["rewards"][name] = rewards
        result["outcomes"][name] = kinds
    print(f"total {time.perf_counter() - t0:.0f} s on {os.cpu_count()} CPU cores, torch threads {args.threads}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str))  # default: the Path arguments
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
