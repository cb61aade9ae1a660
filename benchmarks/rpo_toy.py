"""RPO on the scene world: does rubric/checker-rewarded RL raise the toy policy's GenEval-format accuracy?

Steps (all offline, CPU):
1. Load the toy policy (the shipped base checkpoint unless ``--policy DIR``).
2. Held-out set: ``heldout_specs(--heldout-per-tag)`` (tag-balanced, seed 12345; 34 per tag = 204
   prompts) × ``--seeds`` noise seeds, sampled with the deterministic ODE (``--eval-steps``) and checked
   by the scene detector + GenEval-format checker (``arr_core.sim.toy_eval.geneval_accuracy``).
3. Reward: ``--reward judge`` = the rubric-conditioned offline scene VLM judge
   (``arr_core.judge.reward.JudgeRewarder``, swap order) with rubrics induced by ``induce`` on
   ``--seed-pairs`` scene-world preference pairs; with ``--judge-mode checklist`` the same VLM answers
   yes/no/n.a. per rubric for each image (``arr_core.judge.checklist.ChecklistRewarder``; equal scores
   tie; ``--hard-theme`` names rubric themes an image must satisfy for any credit, ``--hard-only``
   lets only them score, so images that pass tie); ``--reward checker`` = the share of the prompt's
   clauses the detector confirms (no VLM, no rubrics).
4. RPO (``arr_core.rpo.trainer.train``) for ``--steps`` steps on world prompts drawn with a seed other
   than the held-out one; then the held-out accuracy again.
5. Control: the same run from the same base with ``ShuffledRewarder`` (rewards permuted within and
   among groups, so they carry no information), then the held-out accuracy.

Prints a table (per tag and overall, 95 % intervals over prompts), why the held-out images fail
(``toy_eval.failure_kind``: empty, missing shape, too few/many, colour, position), and each run's
change from the base with a paired 95 % interval (``paired_delta``: base and trained policy see the same noise per
prompt-image, so the interval is that of the change), and writes ``--out`` JSON (per-image ``passed``
lists included, under ``deltas`` the paired changes).
Held-out prompts are an independent sample of the same grammar: the small tags (single object: 3
prompts, two objects: 3, counting: 9, colours: 30) necessarily share prompt texts with training, so
"held-out" means independent prompts *and* noise seeds, not unseen texts. The offline VLM is a
simulator: these figures test the pipeline, not any real VLM.

Also reported: the share of the training rollouts that pass the detector's check, first vs last quarter
of each run (``RolloutAccuracy``), i.e. whether the reward moved the policy on its own samples, and
the share in which the detector finds no object (a rise flags the empty-image reward hack).

Run: ``python benchmarks/rpo_toy.py [--reward judge|checker] [--steps 60] [--out F.json]``; the
defaults are the run in the README (4 optimizer steps per RPO step: rollout batches of 2 prompts,
``--accumulate 7`` = one optimizer step per batch's 7 trained denoising steps; shared initial noise).
``--no-control`` and ``--control-only`` split the two runs over two processes (one per core).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def build_rewarder(kind: str, work: Path, seed_pairs: int, seed: int, mapping: str | None = None,
                   mode: str = "rank", hard_themes: list[str] | None = None,
                   hard_only: bool = False) -> tuple[object, str, dict]:
    """(rewarder, description, facts) for ``checker`` or ``judge`` (rubrics induced here); ``mapping``:
    the ranking judge's rank → reward mapping (None: paper for G = 2, linear for G > 2); ``mode``:
    ``rank`` (JudgeRewarder) or ``checklist`` (ChecklistRewarder, gated by ``hard_themes``; with
    ``hard_only`` the other rubrics do not order images that pass). The judge is built by the RPO
    recipe (``arr_core.recipes.rpo.build_rewarder``), as in ``arr train``. Raises ValueError when a
    hard theme is not in the induced set (the message lists its themes)."""
    if kind == "checker":
        from arr_core.rewards import CallableRewarder
        from arr_core.sim.rewards import checker_score

        return CallableRewarder(checker_score), "scene detector checks (share of clauses passed)", {}
    from arr_core.data.dataset import load_dataset
    from arr_core.recipes import rpo as recipe
    from arr_core.recipes.induce import induce_rubrics
    from arr_core.rpo.config import TrainConfig
    from arr_core.rubrics.config import InduceConfig
    from arr_core.sim.world.pairs import make_pairs
    from arr_core.store import Store
    from arr_core.vlm.config import VLMConfig, build_client

    t0 = time.perf_counter()
    store = Store(work / "home")
    client = build_client(VLMConfig(), store)
    seed_ds = load_dataset(make_pairs("t2i", seed_pairs, seed, work / "seed_pairs"))
    rs = induce_rubrics(seed_ds, InduceConfig(), store, client_gen=client, client_ver=client)
    facts = {"rubric_set_id": rs.id, "seed_pairs": seed_pairs, "induce_s": round(time.perf_counter() - t0, 1),
             "rubric_block": rs.prompt_block()}
    reward = ({"mode": "checklist", "hard_themes": hard_themes or []} if mode == "checklist"
              else {"mode": "rank", "mapping": mapping, "order": "swap"})
    cfg = TrainConfig.model_validate({"policy": {"kind": "toy"}, "prompts": {"source": "world"}, "seed": seed,
                                      "reward": reward, "experimental": {"hard_only": hard_only}})
    try:
        rewarder, what = recipe.build_rewarder(cfg, rs, client, store=store)
    except ValueError as e:
        raise ValueError(getattr(e, "reason", str(e))) from None
    if mode == "checklist":  # the recipe's description, hard themes included
        return rewarder, "offline scene VLM " + what.replace("rubrics", "induced rubrics", 1), facts
    how = f", {mapping} rank rewards" if mapping else ""
    return rewarder, f"offline scene VLM judge, induced rubrics {rs.id}, swap order{how}", facts


class RolloutAccuracy:
    """Wraps a rewarder without changing its outcomes and records, per scored batch, the share of the
    rollout images that pass the detector's GenEval-format check of their prompt: the ground truth the
    reward is meant to raise, measured on the training rollouts themselves. It also records the share
    of images in which the detector finds no object at all: a rise means the policy is learning to
    draw nothing, the reward hack docs/experiments/2026-11-22-empty-image-reward-hack.md describes."""

    def __init__(self, inner: object) -> None:
        self.inner, self.batches, self.empty = inner, [], []

    async def score(self, prompts, groups, sources=None):
        from arr_core.sim.world import check_spec, detect
        from arr_core.sim.world.grammar import parse_prompt

        outs = await self.inner.score(prompts, groups, sources)
        found = [(parse_prompt(p), detect(im)) for p, g in zip(prompts, groups, strict=True) for im in g]
        self.batches.append(sum(check_spec(spec, dets)["passed"] for spec, dets in found) / len(found))
        self.empty.append(sum(not dets for _, dets in found) / len(found))
        return outs


def train_config(args: argparse.Namespace) -> object:
    from arr_core.rpo.config import TrainConfig

    return TrainConfig.model_validate({
        "policy": {"kind": "toy", "folder": str(args.policy) if args.policy else None, "device": "cpu",
                   "guidance_scale": args.guidance},
        "prompts": {"source": "world", "count": 2000, "seed": args.train_seed},
        "lora": {"rank": args.rank, "alpha": 2.0 * args.rank},
        "seed": args.seed, "steps": args.steps, "num_steps": args.num_steps, "group_size": args.group_size,
        "prompts_per_step": args.prompts_per_step,
        "rollout_batch_size": args.rollout_batch_size,
        "accumulate": args.accumulate if args.accumulate == "all" else int(args.accumulate),
        "lr": args.lr, "beta": args.beta, "clip_range": 0.2, "sample_grid_every": 0,
        "checkpoint_every": 0, "a": args.a, "shared_initial_noise": args.shared_noise,
        # --trained-fraction f trains the first round(f·(num_steps−1)) steps (at least 1): a window from 0.
        **({"trained_window": [0, max(1, round(args.trained_fraction * (args.num_steps - 1)))]}
           if args.trained_fraction else {}),
        **({"trained_window": args.trained_window} if args.trained_window else {}),
        "sde_steps": args.sde_steps, "experimental": {"noise_block": args.noise_block},
    })


def world_prompts(n: int, seed: int) -> list[str]:
    import numpy as np

    from arr_core.sim.world import sample_spec

    rng = np.random.default_rng(seed)
    return [sample_spec(rng).prompt for _ in range(n)]


def evaluate(policy, specs, args) -> tuple[dict, float]:
    """Held-out accuracy with the ODE sampler; with ``--sde-eval`` also with the training SDE sampler
    (under ``"sde"``)."""
    from arr_core.sim.toy_eval import geneval_accuracy

    t0 = time.perf_counter()
    res = geneval_accuracy(policy, specs, seeds=tuple(args.seeds), steps=args.eval_steps)
    if args.sde_eval:
        res["sde"] = geneval_accuracy(policy, specs, seeds=tuple(args.seeds), steps=args.num_steps,
                                      sampler="sde", a=args.a)
    return res, time.perf_counter() - t0  # "passed" stays: paired_delta needs it, and the JSON keeps it


def run_rpo(rewarder, prompts, cfg, out_dir: Path, args) -> tuple[object, dict]:
    from arr_core.recipes import rpo as recipe
    from arr_core.sim.toy_policy import ToyPolicy

    policy = ToyPolicy.load(args.policy, guidance_scale=args.guidance)
    tracked = RolloutAccuracy(rewarder)
    inner = getattr(rewarder, "inner", rewarder)  # the checklist judge behind a ShuffledRewarder
    stats_before = dict(getattr(inner, "stats", {}))
    t0 = time.perf_counter()
    res = recipe.run(cfg, out_dir, rewarder=tracked, policy=policy, prompts=prompts,
                     progress=print if args.verbose else None)
    metrics = [json.loads(ln) for ln in (out_dir / "metrics.jsonl").read_text().splitlines() if ln]
    reward_first, reward_last = quarter_means([m["reward_mean"] for m in metrics])
    pass_first, pass_last = quarter_means(tracked.batches)
    empty_first, empty_last = quarter_means(tracked.empty)
    facts = {"train_s": round(time.perf_counter() - t0, 1),
             "reward_first_quarter": reward_first, "reward_last_quarter": reward_last,
             "kl_last": metrics[-1]["kl"],
             "rollout_pass_first_quarter": pass_first, "rollout_pass_last_quarter": pass_last,
             "rollout_empty_first_quarter": empty_first, "rollout_empty_last_quarter": empty_last,
             "tie_rate_mean": sum(m["tie_rate"] for m in metrics) / len(metrics),
             "lora_dir": str(res.lora_dir)}
    if stats_before:  # this run's share of the checklist judge's counters (RPO and control share one)
        facts["checklist_stats"] = {k: v - stats_before[k] for k, v in inner.stats.items()}
    return policy, facts


def run_summary(name: str, res: dict, facts: dict) -> str:
    """One line per run: held-out accuracy, training time, and the training rollouts' pass and
    empty-image shares, first vs last quarter."""
    return (f"{name}: {100 * res['overall']:.1f} % ({facts['train_s']:.0f} s training; training rollouts passing: "
            f"first quarter {100 * facts['rollout_pass_first_quarter']:.1f} %, last quarter "
            f"{100 * facts['rollout_pass_last_quarter']:.1f} %; with no object: "
            f"{100 * facts['rollout_empty_first_quarter']:.1f} % → {100 * facts['rollout_empty_last_quarter']:.1f} %)")


def quarter_means(values: list[float]) -> tuple[float, float]:
    """Means of the first and of the last quarter of ``values`` (at least one value each)."""
    k = max(1, len(values) // 4)
    return sum(values[:k]) / k, sum(values[-k:]) / k


def print_table(title: str, cols: list[str], runs: list[dict], changes: list[dict]) -> None:
    """Per-tag and overall accuracy of ``runs`` (base first) with 95 % intervals, and each later run's
    change from the base with its paired interval (``changes``: one ``paired_delta`` per later run)."""
    print(f"\n{title}")
    print(f"{'tag':<14} " + " ".join(f"{c:>22}" for c in cols))
    for tag in TAGS:
        print(f"{tag:<14} " + " ".join(f"{fmt(r['per_tag'][tag], r['per_tag_ci95'][tag]):>22}" for r in runs))
    print(f"{'overall':<14} " + " ".join(f"{fmt(r['overall'], r['ci95']):>22}" for r in runs))
    for c, d in zip(cols[1:], changes, strict=True):
        print(f"delta {c}: {100 * d['delta']:+.1f} points, paired 95 % interval "
              f"[{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]")


def print_failures(cols: list[str], runs: list[dict]) -> None:
    """Why held-out images fail, per run: the share of all images per ``failure_kind`` (summed over
    tags), so a change in accuracy can be traced to shapes, counts, colours, positions or empty images."""
    from arr_core.sim.toy_eval import FAILURE_KINDS

    print("\nfailed images by reason (share of all held-out images; 'missing' = no object of the asked shape)")
    print(f"{'reason':<14} " + " ".join(f"{c:>22}" for c in cols))
    for kind in FAILURE_KINDS:
        print(f"{kind:<14} " + " ".join(
            f"{100 * sum(f.get(kind, 0) for f in r['failures'].values()) / r['n']:>21.1f}%" for r in runs))


def deltas(base: dict, after: dict | None, control: dict | None, sde: bool) -> dict:
    """``{"rpo"|"control": {"ode": paired_delta, "sde": paired_delta}}`` for the runs that were made."""
    from arr_core.sim.toy_eval import paired_delta

    out = {}
    for name, res in (("rpo", after), ("control", control)):
        if res is not None:
            out[name] = {"ode": paired_delta(base, res), **({"sde": paired_delta(base["sde"], res["sde"])} if sde else {})}
    return out


def fmt(acc: float, ci: list[float]) -> str:
    return f"{100 * acc:5.1f} [{100 * ci[0]:4.1f}, {100 * ci[1]:5.1f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reward", choices=["judge", "checker"], default="judge")
    ap.add_argument("--judge-mapping", choices=["paper", "linear"], default=None,
                    help="the judge's rank -> reward mapping: paper = rank 1 gets 1.0, every other image -0.1 "
                         "(a swap disagreement is a tie); linear = 1.0 ... -0.1 by rank (default: paper for "
                         "G = 2, linear above)")
    ap.add_argument("--judge-mode", choices=["rank", "checklist"], default="rank",
                    help="rank = the paper's judge ranks each group; checklist = yes/no/n.a. per rubric for "
                         "each image, equal scores tie (arr_core/judge/checklist.py)")
    ap.add_argument("--hard-theme", action="append", default=None, metavar="THEME",
                    help="checklist mode: a rubric theme an image must satisfy for any credit (repeatable; "
                         "names a theme of the induced set, e.g. 'Faithfulness to the caption')")
    ap.add_argument("--hard-only", action="store_true",
                    help="checklist mode with --hard-theme: only the hard themes score; images that pass "
                         "them tie instead of being ordered by the other rubrics")
    ap.add_argument("--policy", type=Path, default=None, help="toy policy folder (default: shipped)")
    ap.add_argument("--steps", type=int, default=60, help="RPO steps per run")
    ap.add_argument("--num-steps", type=int, default=8, help="SDE sampling steps in training")
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--prompts-per-step", type=int, default=8)
    ap.add_argument("--rollout-batch-size", type=int, default=2,
                    help="prompts per rollout batch = training micro-batch")
    ap.add_argument("--accumulate", default="7",
                    help="backward units (micro-batch x trained step) per optimizer step, or 'all'")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--beta", type=float, default=0.01)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--shared-noise", action=argparse.BooleanOptionalAction, default=True,
                    help="the G images of a prompt start from the same noise (DanceGRPO)")
    ap.add_argument("--a", type=float, default=0.7, help="Flow-GRPO noise level of the SDE sampler")
    ap.add_argument("--trained-fraction", type=float, default=None,
                    help="train only the first round(f*(num_steps-1)) denoising steps (default: all but the last)")
    ap.add_argument("--trained-window", type=int, nargs=2, default=None, metavar=("START", "END"),
                    help="train only the denoising steps START..END-1 (0 = the step leaving pure noise)")
    ap.add_argument("--sde-steps", choices=["all", "trained"], default="all",
                    help="where rollouts inject SDE noise: every step (Flow-GRPO) or only the trained steps, "
                         "Euler elsewhere (MixGRPO)")
    ap.add_argument("--noise-block", type=int, default=1,
                    help="step noise on N x N pixel tiles (coarse exploration; arr_core/rpo/sde.py); 1 = per pixel")
    ap.add_argument("--guidance", type=float, default=None,
                    help="classifier-free guidance scale of the policy in evaluation and training (default: the "
                         "checkpoint's own; needs a checkpoint pretrained with --cond-dropout)")
    ap.add_argument("--train-prompts", nargs="+", default=None, metavar="PROMPT",
                    help="train on these scene-world prompts only (cycled) instead of 2000 sampled ones: a "
                         "check of whether RPO moves the policy on a prompt at all (see the rollout pass rates)")
    ap.add_argument("--heldout-per-tag", type=int, default=34)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--eval-steps", type=int, default=8)
    ap.add_argument("--sde-eval", action=argparse.BooleanOptionalAction, default=True,
                    help="also evaluate with the training sampler (Flow-GRPO SDE, --a, --num-steps steps)")
    ap.add_argument("--seed-pairs", type=int, default=48, help="preference pairs for rubric induction")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-seed", type=int, default=1, help="seed of the training prompt sample")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy CPU)")
    ap.add_argument("--no-control", action="store_true", help="skip the shuffled-reward control run")
    ap.add_argument("--control-only", action="store_true",
                    help="run only the control (e.g. in a second process beside a --no-control run)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--verbose", action="store_true", help="print every RPO step")
    args = ap.parse_args()
    if args.no_control and args.control_only:
        ap.error("--no-control and --control-only exclude each other")
    if args.judge_mapping and args.reward != "judge":
        ap.error("--judge-mapping applies to --reward judge only")
    if args.judge_mode == "checklist" and (args.reward != "judge" or args.judge_mapping):
        ap.error("--judge-mode checklist needs --reward judge and takes no --judge-mapping")
    if args.hard_theme and args.judge_mode != "checklist":
        ap.error("--hard-theme applies to --judge-mode checklist only")
    if args.hard_only and not args.hard_theme:
        ap.error("--hard-only scores images by the --hard-theme themes alone; give --hard-theme")
    if args.trained_fraction and args.trained_window:
        ap.error("--trained-fraction and --trained-window exclude each other")
    if args.noise_block < 1:
        ap.error(f"--noise-block must be >= 1, got {args.noise_block}")
    if (args.sde_steps == "trained" or args.noise_block > 1) and args.sde_eval:
        print("note: --sde-steps trained / --noise-block: the SDE evaluation (per-pixel noise on every step) "
              "is not the training sampler; skipping it (ODE only)", flush=True)
        args.sde_eval = False
    if args.train_prompts:
        from arr_core.sim.world.grammar import parse_prompt

        bad = [p for p in args.train_prompts if parse_prompt(p) is None]
        if bad:
            ap.error(f"--train-prompts: not scene-world prompts (the grammar cannot parse them): {bad}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from arr_core.sim.rewards import ShuffledRewarder
    from arr_core.sim.toy_eval import heldout_specs
    from arr_core.sim.toy_policy import ToyPolicy

    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="rpo_toy_"))
    specs = heldout_specs(args.heldout_per_tag)
    prompts = list(args.train_prompts) if args.train_prompts else world_prompts(2000, args.train_seed)
    base_policy = ToyPolicy.load(args.policy, guidance_scale=args.guidance)
    if base_policy.config["image_size"] % args.noise_block:  # before the rubric induction
        ap.error(f"--noise-block {args.noise_block} must divide the policy's image size "
                 f"{base_policy.config['image_size']}")
    try:
        rewarder, desc, reward_facts = build_rewarder(args.reward, work, args.seed_pairs, args.seed,
                                                      args.judge_mapping, args.judge_mode, args.hard_theme,
                                                      args.hard_only)
    except ValueError as e:  # a --hard-theme the induced rubric set does not have
        ap.error(str(e))
    cfg = train_config(args)

    guidance = base_policy.guidance_scale
    base, t_eval = evaluate(base_policy, specs, args)
    print(f"base: {100 * base['overall']:.1f} % over {base['n']} images ({t_eval:.0f} s)", flush=True)
    after, rpo_facts = None, None
    if not args.control_only:
        policy, rpo_facts = run_rpo(rewarder, prompts, cfg, work / "rpo", args)
        after, _ = evaluate(policy, specs, args)
        print(run_summary(f"RPO ({args.reward})", after, rpo_facts), flush=True)
    control, control_facts = None, None
    if not args.no_control:
        policy, control_facts = run_rpo(ShuffledRewarder(rewarder, args.seed), prompts, cfg, work / "control", args)
        control, _ = evaluate(policy, specs, args)
        print(run_summary("control (shuffled)", control, control_facts), flush=True)
    total = time.perf_counter() - t_all

    print()
    print(f"RPO on the scene world, toy policy; reward: {desc}")
    if args.train_prompts:
        print(f"trained on {len(args.train_prompts)} prompt(s) only: {args.train_prompts}")
    print(f"held-out: {base['n_prompts']} prompts (repeats draw fresh noise) x {len(args.seeds)} seeds = {base['n']} images, "
          f"ODE {args.eval_steps} steps; RPO {args.steps} steps x {args.prompts_per_step} prompts x "
          f"G={args.group_size}, lr {args.lr}, LoRA rank {args.rank}, beta {args.beta}, guidance {guidance:g}")
    cols = ["base"] + ([f"RPO ({args.reward})"] if after else []) + (["control (shuffled)"] if control else [])
    runs = [r for r in (base, after, control) if r]
    changes = deltas(base, after, control, args.sde_eval)
    print_table("ODE sampler (deterministic)", cols, runs, [c["ode"] for c in changes.values()])
    print_failures(cols, runs)
    if args.sde_eval:
        print_table(f"training sampler (SDE, a={args.a}, {args.num_steps} steps)", cols, [r["sde"] for r in runs],
                    [c["sde"] for c in changes.values()])
    load = os.getloadavg()
    print(f"total wall time {total:.0f} s on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
          f"load average {load[0]:.1f}, torch threads {args.threads}")
    if args.out:
        args.out.write_text(json.dumps({
            "reward": args.reward, "reward_desc": desc, "reward_facts": reward_facts, "args": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "base": base, "rpo": after, "control": control, "deltas": changes,
            "rpo_train": rpo_facts,
            "control_train": control_facts, "total_s": round(total, 1), "cpu_count": os.cpu_count(),
            "loadavg": load}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
