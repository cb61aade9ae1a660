"""Preference benchmarks for the judge: agreement with human labels, position bias, ablations.

The ARR paper (Auto-Rubric as Reward) reports the judge's pairwise accuracy against human
preferences with and without induced rubrics, the position bias of the plain judge, how accuracy
changes with the number of rubric items, and whether rubrics induced by one model help another
judge. Here, on any dataset the project loads:

- accuracy = share of pairs where the judge's unique winner is the human-preferred image; ties
  (including swap-mode disagreements) and abstentions count as not correct, and their rates are
  reported separately. For listwise records (N > 2) this is top-1 agreement.
- every order mode (single / swap / random) is run on the pairs as given (forward) and with the
  image order reversed (reversed); position bias = accuracy(forward) − accuracy(reversed), with a
  paired bootstrap interval over pairs. The order-balanced accuracy is the mean of the two.
- intervals: percentile bootstrap, 95 %, over pairs (``arr_core.stats.bootstrap_ci``).
- cardinality ablation: ``RubricSet.with_criteria_subset(k)`` for k in (1, 5, 10, 20); k larger
  than the set is reported as unavailable rather than silently repeated.
- transfer: every (rubric source, judge) combination; rubrics come from sets induced by different
  backends/models, "none" is the plain judge.

Records whose human label has no unique best image are skipped and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from arr_core.bench.report import JudgedPair, Report, Section, Table
from arr_core.bench.results import SCENE_NOTE, EvalResult, rate_ci, run_sync
from arr_core.bench.svg import Plot, Series
from arr_core.data.records import PreferenceRecord
from arr_core.digest import digest_obj
from arr_core.judge.judge import ORDER_MODES, JudgeItem, Judgment, judge_many
from arr_core.stats import bootstrap_ci

DIRECTIONS = ("forward", "reversed")
DEFAULT_KS = (1, 5, 10, 20)


@dataclass
class PairOutcome:
    """One record judged under one (judge, order mode, direction); ranks in the record's order."""

    pair_id: str
    human: int
    mode: str
    direction: str
    rank: list[float] | None
    winner: int | None  # in the record's own image order
    outcome: str
    reasons: list[str]
    first_wins: list[bool]  # per presented order with a valid rank: did the image shown first win?

    @property
    def correct(self) -> bool:
        return self.winner is not None and self.winner == self.human


def _human_best(rec: PreferenceRecord) -> int | None:
    """Index of the unique human-preferred image, or None when the label ties at the top."""
    if rec.label_rank is not None:
        best = min(rec.label_rank)
        return rec.label_rank.index(best) if rec.label_rank.count(best) == 1 else None
    if rec.label_score is not None:
        best = max(rec.label_score)
        return rec.label_score.index(best) if rec.label_score.count(best) == 1 else None
    return None


def usable_records(records: Sequence[PreferenceRecord]) -> tuple[list[PreferenceRecord], int]:
    """(records with a unique human-preferred image and a t2i/edit task, number skipped)."""
    keep = [r for r in records if r.task in ("t2i", "edit") and _human_best(r) is not None]
    return keep, len(records) - len(keep)


def _item(rec: PreferenceRecord, direction: str) -> JudgeItem:
    images = list(rec.images) if direction == "forward" else list(rec.images)[::-1]
    # Same key in both directions: ``random`` then draws the same permutation of positions, so the
    # reversed run shows every image in the mirrored position of the forward run.
    return JudgeItem(task=rec.task, prompt=rec.prompt, images=images, source=rec.source, key=rec.pair_id)


def _to_record_order(values: list[float] | None, direction: str) -> list[float] | None:
    if values is None:
        return None
    return list(values) if direction == "forward" else list(values)[::-1]


def _outcome(rec: PreferenceRecord, j: Judgment, mode: str, direction: str) -> PairOutcome:
    n = len(rec.images)
    w = j.winner
    if w is not None and direction == "reversed":
        w = n - 1 - w
    return PairOutcome(pair_id=rec.pair_id, human=int(_human_best(rec)), mode=mode, direction=direction,
                       rank=_to_record_order(j.final_rank, direction), winner=w, outcome=j.outcome,
                       reasons=[o.reason for o in j.orders],
                       first_wins=[o.presented_rank[0] == 1 for o in j.orders if o.presented_rank])


async def judge_outcomes(client: Any, records: Sequence[PreferenceRecord], *, rubric_block: str | None,
                         rubric_set_id: str | None, modes: Sequence[str] = ORDER_MODES,
                         directions: Sequence[str] = DIRECTIONS, seed: int = 0) -> list[PairOutcome]:
    """Judge every record under every (mode, direction); one ``judge_many`` batch per combination."""
    for m in modes:
        if m not in ORDER_MODES:
            raise ValueError(f"order mode must be one of {ORDER_MODES}, got {m!r}")
    for d in directions:
        if d not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {d!r}")
    out: list[PairOutcome] = []
    for mode in modes:
        for direction in directions:
            items = [_item(r, direction) for r in records]
            js = await judge_many(client, items, rubric_block=rubric_block, rubric_set_id=rubric_set_id,
                                  order=mode, seed=seed)
            out += [_outcome(r, j, mode, direction) for r, j in zip(records, js, strict=True)]
    return out


def summarize(outcomes: Sequence[PairOutcome], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Accuracy (with CI), tie and abstain rates per (mode, direction), the order-balanced accuracy
    and the position bias per mode (paired bootstrap over pairs)."""
    by: dict[tuple[str, str], list[PairOutcome]] = {}
    for o in outcomes:
        by.setdefault((o.mode, o.direction), []).append(o)
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for key, group in by.items():
        acc[key] = {"accuracy": rate_ci([o.correct for o in group], n_boot=n_boot, seed=seed),
                    "ties": sum(o.outcome == "tie" for o in group) / len(group),
                    "abstained": sum(o.outcome == "abstain" for o in group) / len(group), "n": len(group)}
    bias: dict[str, dict[str, Any]] = {}
    for mode in dict.fromkeys(o.mode for o in outcomes):
        fw = {o.pair_id: o.correct for o in by.get((mode, "forward"), [])}
        rv = {o.pair_id: o.correct for o in by.get((mode, "reversed"), [])}
        common = [p for p in fw if p in rv]
        if not common:
            continue
        diffs = [float(fw[p]) - float(rv[p]) for p in common]
        balanced = [(float(fw[p]) + float(rv[p])) / 2 for p in common]
        g, lo, hi = bootstrap_ci(diffs, n_boot=n_boot, seed=seed)
        wf = {o.pair_id: o.winner for o in by.get((mode, "forward"), [])}
        wr = {o.pair_id: o.winner for o in by.get((mode, "reversed"), [])}
        firsts = [float(f) for d in DIRECTIONS for o in by.get((mode, d), []) for f in o.first_wins]
        bias[mode] = {"gap": {"point": g, "lo": lo, "hi": hi},
                      "balanced": rate_ci(balanced, n_boot=n_boot, seed=seed), "n": len(common),
                      "first_rate": rate_ci(firsts, n_boot=n_boot, seed=seed),
                      "flip_rate": sum(wf[p] != wr[p] for p in common) / len(common)}
    return {"by_mode_direction": acc, "bias": bias}


def _judged_pairs(records: Sequence[PreferenceRecord], outcomes: Sequence[PairOutcome], rubric_text: str,
                  limit: int) -> list[JudgedPair]:
    by_pair: dict[str, list[PairOutcome]] = {}
    for o in outcomes:
        by_pair.setdefault(o.pair_id, []).append(o)
    pairs = []
    for rec in records[:limit]:
        js = [{"mode": f"{o.mode} / {o.direction}",
               "rank": [int(r) if float(r).is_integer() else r for r in o.rank] if o.rank else None,
               "reason": " | ".join(x for x in o.reasons if x), "outcome": o.outcome}
              for o in by_pair.get(rec.pair_id, [])]
        pairs.append(JudgedPair(prompt=rec.prompt, images=[im.uri for im in rec.images],
                                human_preferred=_human_best(rec), rubric_text=rubric_text, judgments=js,
                                source=rec.source.uri if rec.source else None, pair_id=rec.pair_id))
    return pairs


def _records_digest(records: Sequence[PreferenceRecord]) -> str:
    return digest_obj(sorted(r.pair_id for r in records), 16)


def run_preference(client: Any, records: Sequence[PreferenceRecord], rubric_set: Any | None, *,
                   modes: Sequence[str] = ORDER_MODES, n_boot: int = 2000, seed: int = 0,
                   judge_name: str = "", n_examples: int = 6, simulated: bool = False,
                   ) -> EvalResult:
    """Accuracy against human labels without and with the rubric set, per order mode and direction.

    client: a ``VLMClient``; rubric_set: a ``RubricSet`` (None: only the plain judge); simulated:
    add the scene-VLM disclaimer to the report.
    """
    recs, skipped = usable_records(records)
    if not recs:
        raise ValueError("no usable records: every record lacks a unique human-preferred image")
    conditions: list[tuple[str, str | None, str | None]] = [("no rubrics", None, None)]
    if rubric_set is not None:
        conditions.append((f"rubrics {rubric_set.id}", rubric_set.prompt_block(), rubric_set.id))

    async def go() -> dict[str, list[PairOutcome]]:
        res = {}
        for name, block, rid in conditions:
            res[name] = await judge_outcomes(client, recs, rubric_block=block, rubric_set_id=rid, modes=modes,
                                             seed=seed)
        return res

    outcomes = run_sync(go())
    summaries = {name: summarize(outs, n_boot=n_boot, seed=seed) for name, outs in outcomes.items()}

    acc_rows, bias_rows, summary = [], [], {"n_pairs": float(len(recs)), "n_skipped": float(skipped)}
    for name, s in summaries.items():
        tag = "rubric" if name != "no rubrics" else "plain"
        for mode in modes:
            for direction in DIRECTIONS:
                a = s["by_mode_direction"].get((mode, direction))
                if a is None:
                    continue
                acc_rows.append([name, mode, direction, a["accuracy"], a["ties"], a["abstained"], a["n"]])
                summary[f"acc/{tag}/{mode}/{direction}"] = a["accuracy"]["point"]
            b = s["bias"].get(mode)
            if b is not None:
                fw = s["by_mode_direction"][(mode, "forward")]["accuracy"]
                rv = s["by_mode_direction"][(mode, "reversed")]["accuracy"]
                bias_rows.append([name, mode, fw, rv, b["gap"], b["first_rate"], b["flip_rate"], b["balanced"],
                                  b["n"]])
                summary[f"bias/{tag}/{mode}"] = b["gap"]["point"]
                summary[f"bias/{tag}/{mode}/first_rate"] = b["first_rate"]["point"]
                summary[f"bias/{tag}/{mode}/flip_rate"] = b["flip_rate"]
                summary[f"acc/{tag}/{mode}/balanced"] = b["balanced"]["point"]
    t_acc = Table("Accuracy vs human labels", ["judge", "order mode", "direction", "accuracy (95% CI)",
                                               "tie rate", "abstain rate", "n"], acc_rows,
                  note="Ties and abstentions count as not correct. Intervals: percentile bootstrap over pairs.")
    t_bias = Table("Position bias (forward − reversed)", ["judge", "order mode", "forward", "reversed",
                                                          "gap (95% CI)", "first-shown wins (95% CI)",
                                                          "flip rate", "order-balanced accuracy", "n"],
                   bias_rows, note="Gap: accuracy(forward) − accuracy(reversed), paired bootstrap over pairs; it "
                   "only reveals a bias when the preferred image's position is unbalanced in the data. "
                   "First-shown wins: share of presented orders whose first image was ranked best (0.5 = no "
                   "position preference). Flip rate: share of pairs whose winner changes when the order is "
                   "reversed.")
    plots = [
        Plot("Accuracy by order mode (order-balanced)", "bar",
             [Series(name, list(s["bias"]), [b["balanced"]["point"] for b in s["bias"].values()],
                     [b["balanced"]["lo"] for b in s["bias"].values()],
                     [b["balanced"]["hi"] for b in s["bias"].values()]) for name, s in summaries.items()],
             x_label="order mode", y_label="accuracy", y_range=(0.0, 1.0), hlines=[(0.5, "chance")]),
        Plot("Position bias by order mode", "bar",
             [Series(name, list(s["bias"]), [b["gap"]["point"] for b in s["bias"].values()],
                     [b["gap"]["lo"] for b in s["bias"].values()], [b["gap"]["hi"] for b in s["bias"].values()])
              for name, s in summaries.items()],
             x_label="order mode", y_label="accuracy(forward) − accuracy(reversed)", y_range=(-1.0, 1.0)),
        Plot("Share of orders won by the image shown first", "bar",
             [Series(name, list(s["bias"]), [b["first_rate"]["point"] for b in s["bias"].values()],
                     [b["first_rate"]["lo"] for b in s["bias"].values()],
                     [b["first_rate"]["hi"] for b in s["bias"].values()]) for name, s in summaries.items()],
             x_label="order mode", y_label="first-shown wins", y_range=(0.0, 1.0), hlines=[(0.5, "no bias")]),
    ]
    rubric_text = rubric_set.to_text() if rubric_set is not None else ""
    example_outs = outcomes[conditions[-1][0]]
    sections = [Section("metrics", "Metrics", text=f"{len(recs)} pairs judged ({skipped} skipped: no unique "
                        "human-preferred image).", tables=[t_acc, t_bias]),
                Section("plots", "Plots", plots=plots),
                Section("pairs", "Judged pairs", text=f"First {min(n_examples, len(recs))} pairs, judged by "
                        f"'{conditions[-1][0]}'. Green frame: the image people preferred.",
                        pairs=_judged_pairs(recs, example_outs, rubric_text, n_examples))]
    config = {"records": _records_digest(recs), "modes": list(modes), "n_boot": n_boot, "seed": seed,
              "judge": judge_name, "rubric_set_id": rubric_set.id if rubric_set is not None else None}
    report = Report("Preference benchmark", sections, subtitle=f"judge {judge_name or '?'} · {len(recs)} pairs",
                    notes=[SCENE_NOTE] if simulated else [], meta=dict(config))
    return EvalResult("preference", config, summary, [t_acc, t_bias], report,
                      rubric_set_id=rubric_set.id if rubric_set is not None else None,
                      details={"outcomes": outcomes})


def run_cardinality(client: Any, records: Sequence[PreferenceRecord], rubric_set: Any, *,
                    ks: Sequence[int] = DEFAULT_KS, mode: str = "swap", n_boot: int = 2000, seed: int = 0,
                    judge_name: str = "", simulated: bool = False) -> EvalResult:
    """Accuracy with the first k criteria of ``rubric_set`` for each k (and with none, as k = 0).

    Forward direction only: with ``swap`` (the default) order is already balanced.
    """
    recs, skipped = usable_records(records)
    if not recs:
        raise ValueError("no usable records: every record lacks a unique human-preferred image")
    n_crit = len(rubric_set.criteria)
    if n_crit == 0:
        raise ValueError(f"rubric set {rubric_set.id} has no criteria to take subsets of")

    async def go() -> dict[int, list[PairOutcome]]:
        res = {0: await judge_outcomes(client, recs, rubric_block=None, rubric_set_id=None, modes=[mode],
                                       directions=["forward"], seed=seed)}
        for k in ks:
            if k > n_crit:
                continue
            sub = rubric_set.with_criteria_subset(k)
            res[k] = await judge_outcomes(client, recs, rubric_block=sub.prompt_block(), rubric_set_id=sub.id,
                                          modes=[mode], directions=["forward"], seed=seed)
        return res

    outcomes = run_sync(go())
    rows, summary = [], {"n_pairs": float(len(recs)), "n_criteria_available": float(n_crit)}
    xs, ys, los, his = [], [], [], []
    for k in [0, *ks]:
        if k not in outcomes:
            rows.append([k, None, None, None, f"unavailable: the set has {n_crit} criteria"])
            continue
        outs = outcomes[k]
        a = rate_ci([o.correct for o in outs], n_boot=n_boot, seed=seed)
        ties = sum(o.outcome == "tie" for o in outs) / len(outs)
        rows.append([k, a, ties, len(outs), "no rubrics" if k == 0 else ""])
        summary[f"acc/k{k}"] = a["point"]
        if k > 0:
            xs.append(k)
            ys.append(a["point"])
            los.append(a["lo"])
            his.append(a["hi"])
    t = Table("Rubric-count ablation", ["criteria (k)", "accuracy (95% CI)", "tie rate", "n", "note"], rows,
              note=f"First k of {n_crit} criteria of {rubric_set.id}; order mode {mode}.")
    base = outcomes[0]
    base_acc = sum(o.correct for o in base) / len(base)
    plot = Plot("Rubric-count ablation", "line", [Series("rubric judge", xs, ys, los, his)],
                x_label="number of criteria (k)", y_label="accuracy", y_range=(0.0, 1.0),
                hlines=[(base_acc, "no rubrics")])
    config = {"records": _records_digest(recs), "ks": list(ks), "mode": mode, "n_boot": n_boot, "seed": seed,
              "judge": judge_name, "rubric_set_id": rubric_set.id}
    report = Report("Rubric-count ablation", [Section("metrics", "Metrics", tables=[t]),
                                              Section("plots", "Plots", plots=[plot])],
                    subtitle=f"judge {judge_name or '?'} · {len(recs)} pairs ({skipped} skipped)",
                    notes=[SCENE_NOTE] if simulated else [], meta=dict(config))
    return EvalResult("cardinality", config, summary, [t], report, rubric_set_id=rubric_set.id,
                      details={"outcomes": outcomes})


def run_transfer(judges: dict[str, Any], rubric_sets: dict[str, Any], records: Sequence[PreferenceRecord], *,
                 mode: str = "swap", n_boot: int = 2000, seed: int = 0, simulated: bool = False) -> EvalResult:
    """Cross-model transfer: accuracy of every judge (name → client) with rubrics from every source
    (name → RubricSet, e.g. the model that induced it) and with none."""
    if not judges or not rubric_sets:
        raise ValueError("transfer needs at least one judge and one rubric set")
    recs, skipped = usable_records(records)
    if not recs:
        raise ValueError("no usable records: every record lacks a unique human-preferred image")
    sources: list[tuple[str, Any]] = [("none", None), *rubric_sets.items()]

    async def go() -> dict[tuple[str, str], list[PairOutcome]]:
        res = {}
        for jname, client in judges.items():
            for sname, rs in sources:
                res[(sname, jname)] = await judge_outcomes(
                    client, recs, rubric_block=rs.prompt_block() if rs is not None else None,
                    rubric_set_id=rs.id if rs is not None else None, modes=[mode], directions=["forward"],
                    seed=seed)
        return res

    outcomes = run_sync(go())
    rows, summary = [], {"n_pairs": float(len(recs))}
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for sname, rs in sources:
        row: list[Any] = [sname, rs.metadata.get("generator_model", "") if rs is not None else ""]
        for jname in judges:
            a = rate_ci([o.correct for o in outcomes[(sname, jname)]], n_boot=n_boot, seed=seed)
            cells[(sname, jname)] = a
            summary[f"acc/{sname}/{jname}"] = a["point"]
            row.append(a)
        rows.append(row)
    t = Table("Cross-model transfer", ["rubrics from", "induced by", *[f"judge: {j}" for j in judges]], rows,
              note=f"Accuracy vs human labels (95% CI), order mode {mode}, forward order.")
    plot = Plot("Transfer: accuracy by judge", "bar",
                [Series(sname, list(judges), [cells[(sname, j)]["point"] for j in judges],
                        [cells[(sname, j)]["lo"] for j in judges], [cells[(sname, j)]["hi"] for j in judges])
                 for sname, _ in sources], x_label="judge", y_label="accuracy", y_range=(0.0, 1.0))
    config = {"records": _records_digest(recs), "mode": mode, "n_boot": n_boot, "seed": seed,
              "judges": list(judges), "rubric_sets": {k: v.id for k, v in rubric_sets.items()}}
    report = Report("Cross-model rubric transfer", [Section("metrics", "Metrics", tables=[t]),
                                                    Section("plots", "Plots", plots=[plot])],
                    subtitle=f"{len(recs)} pairs ({skipped} skipped)", notes=[SCENE_NOTE] if simulated else [],
                    meta=dict(config))
    first = next(iter(rubric_sets.values()))
    return EvalResult("transfer", config, summary, [t], report, rubric_set_id=first.id,
                      details={"outcomes": outcomes})
