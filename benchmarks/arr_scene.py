"""ARR on the scene world: induce rubrics on seed pairs, then judge held-out pairs with and without them.

Steps (all offline, the scene VLM as generator, verifier and judge):
1. ``make_pairs("t2i", 64, seed)`` seed pairs and ``make_pairs("t2i", 400, seed + 1)`` held-out pairs;
2. ``induce`` with the default InduceConfig (5 criteria per pair, ≤ 5 epochs, blind verification in
   both orders, ≤ 20 criteria, ≤ 5 themes);
3. judge the held-out pairs under: no rubrics (single order), the induced rubrics (single order),
   the induced rubrics in swap mode, and no rubrics in swap mode. Each condition is judged with the
   images as given and reversed; accuracy counts a tie or an abstention as wrong.

Printed per condition: accuracy with a bootstrap 95 % interval, accuracy as given / reversed and
their gap, the position gap (accuracy when the preferred image is shown first minus second), tie and
abstain rates, VLM requests and backend calls (the cache is shared, so later conditions reuse
answers), and wall time. Everything runs in a fresh state folder unless ``--home`` is given.

Run: ``python benchmarks/arr_scene.py [--seed-pairs 64] [--test-pairs 400] [--seed 0] [--out F.json]``.
These are simulator figures: they test the pipeline, not any real VLM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arr_core.data.dataset import load_dataset  # noqa: E402
from arr_core.judge.judge import judge_many  # noqa: E402
from arr_core.judge.metrics import accuracy_summary, is_correct, reversed_record  # noqa: E402
from arr_core.recipes.induce import induce_rubrics  # noqa: E402
from arr_core.rubrics.config import InduceConfig  # noqa: E402
from arr_core.sim.world.pairs import make_pairs  # noqa: E402
from arr_core.stats import bootstrap_ci  # noqa: E402
from arr_core.store import Store  # noqa: E402
from arr_core.vlm.config import VLMConfig, build_client  # noqa: E402

CONDITIONS = [("no rubrics", False, "single"), ("induced rubrics", True, "single"),
              ("induced rubrics, swap", True, "swap"), ("no rubrics, swap", False, "swap")]


def judge_condition(client, records, block, rid, order, seed) -> dict:
    """Accuracy of one condition with the images as given and reversed."""
    rev_records = [reversed_record(r) for r in records]
    before = client.stats()
    t0 = time.perf_counter()

    async def run():
        fwd = await judge_many(client, records, rubric_block=block, rubric_set_id=rid, order=order, seed=seed)
        rev = await judge_many(client, rev_records, rubric_block=block, rubric_set_id=rid, order=order,
                               seed=seed)
        return fwd, rev

    fwd, rev = asyncio.run(run())
    wall = time.perf_counter() - t0
    after = client.stats()
    acc = accuracy_summary(fwd, records, seed=seed)
    acc_rev = accuracy_summary(rev, rev_records, seed=seed)
    # position gap: each pair is seen once with its preferred image first and once second
    first, second = [], []
    for recs, js in ((records, fwd), (rev_records, rev)):
        for r, j in zip(recs, js, strict=True):
            (first if r.preferred_index() == 0 else second).append(float(is_correct(j, r)))
    pf, ps = bootstrap_ci(first, seed=seed)[0], bootstrap_ci(second, seed=seed)[0]
    return {
        "accuracy": acc["accuracy"], "accuracy_lo": acc["accuracy_lo"], "accuracy_hi": acc["accuracy_hi"],
        "reversed_accuracy": acc_rev["accuracy"], "forward_minus_reversed": acc["accuracy"] - acc_rev["accuracy"],
        "position_gap": pf - ps, "tie_rate": acc["tie_rate"], "abstain_rate": acc["abstain_rate"],
        "requests": after["requests"] - before["requests"], "backend_calls": after["calls"] - before["calls"],
        "wall_s": wall, "n": acc["n"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed-pairs", type=int, default=64)
    ap.add_argument("--test-pairs", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--home", type=Path, default=None, help="state folder (default: a fresh temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="arr_scene_"))
    home = args.home or work / "home"
    t_all = time.perf_counter()
    seed_ds = load_dataset(make_pairs("t2i", args.seed_pairs, args.seed, work / "seed"))
    test_ds = load_dataset(make_pairs("t2i", args.test_pairs, args.seed + 1, work / "test"))
    seed_prompts = {r.prompt for r in seed_ds.records}
    shared_prompts = sum(r.prompt in seed_prompts for r in test_ds.records)
    seed_ids = {r.pair_id for r in seed_ds.records}
    assert not any(r.pair_id in seed_ids for r in test_ds.records), "held-out pairs overlap the seed pairs"
    t_data = time.perf_counter() - t_all

    store = Store(home)
    client = build_client(VLMConfig(), store)
    cfg = InduceConfig()
    t0 = time.perf_counter()
    rs = induce_rubrics(seed_ds, cfg, store, client_gen=client, client_ver=client)
    t_induce = time.perf_counter() - t0
    st = rs.metadata["statistics"]

    block = rs.prompt_block()
    results = {}
    # One store connection for all conditions: the client writes its cache often, and opening the
    # DuckDB file for each write would dominate the wall time.
    with store.connect():
        for name, with_rubrics, order in CONDITIONS:
            results[name] = judge_condition(client, test_ds.records, block if with_rubrics else None,
                                            rs.id if with_rubrics else None, order, args.seed)
    t_total = time.perf_counter() - t_all

    print("ARR on the scene world — SIMULATOR figures (offline scene VLM), not claims about real VLMs")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}")
    print(f"seed pairs: {len(seed_ds.records)} (seed {args.seed}); held-out pairs: {len(test_ds.records)} "
          f"(seed {args.seed + 1}; {shared_prompts} share a caption with a seed pair, none shares images)")
    print(f"induction: {rs.id}: {st['passed']} passed / {st['discarded']} discarded, epochs {st['epochs_histogram']}, "
          f"{st['criteria_pooled']} criteria pooled → {len(rs.criteria)} selected, {len(rs.themes)} themes"
          f"{' (flat fallback)' if st['categorize_fallback'] else ''}; {st['vlm_calls']} VLM calls, "
          f"{st['prompt_tokens'] + st['completion_tokens']} tokens, {t_induce:.1f} s")
    print()
    print("| condition | accuracy [95 % CI] | as given | reversed | given − reversed | position gap | ties | "
          "abstain | requests | backend calls | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['accuracy']:.3f} [{r['accuracy_lo']:.3f}, {r['accuracy_hi']:.3f}] | "
              f"{r['accuracy']:.3f} | {r['reversed_accuracy']:.3f} | {r['forward_minus_reversed']:+.3f} | "
              f"{r['position_gap']:+.3f} | {r['tie_rate']:.3f} | {r['abstain_rate']:.3f} | {r['requests']} | "
              f"{r['backend_calls']} | {r['wall_s']:.1f} |")
    print()
    print(f"total wall time {t_total:.1f} s (data {t_data:.1f} s, induction {t_induce:.1f} s); "
          f"client: {client.stats()['calls']} backend calls, {client.stats()['cache_hits']} cache hits")
    if args.out:
        args.out.write_text(json.dumps({"rubric_set_id": rs.id, "induction": st, "induce_wall_s": t_induce,
                                        "conditions": results, "total_wall_s": t_total,
                                        "seed_pairs": len(seed_ds.records), "test_pairs": len(test_ds.records),
                                        "shared_captions": shared_prompts, "rubrics": rs.to_text()},
                                       indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
