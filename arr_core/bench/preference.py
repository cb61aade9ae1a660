"""Preference benchmarks for the judge: agreement with human labels, position bias, ablations.

The ARR paper (Auto-Rubric as Reward) reports the judge's pairwise accuracy against human
preferences with and without induced rubrics, the position bias of the plain judge, how accuracy
changes with the number of rubric items, and whether rubrics induced by one model help another
judge. Here, on any dataset the project loads:

- accuracy = share of pairs where the judge's unique winner is the human-preferred image; ties
  (including swap-mode disagreements) and abstentions count as not correct, and their rates are
  reported separately. For listwise records (N > 2) this is top-1 agreement.
- every order mode (single / swap / random) is run on the pairs as given (forward) and with the
  image order reversed (reversed); order gap (as given − reversed) = accuracy(forward) −
  accuracy(reversed), with a paired bootstrap interval over pairs (the name ``arr judge`` prints; its
  position gap, preferred shown 1st − 2nd, is another quantity). The order-balanced accuracy is the
  mean of the two.
- intervals: percentile bootstrap, 95 %, over pairs (``arr_core.stats.bootstrap_ci``).
- cardinality ablation: ``RubricSet.with_criteria_subset(k)`` for k in (1, 5, 10, 20); k larger
  than the set is reported as unavailable rather than silently repeated.
- transfer: every (rubric source, judge) combination; rubrics come from sets induced by different
  backends/models, "none" is the plain judge.

Records whose human label has no unique best image are skipped and counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arr_core.bench.report import JudgedPair, Report, Section, Table
from arr_core.bench.results import SCENE_NOTE, EvalResult, rate_ci, run_sync
from arr_core.bench.svg import Plot, Series
from arr_core.data.records import PreferenceRecord
from arr_core.digest import digest_obj
from arr_core.failures import FailureCounter, endpoint_name, is_transport_error
from arr_core.judge.judge import ORDER_MODES, JudgeItem, Judgment, judge_many
from arr_core.rubrics.zeroshot import COST_KEYS, cost_delta, generate_zeroshot
from arr_core.stats import bootstrap_ci, paired_order_stats

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
    error: str | None = None  # a transport failure in any order (the endpoint, not the judge, failed)

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
                       first_wins=[o.presented_rank[0] == 1 for o in j.orders if o.presented_rank],
                       error=next((o.error for o in j.orders if is_transport_error(o.error)), None))


def _unjudged(rec: PreferenceRecord, mode: str, direction: str, why: str) -> PairOutcome:
    """A pair that could not be judged under a condition (e.g. its zero-shot rubrics failed): abstains."""
    return PairOutcome(pair_id=rec.pair_id, human=int(_human_best(rec)), mode=mode, direction=direction, rank=None,
                       winner=None, outcome="abstain", reasons=[why], first_wins=[])


async def _judge_per_pair(client: Any, records: Sequence[PreferenceRecord], blocks: Mapping[str, str | None],
                          mode: str, direction: str, seed: int) -> list[PairOutcome]:
    """Each record with its own rubric block (records sharing a block share one ``judge_many`` batch;
    the batches run concurrently under the client's cap); a record without a block abstains."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        b = blocks.get(r.pair_id)
        if b is not None:
            groups.setdefault(b, []).append(i)
    batches = await asyncio.gather(*(judge_many(client, [_item(records[i], direction) for i in idx], rubric_block=b,
                                                order=mode, seed=seed) for b, idx in groups.items()))
    got = {i: j for idx, js in zip(groups.values(), batches, strict=True) for i, j in zip(idx, js, strict=True)}
    return [_outcome(r, got[i], mode, direction) if i in got else
            _unjudged(r, mode, direction, "no rubrics for this pair (their generation failed)")
            for i, r in enumerate(records)]


async def judge_outcomes(client: Any, records: Sequence[PreferenceRecord], *, rubric_block: str | None,
                         rubric_set_id: str | None, modes: Sequence[str] = ORDER_MODES,
                         directions: Sequence[str] = DIRECTIONS, seed: int = 0,
                         per_pair_blocks: Mapping[str, str | None] | None = None) -> list[PairOutcome]:
    """Judge every record under every (mode, direction); one ``judge_many`` batch per combination.

    ``per_pair_blocks`` (pair id → rubric block, e.g. zero-shot rubrics): judge each record with its own
    block instead of ``rubric_block``; a record whose block is missing or None abstains."""
    for m in modes:
        if m not in ORDER_MODES:
            raise ValueError(f"order mode must be one of {ORDER_MODES}, got {m!r}")
    for d in directions:
        if d not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {d!r}")
    out: list[PairOutcome] = []
    for mode in modes:
        for direction in directions:
            if per_pair_blocks is not None:
                out += await _judge_per_pair(client, records, per_pair_blocks, mode, direction, seed)
                continue
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


def _judged_pairs(records: Sequence[PreferenceRecord], outcomes: Sequence[PairOutcome],
                  rubric_text: str | Mapping[str, str | None], limit: int) -> list[JudgedPair]:
    """The first ``limit`` records with their judgments; ``rubric_text``: one text for every pair, or
    pair id → that pair's own rubrics (zero-shot; None where their generation failed)."""
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
                                human_preferred=_human_best(rec), judgments=js,
                                rubric_text=rubric_text if isinstance(rubric_text, str) else
                                (rubric_text.get(rec.pair_id) or "(no rubrics: their generation failed; the pair "
                                 "abstains under this condition)"),
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
                                                          "order gap (as given − reversed, 95% CI)",
                                                          "first-shown wins (95% CI)",
                                                          "flip rate", "order-balanced accuracy", "n"],
                   bias_rows, note="Order gap: accuracy(forward, the images as given) − accuracy(reversed), paired "
                   "bootstrap over pairs; it "
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
        Plot("Order gap (as given − reversed) by order mode", "bar",
             [Series(name, list(s["bias"]), [b["gap"]["point"] for b in s["bias"].values()],
                     [b["gap"]["lo"] for b in s["bias"].values()], [b["gap"]["hi"] for b in s["bias"].values()])
              for name, s in summaries.items()],
             x_label="order mode", y_label="order gap: accuracy(as given) − accuracy(reversed)",
             y_range=(-1.0, 1.0)),
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


# ---------------------------------------------------------------------------------------------
# the paper's Table 1 protocol: judges × rubric conditions, order-balanced, per subset, with cost

PAPER_MODES = ("single",)
COST_COLUMNS = COST_KEYS
# Record meta fields that name a benchmark's subset, first present wins (editreward-bench: subset;
# mmrb2: prompt_source; imagerewarddb: classification; hpdv3: source). "task" splits t2i from edit.
SUBSET_KEYS = ("subset", "prompt_source", "category", "classification", "source")


@dataclass
class Condition:
    """One way of judging: no rubrics, one rubric set for every pair (few-shot: induced), or rubrics per
    pair (zero-shot: ``per_pair`` maps pair id → block, None where generation failed)."""

    name: str
    tag: str  # summary-key part: none | fewshot | zeroshot_k5
    block: str | None = None
    rubric_set_id: str | None = None
    per_pair: dict[str, str | None] | None = None
    rubrics_by: str = ""  # the model that wrote the rubrics
    k: int | None = None
    generation_cost: dict[str, int] = field(default_factory=dict)


def subset_key(records: Sequence[PreferenceRecord], key: str | None = None) -> str | None:
    """The meta field that names each record's subset: ``key`` if given, else the first of
    ``SUBSET_KEYS`` any record carries, else ``task`` when tasks are mixed, else None."""
    if key:
        return key
    for k in SUBSET_KEYS:
        if any(k in (r.meta or {}) for r in records):
            return k
    return "task" if len({r.task for r in records}) > 1 else None


def subset_of(rec: PreferenceRecord, key: str) -> str:
    v = rec.task if key == "task" else (rec.meta or {}).get(key)
    return "(none)" if v is None else str(v)


def _pair_correct(outs: Sequence[PairOutcome], mode: str) -> tuple[list[str], list[float], list[float]]:
    """(pair ids, forward correct, reversed correct) of ``mode``, for pairs judged in both directions."""
    fw = {o.pair_id: float(o.correct) for o in outs if o.mode == mode and o.direction == "forward"}
    rv = {o.pair_id: float(o.correct) for o in outs if o.mode == mode and o.direction == "reversed"}
    ids = [p for p in fw if p in rv]
    return ids, [fw[p] for p in ids], [rv[p] for p in ids]


def _ci(t: tuple[float, float, float]) -> dict[str, float]:
    return {"point": t[0], "lo": t[1], "hi": t[2]}


def _check_transport(errors: Sequence[str | None], client: Any, stage: str, max_failure_rate: float) -> None:
    """``EndpointError`` when more than ``max_failure_rate`` of the items failed in transport: an
    abstention because the endpoint was down is not a verdict."""
    counter = FailureCounter(stage, endpoint_name(client), max_failure_rate=max_failure_rate, early_abort=0)
    for e in errors:
        if is_transport_error(e):
            counter.fail(e)
        else:
            counter.ok()
    counter.check()


async def _zeroshot_conditions(gen_name: str, gen_client: Any, recs: Sequence[PreferenceRecord], ks: Sequence[int],
                               with_images: bool, max_failure_rate: float = 0.2) -> list[Condition]:
    out = []
    for k in ks:  # one batch per k, so each k's generation cost is its own
        zs = await generate_zeroshot(gen_client, recs, [k], with_images=with_images, generator_name=gen_name)
        _check_transport([z.error for z in {z.key: z for z in zs.by_pair.values()}.values()], gen_client,
                         f"zero-shot rubrics k={k}", max_failure_rate)
        out.append(Condition(f"zero-shot k={k}", f"zeroshot_k{k}", per_pair=zs.blocks(k), rubrics_by=gen_name, k=k,
                             generation_cost=dict(zs.cost, prompts=zs.n_requests)))
    return out


def run_paper(judges: Mapping[str, Any], records: Sequence[PreferenceRecord], *, rubric_set: Any | None = None,
              zeroshot_ks: Sequence[int] = (), zeroshot_generator: tuple[str, Any] | None = None,
              with_images: bool = False, modes: Sequence[str] = PAPER_MODES, subset: str | None = None,
              n_boot: int = 2000, seed: int = 0, simulated: bool = False, n_examples: int = 4,
              max_failure_rate: float = 0.2) -> EvalResult:
    """The ARR paper's preference protocol (its Table 1, and its zero-shot cardinality table) on any records.

    judges: name → ``VLMClient`` (several: cross-model transfer in one run — the rubric set's
    ``generator_model`` is shown next to every judge); rubric_set: the induced (few-shot) set or None;
    zeroshot_ks: k rubrics generated per prompt without labels, one condition per k
    (``arr_core.rubrics.zeroshot``), by ``zeroshot_generator`` (name, client) or else by each judge itself;
    modes: order modes, each run forward and reversed (the first is the headline; ``single`` is the
    paper's: one call per order); subset: the meta field of the per-subset breakdown (default
    :func:`subset_key`).

    Per judge and condition: forward, reversed and order-balanced accuracy (paired bootstrap 95 %),
    the gain over no rubrics (paired), tie and abstain rates; the position-bias table per mode; accuracy
    per subset; the cost from the client's counters (requests, calls, cache hits, tokens, request bytes;
    zero-shot generation on rows of its own). Records without a unique human-preferred image (tied
    labels) are left out and counted. More than ``max_failure_rate`` of a condition's pairs (or of a
    k's generations) failing in transport raises ``EndpointError`` naming the endpoint.
    """
    if not judges:
        raise ValueError("the paper protocol needs at least one judge")
    recs, skipped = usable_records(records)
    if not recs:
        raise ValueError("no usable records: every record lacks a unique human-preferred image")
    n_tied = sum(r.task in ("t2i", "edit") and _human_best(r) is None for r in records)
    skey = subset_key(recs, subset)
    ks = [int(k) for k in zeroshot_ks]
    if any(k < 1 for k in ks):
        raise ValueError(f"zero-shot k must be positive, got {ks}")
    fixed: list[Condition] = [Condition("no rubrics", "none")]
    if rubric_set is not None:
        fixed.append(Condition(f"few-shot {rubric_set.id}", "fewshot", block=rubric_set.prompt_block(),
                               rubric_set_id=rubric_set.id,
                               rubrics_by=str(rubric_set.metadata.get("generator_model") or "")))

    async def go() -> dict[str, list[tuple[Condition, list[PairOutcome], dict[str, int]]]]:
        shared = (await _zeroshot_conditions(*zeroshot_generator, recs, ks, with_images, max_failure_rate)
                  if ks and zeroshot_generator is not None else None)
        res: dict[str, list[tuple[Condition, list[PairOutcome], dict[str, int]]]] = {}
        for jname, client in judges.items():
            conds = list(fixed)
            if ks:
                conds += shared if shared is not None else await _zeroshot_conditions(jname, client, recs, ks,
                                                                                      with_images, max_failure_rate)
            res[jname] = []
            for c in conds:
                before = client.stats()
                outs = await judge_outcomes(client, recs, rubric_block=c.block, rubric_set_id=c.rubric_set_id,
                                            modes=modes, seed=seed, per_pair_blocks=c.per_pair)
                _check_transport([o.error for o in outs], client, f"judge {jname} ({c.name})", max_failure_rate)
                res[jname].append((c, outs, cost_delta(before, client.stats())))
        return res

    results = run_sync(go())
    head = modes[0]
    summary: dict[str, float] = {"n_pairs": float(len(recs)), "n_skipped": float(skipped),
                                 "n_tied_labels": float(n_tied)}
    acc_rows, bias_rows, sub_rows, cost_rows = [], [], [], []
    bars: dict[str, list[float]] = {}
    subsets = sorted({subset_of(r, skey) for r in recs}) if skey else []
    gen_seen: set[tuple[str, str]] = set()
    for jname, runs in results.items():
        base_ids, base_f, base_r = _pair_correct(runs[0][1], head)
        base_bal = dict(zip(base_ids, [(a + b) / 2 for a, b in zip(base_f, base_r, strict=True)], strict=True))
        for c, outs, cost in runs:
            pre = f"{jname}/{c.tag}"
            for mode in modes:
                ids, f, r = _pair_correct(outs, mode)
                st = paired_order_stats(f, r, n_boot=n_boot, seed=seed)
                flips = {o.pair_id: o.winner for o in outs if o.mode == mode and o.direction == "forward"}
                flipr = {o.pair_id: o.winner for o in outs if o.mode == mode and o.direction == "reversed"}
                flip = sum(flips[p] != flipr[p] for p in ids) / len(ids) if ids else float("nan")
                bias_rows.append([jname, c.name, mode, _ci(st["forward"]), _ci(st["reverse"]), _ci(st["gap"]),
                                  flip, len(ids)])
                for k in ("forward", "reverse", "gap", "balanced"):
                    summary[f"{'bias' if k == 'gap' else 'acc'}/{pre}/{mode}" + ("" if k == "gap" else f"/{k}")] = \
                        st[k][0]
                if mode != head:
                    continue
                bal = [(a + b) / 2 for a, b in zip(f, r, strict=True)]
                gain = (paired_order_stats([x for p, x in zip(ids, bal, strict=True) if p in base_bal],
                                           [base_bal[p] for p in ids if p in base_bal], n_boot=n_boot,
                                           seed=seed)["gap"] if c.tag != "none" else None)
                head_outs = [o for o in outs if o.mode == head]
                ties = sum(o.outcome == "tie" for o in head_outs) / len(head_outs)
                abst = sum(o.outcome == "abstain" for o in head_outs) / len(head_outs)
                acc_rows.append([jname, c.name, c.rubrics_by or "–", _ci(st["forward"]), _ci(st["reverse"]),
                                 _ci(st["balanced"]), _ci(gain) if gain else None, ties, abst, len(ids)])
                bars.setdefault(jname, []).append(st["balanced"][0])
                if gain:
                    summary[f"gain/{pre}/{head}"] = gain[0]
                by_id = dict(zip(ids, bal, strict=True))
                for sname in subsets:
                    vals = [by_id[x.pair_id] for x in recs if subset_of(x, skey) == sname and x.pair_id in by_id]
                    p, lo, hi = bootstrap_ci(vals, n_boot=n_boot, seed=seed)
                    sub_rows.append([sname, jname, c.name, {"point": p, "lo": lo, "hi": hi}, len(vals)])
                    summary[f"acc/{pre}/{head}/subset/{sname}"] = p
            n_calls = cost.get("calls", 0)
            cost_rows.append([jname, f"judge · {c.name}", *[cost.get(k, 0) for k in COST_COLUMNS],
                              round(n_calls / len(recs), 2)])
            for k in COST_COLUMNS:
                summary[f"cost/{pre}/{k}"] = float(cost.get(k, 0))
            if c.generation_cost and (c.rubrics_by, c.tag) not in gen_seen:
                gen_seen.add((c.rubrics_by, c.tag))
                g = c.generation_cost
                cost_rows.append([c.rubrics_by, f"generate · {c.name} ({g.get('prompts', 0)} prompts)",
                                  *[g.get(k, 0) for k in COST_COLUMNS], round(g.get("calls", 0) / len(recs), 2)])
                for k in COST_COLUMNS:
                    summary[f"cost/{c.rubrics_by}/{c.tag}/generate/{k}"] = float(g.get(k, 0))
    t_acc = Table("Accuracy vs human labels (paper protocol)",
                  ["judge", "rubrics", "rubrics by", "forward", "reversed", "order-balanced (95% CI)",
                   "gain over no rubrics", "tie rate", "abstain rate", "n"], acc_rows,
                  note=f"Order mode {head}; every pair judged as given (forward) and with the images reversed; "
                  "order-balanced = mean of the two per pair. Ties and abstentions count as not correct. "
                  "Intervals: percentile bootstrap over pairs (gain: paired with no rubrics).")
    t_bias = Table("Position bias", ["judge", "rubrics", "order mode", "forward accuracy", "reversed accuracy",
                                     "order gap (as given − reversed)", "flip rate", "n"], bias_rows,
                   note="Order gap: accuracy(forward, the images as given) − accuracy(reversed), with a paired "
                   "bootstrap interval; flip rate: share of pairs whose winner changes "
                   "when the order is reversed.")
    t_cost = Table("Cost", ["model", "step", *COST_COLUMNS, "calls per pair"], cost_rows,
                   note="From the VLM client's counters: requests (asked), calls (sent to the endpoint; cache "
                   "hits make none), tokens as the endpoint reported them, request bytes as sent.")
    tables = [t_acc, t_bias]
    if sub_rows:
        tables.append(Table(f"Accuracy per subset ({skey})", ["subset", "judge", "rubrics",
                                                              "order-balanced (95% CI)", "n"], sub_rows,
                            note=f"Order mode {head}; subset = the records' '{skey}' field."))
    tables.append(t_cost)
    names = [c.name for c, _, _ in next(iter(results.values()))]
    plot = Plot("Order-balanced accuracy by rubric condition", "bar",
                [Series(j, names, v) for j, v in bars.items()], x_label="rubrics", y_label="accuracy",
                y_range=(0.0, 1.0), hlines=[(0.5, "chance")])
    # The example pairs show the richest condition of the first judge: the largest zero-shot k (each pair
    # with its own generated rubrics), else the few-shot set, else no rubrics.
    first_runs = next(iter(results.values()))
    ex_cond, ex_outs, _ = max(first_runs, key=lambda run: (run[0].k or 0, run[0].tag != "none"))
    ex_text = (ex_cond.per_pair if ex_cond.per_pair is not None else
               rubric_set.to_text() if rubric_set is not None and ex_cond.tag == "fewshot" else "")
    sections = [Section("metrics", "Metrics", text=f"{len(recs)} pairs judged ({skipped} skipped, of which "
                        f"{n_tied} with a tied human label).", tables=tables),
                Section("plots", "Plots", plots=[plot]),
                Section("pairs", "Judged pairs", text=f"First {min(n_examples, len(recs))} pairs, judged by "
                        f"{next(iter(results))} with '{ex_cond.name}'.",
                        pairs=_judged_pairs(recs, ex_outs, ex_text, n_examples))]
    config = {"protocol": "paper", "records": _records_digest(recs), "judges": list(judges), "modes": list(modes), "n_boot": n_boot,
              "seed": seed, "rubric_set_id": rubric_set.id if rubric_set is not None else None,
              "zeroshot_ks": ks, "zeroshot_generator": zeroshot_generator[0] if zeroshot_generator else None,
              "with_images": with_images, "subset_key": skey}
    report = Report("Preference benchmark (paper protocol)", sections,
                    subtitle=f"judges {', '.join(judges)} · {len(recs)} pairs", notes=[SCENE_NOTE] if simulated
                    else [], meta=dict(config))
    return EvalResult("preference-paper", config, summary, tables, report,
                      rubric_set_id=rubric_set.id if rubric_set is not None else None,
                      details={"outcomes": {j: {c.name: outs for c, outs, _ in runs} for j, runs in results.items()}})

